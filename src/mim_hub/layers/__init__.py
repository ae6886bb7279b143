"""Layers shared by every method: the math that MAE, SimMIM, CAE, MR-MAE, ColorMAE and CRATE-MAE
have in common lives here once."""

from . import attention_cpu  # registers the "mim_cpu_flash" attention implementation
from .attention import Attention, InterfaceAttention, eager_attention, eager_attention_forward
from .block import MLP, DropPath, LayerScale, ViTBlock, ViTEncoder, build_vit_blocks
from .masking import gather_tokens, random_masking
from .patch_embed import PatchEmbedding, patchify, unpatchify
from .pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed

__all__ = [
    "Attention",
    "eager_attention",
    "eager_attention_forward",
    "InterfaceAttention",
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
