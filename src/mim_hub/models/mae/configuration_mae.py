"""MAE configuration (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..config_fields import (BLOCK_NUMERICS_RULES, MAE_DECODER_RULES, VIT_ENCODER_RULES, BlockNumericsFields, MAEDecoderFields,
                             ViTEncoderFields)
from ..validation import BOOL, MIMConfig, check_divisible, check_image_size


@strict
class MAEConfig(MIMBackboneConfigMixin, MIMConfig, ViTEncoderFields, MAEDecoderFields, BlockNumericsFields):
    r"""Configuration of MAE's ViT encoder, its lightweight decoder and the fine-tuning head.

    Defaults are the released ViT-B/16 with the original code's numerics (LayerNorm eps 1e-6,
    exact GELU), not `ViTMAEConfig`'s.

    The encoder, decoder and block-numerics fields are the shared groups of
    `models/config_fields.py`; the Args below list them all.

    Args:
        image_size, patch_size, num_channels: input geometry; `image_size` must be a multiple of
            `patch_size`.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the encoder.
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads,
            decoder_intermediate_size: the pre-training decoder.
        mask_ratio: fraction of patches removed in pre-training (`int(L * (1 - r))` are kept).
        norm_pix_loss: regress per-patch normalised pixels (mean/unbiased variance per patch).
        use_mean_pooling: the fine-tuning head of `models_vit.py` with `global_pool=True`
            (mean of patch tokens + `fc_norm`, no final norm); False pools the normed cls token.
        layer_norm_eps, hidden_act, qkv_bias: block numerics.
        drop_path_rate, hidden_dropout_prob, attention_probs_dropout_prob: regularisation
            (fine-tuning uses drop_path_rate 0.1 for ViT-B).
        initializer_range: std of the truncated-normal init of the classifier head (MAE: 2e-5 in
            fine-tuning; 0.02 elsewhere).
    """

    model_type = "mae"

    use_mean_pooling: bool = False

    FIELD_RULES = {**VIT_ENCODER_RULES, **MAE_DECODER_RULES, **BLOCK_NUMERICS_RULES, "use_mean_pooling": BOOL}

    def __post_init__(self, **kwargs):
        check_image_size(self)
        check_divisible(self, "hidden_size", "num_attention_heads")
        check_divisible(self, "decoder_hidden_size", "decoder_num_attention_heads")
        if self.hidden_size % 4:
            raise ValueError(f"MAEConfig: hidden_size {self.hidden_size} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.decoder_hidden_size % 4:
            raise ValueError(f"MAEConfig: decoder_hidden_size {self.decoder_hidden_size} must be divisible by 4")
        super().__post_init__(**kwargs)


__all__ = ["MAEConfig"]
