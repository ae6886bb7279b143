"""Layers shared by every method: the math that MAE, SimMIM, CAE, MR-MAE, ColorMAE and CRATE-MAE
have in common lives here once."""

from .attention import Attention, eager_attention
from .block import MLP, DropPath, LayerScale, ViTBlock, ViTEncoder, build_vit_blocks
from .masking import gather_tokens, random_masking
from .patch_embed import PatchEmbedding, patchify, unpatchify
from .pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

__all__ = [
    "Attention",
    "eager_attention",
    "MLP",
    "DropPath",
    "build_vit_blocks",
    "LayerScale",
    "ViTBlock",
    "ViTEncoder",
    "random_masking",
    "gather_tokens",
    "PatchEmbedding",
    "patchify",
    "unpatchify",
    "get_2d_sincos_pos_embed",
    "interpolate_pos_embed",
]
