"""Field groups that several configs share, each with the rules of its fields.

A config lists its own fields and takes the groups it shares as bases (put after `MIMConfig`):

    @strict
    class MAEConfig(MIMBackboneConfigMixin, MIMConfig, ViTEncoderFields, MAEDecoderFields, BlockNumericsFields):
        use_mean_pooling: bool = False
        FIELD_RULES = {**VIT_ENCODER_RULES, **MAE_DECODER_RULES, **BLOCK_NUMERICS_RULES, "use_mean_pooling": BOOL}

A config that needs another default or type for a shared field declares that field again (MR-MAE's
11 layers; SimMIM's `None`: its backbone's released value). The groups are plain dataclasses: what
`@strict` and `FIELD_RULES` check, and what config.json holds, is the same as if each config
listed the fields itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .validation import ACTIVATION, BOOL, COUNT, EPS, NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE


@dataclass
class ViTEncoderFields:
    """A ViT encoder's input geometry and size: ViT-B/16 at 224 px."""

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    qkv_bias: bool = True


VIT_ENCODER_RULES = {
    "image_size": SIZE, "patch_size": POSITIVE, "num_channels": POSITIVE, "hidden_size": POSITIVE, "num_hidden_layers": COUNT,
    "num_attention_heads": POSITIVE, "intermediate_size": POSITIVE, "qkv_bias": BOOL,
}


@dataclass
class MAEDecoderFields:
    """MAE's lightweight pre-training decoder (512 wide, 8 layers) and its pixel objective."""

    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False


MAE_DECODER_RULES = {
    "decoder_hidden_size": POSITIVE, "decoder_num_hidden_layers": COUNT, "decoder_num_attention_heads": POSITIVE,
    "decoder_intermediate_size": POSITIVE, "mask_ratio": PROBABILITY, "norm_pix_loss": BOOL,
}


@dataclass
class BlockNumericsFields:
    """The transformer blocks' numerics and regularisation, as the original codes set them
    (LayerNorm eps 1e-6, exact GELU, no dropout, no drop path)."""

    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.0
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02


BLOCK_NUMERICS_RULES = {
    "layer_norm_eps": EPS, "hidden_act": ACTIVATION, "drop_path_rate": PROBABILITY, "hidden_dropout_prob": PROBABILITY,
    "attention_probs_dropout_prob": PROBABILITY, "initializer_range": NON_NEGATIVE,
}

__all__ = ["BLOCK_NUMERICS_RULES", "BlockNumericsFields", "MAEDecoderFields", "MAE_DECODER_RULES", "VIT_ENCODER_RULES",
           "ViTEncoderFields"]
