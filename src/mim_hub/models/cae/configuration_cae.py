"""CAE configuration (Chen et al., "Context Autoencoder for Self-Supervised Representation
Learning", IJCV 2023; Atten4Vis/CAE)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..config_fields import BLOCK_NUMERICS_RULES, VIT_ENCODER_RULES, BlockNumericsFields, ViTEncoderFields
from ..validation import BOOL, COUNT, NON_NEGATIVE, POSITIVE, Float, Int, MIMConfig, check_image_size


@strict
class CAEConfig(MIMBackboneConfigMixin, MIMConfig, ViTEncoderFields, BlockNumericsFields):
    r"""Configuration of CAE's encoder, latent contextual regressor, decoder and fine-tuning head.

    Defaults are the released CAE-base (ViT-B/16, 224) with the original numerics: BEiT-style
    attention (learned q/v biases, zero k bias), layer scale 0.1, LayerNorm eps 1e-6, exact GELU,
    fixed 2-D sin-cos positions with a zero cls row.

    The encoder and block-numerics fields are the shared groups of `models/config_fields.py`.

    Args:
        image_size, patch_size, num_channels: input geometry (`image_size` a multiple of
            `patch_size`).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the encoder.
            CAE's attention width is `num_attention_heads * (hidden_size // num_attention_heads)`,
            which may be narrower than `hidden_size` (as in the original).
        qkv_bias: learned q and v biases (k has none), as BEiT.
        layer_scale_init_value: initial LayerScale of the encoder blocks (0 = no LayerScale).
        decoder_hidden_size: width of the regressor and decoder; when it differs from
            `hidden_size` a Linear + LayerNorm projects the encoder output (and the alignment
            targets) to it.
        regressor_num_hidden_layers, regressor_num_attention_heads: the latent contextual
            regressor (cross-attention blocks whose queries are the mask tokens).
        decoder_num_hidden_layers, decoder_num_attention_heads: the decoder over masked tokens.
        decoder_intermediate_size: MLP width of regressor and decoder blocks.
        decoder_layer_scale_init_value: initial LayerScale of regressor and decoder blocks.
        vocab_size: number of target token ids (8192 for the DALL-E dVAE).
        align_loss_weight: weight of the alignment MSE (`loss = loss_main + w * mse`).
        num_masking_patches, min_mask_patches_per_block, max_mask_patches_per_block,
            mask_min_aspect: the block-wise mask generator used when `bool_masked_pos` is not
            given (CAE: 98 of 14x14, blocks of at least 16, aspect 0.3 to 1/0.3).
        use_mean_pooling: the fine-tuning head of CAE's scripts (mean of patch tokens + `fc_norm`,
            no final norm); False (the default, as the pre-trained encoder) keeps the final norm
            and pools the normed cls token. `mim-hub finetune` turns it on.
        use_relative_position_bias: a BEiT relative position bias in every encoder block of the
            classifier (CAE's fine-tuning scripts turn it on; the tables start at zero).
            Pre-training never uses one. use_shared_relative_position_bias: one table shared by
            all blocks.
        use_absolute_position_embeddings: add the fixed sin-cos table (CAE's `--sin_pos_emb`).
        layer_norm_eps, hidden_act: numerics.
        drop_path_rate, hidden_dropout_prob, attention_probs_dropout_prob: regularisation.
        initializer_range: std of the truncated-normal init of tokens and the patch projection.
    """

    model_type = "cae"

    layer_scale_init_value: float = 0.1
    decoder_hidden_size: int = 768
    regressor_num_hidden_layers: int = 4
    regressor_num_attention_heads: int = 12
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 12
    decoder_intermediate_size: int = 3072
    decoder_layer_scale_init_value: float = 0.1
    vocab_size: int = 8192
    align_loss_weight: float = 2.0
    num_masking_patches: int = 98
    min_mask_patches_per_block: int = 16
    max_mask_patches_per_block: int | None = None
    mask_min_aspect: float = 0.3
    use_mean_pooling: bool = False
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = False
    use_absolute_position_embeddings: bool = True

    FIELD_RULES = {
        **VIT_ENCODER_RULES, **BLOCK_NUMERICS_RULES,
        "layer_scale_init_value": NON_NEGATIVE, "decoder_hidden_size": POSITIVE, "regressor_num_hidden_layers": COUNT,
        "regressor_num_attention_heads": POSITIVE, "decoder_num_hidden_layers": COUNT, "decoder_num_attention_heads": POSITIVE,
        "decoder_intermediate_size": POSITIVE, "decoder_layer_scale_init_value": NON_NEGATIVE, "vocab_size": POSITIVE,
        "align_loss_weight": NON_NEGATIVE, "num_masking_patches": POSITIVE, "min_mask_patches_per_block": POSITIVE,
        "max_mask_patches_per_block": Int(1, optional=True), "mask_min_aspect": Float(0, low_open=True),
        "use_mean_pooling": BOOL, "use_relative_position_bias": BOOL, "use_shared_relative_position_bias": BOOL,
        "use_absolute_position_embeddings": BOOL,
    }

    @property
    def grid_size(self) -> tuple[int, int]:
        image = self.image_size if isinstance(self.image_size, (list, tuple)) else (self.image_size, self.image_size)
        return image[0] // self.patch_size, image[1] // self.patch_size

    def __post_init__(self, **kwargs):
        name = type(self).__name__
        check_image_size(self)
        for width, heads in (("hidden_size", "num_attention_heads"), ("decoder_hidden_size", "regressor_num_attention_heads"),
                             ("decoder_hidden_size", "decoder_num_attention_heads")):
            if getattr(self, heads) > getattr(self, width):
                raise ValueError(f"{name}: {heads} ({getattr(self, heads)}) exceeds {width} ({getattr(self, width)}): heads would be empty")
        for width in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, width) % 4:
                raise ValueError(f"{name}: {width} {getattr(self, width)} must be divisible by 4 (2-D sin-cos position embedding)")
        grid = self.grid_size
        patches = grid[0] * grid[1]
        if self.num_masking_patches >= patches:
            raise ValueError(f"{name}: num_masking_patches ({self.num_masking_patches}) must be smaller than the "
                             f"{patches} patches of a {grid[0]}x{grid[1]} grid (at least one patch must stay visible)")
        super().__post_init__(**kwargs)


__all__ = ["CAEConfig"]
