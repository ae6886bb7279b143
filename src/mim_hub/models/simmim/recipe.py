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
from ...training.recipes import PretrainRecipe
from ...training.transforms import RandomResizedCropFlip


@dataclass
class SimMIMRecipe(PretrainRecipe):
    method: str = "simmim"
    base_lr: float = 5e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    min_crop_scale: float = 0.67
    warmup_fraction: float = 10 / 800
    _generators: dict = field(default_factory=dict, repr=False)

    def mask_generator(self, config) -> SimMIMMaskGenerator:
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        key = (size, config.mask_patch_size, config.patch_size, config.mask_ratio)
        if key not in self._generators:
            self._generators[key] = SimMIMMaskGenerator(*key)
        return self._generators[key]

    def train_transform(self, config, mean, std, *, min_crop_scale: float | None = None, flip: bool = True):
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropFlip(size, mean, std, scale=(scale, 1.0), flip=flip, resample=Image.BILINEAR)

    def sample_inputs(self, config, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        mask = self.mask_generator(config).gen(rng)
        return {"bool_masked_pos": torch.from_numpy(mask.reshape(-1).astype(bool))}


RECIPE = SimMIMRecipe()
