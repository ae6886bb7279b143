"""MAE configuration (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..validation import (ACTIVATION, BOOL, COUNT, EPS, NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE, MIMConfig, check_divisible,
                          check_image_size)


@strict
class MAEConfig(MIMBackboneConfigMixin, MIMConfig):
    r"""Configuration of MAE's ViT encoder, its lightweight decoder and the fine-tuning head.

    Defaults are the released ViT-B/16 with the original code's numerics (LayerNorm eps 1e-6,
    exact GELU), not `ViTMAEConfig`'s.

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

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    use_mean_pooling: bool = False
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02

    FIELD_RULES = {
        "image_size": SIZE, "patch_size": POSITIVE, "num_channels": POSITIVE, "hidden_size": POSITIVE,
        "num_hidden_layers": COUNT, "num_attention_heads": POSITIVE, "intermediate_size": POSITIVE,
        "decoder_hidden_size": POSITIVE, "decoder_num_hidden_layers": COUNT, "decoder_num_attention_heads": POSITIVE,
        "decoder_intermediate_size": POSITIVE, "mask_ratio": PROBABILITY, "norm_pix_loss": BOOL, "use_mean_pooling": BOOL,
        "layer_norm_eps": EPS, "hidden_act": ACTIVATION, "qkv_bias": BOOL, "drop_path_rate": PROBABILITY,
        "hidden_dropout_prob": PROBABILITY, "attention_probs_dropout_prob": PROBABILITY, "initializer_range": NON_NEGATIVE,
    }

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
