"""SimMIM's pre-training recipe (microsoft/SimMIM `data/data_simmim.py`, `main_simmim.py`).

Augmentation: RandomResizedCrop(scale 0.67-1, ratio 3/4-4/3, bilinear) + horizontal flip. Each
sample carries its mask, drawn by `SimMIMMaskGenerator` (blocks of `mask_patch_size` pixels,
`ceil(blocks * mask_ratio)` masked) from the sample's own generator, so a sample's mask depends
only on (seed, epoch, index) and runs resume exactly. AdamW(0.9, 0.999), weight decay 0.05, base
lr 1e-4 per 512 images (the original's scaling) = 5e-5 per 256, 10 warm-up epochs of 800.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ...layers.mask_simmim import SimMIMMaskGenerator
from ..transforms import RandomResizedCropFlip
from .base import PretrainRecipe


@dataclass(frozen=True)
class SimMIMRecipe(PretrainRecipe):
    method = "simmim"
    base_lr = 5e-5
    weight_decay = 0.05
    betas = (0.9, 0.999)
    min_crop_scale = 0.67
    warmup_fraction = 10 / 800
    mask_generator: SimMIMMaskGenerator = field(init=False, repr=False)

    def __post_init__(self):
        c = self.config
        object.__setattr__(self, "mask_generator", SimMIMMaskGenerator(self.image_size, c.mask_patch_size, c.patch_size, c.mask_ratio))

    def train_transform(self, *, min_crop_scale: float | None = None, flip: bool = True):
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropFlip(self.image_size, self.mean, self.std, scale=(scale, 1.0), flip=flip, resample=Image.BILINEAR)

    def sample_inputs(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        mask = self.mask_generator.gen(rng)
        return {"bool_masked_pos": torch.from_numpy(mask.reshape(-1).astype(bool))}


RECIPE = SimMIMRecipe
