"""Mask sources. Every MAE-family source produces `noise` [B, L] (lowest values kept), consumed
by the models' one `random_masking`; SimMIM and CAE generators produce boolean grids."""

from .layers.masking import gather_tokens, random_masking

__all__ = ["random_masking", "gather_tokens"]
