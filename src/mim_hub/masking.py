"""Mask sources. Every MAE-family source produces `noise` [B, L] (lowest values kept), consumed
by the models' one `random_masking`; SimMIM and CAE generators produce boolean grids."""

from .layers.mask_simmim import SimMIMMaskGenerator
from .layers.mask_color_noise import ColorNoiseMaskGenerator, generate_noise_patterns, load_noise_patterns
from .layers.mask_block import BlockMaskGenerator, RandomMaskGenerator
from .layers.mask_hard_patches import HardPatchMaskGenerator, hard_patch_count
from .layers.masking import gather_tokens, random_masking

__all__ = ["SimMIMMaskGenerator", "BlockMaskGenerator", "RandomMaskGenerator", "random_masking", "gather_tokens", "ColorNoiseMaskGenerator", "generate_noise_patterns", "load_noise_patterns",
           "HardPatchMaskGenerator", "hard_patch_count"]
