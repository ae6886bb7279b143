"""SparK's pre-training recipe (keyu-tian/SparK `pretrain/`): RandomResizedCrop(0.67-1, bicubic) +
flip (`utils/imagenet.py`), a uniform `noise` draw per sample over the 1/32 mask grid (the
original's `torch.rand` in `SparK.mask`: the lowest `round(L * (1 - mask_ratio))` cells stay
visible), base lr 2e-4 x batch / 256, weight decay 0.04, betas (0.9, 0.95) for ResNets and
(0.9, 0.999) for ConvNeXts, 40 warm-up epochs of 1600, LAMB (`opt`, `utils/lamb.py`: the global
gradient norm clipped at 5 inside it) with the weight decay annealed along a cosine from 0.04 to
0.2 (`wd`, `wde`; `utils/lr_control.py`) (`utils/arg_util.py`, `main.py`).

What differs from the original: the lr schedule is the trainer's (warm-up from lr/warm-up to the
peak, a cosine to `--min-lr-ratio`) where SparK's warms up from 0.005 of the peak and ends at
0.001 of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import PretrainRecipe


@dataclass(frozen=True)
class SparKRecipe(PretrainRecipe):
    method = "spark"
    base_lr = 2e-4
    weight_decay = 0.04
    min_crop_scale = 0.67
    warmup_fraction = 40 / 1600
    optimizer = "lamb"
    weight_decay_end = 0.2
    clip_grad = 5.0

    @property
    def betas(self) -> tuple[float, float]:  # utils/arg_util.py: `ada` 0.95 for ResNets, 0.999 for ConvNeXts
        return (0.9, 0.95) if self.config.backbone == "resnet" else (0.9, 0.999)

    def sample_inputs(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The uniform noise over the sample's 1/32 mask grid."""
        cells = (self.image_size // self.config.encoder_stride) ** 2
        return {"noise": torch.from_numpy(rng.random(cells, dtype=np.float32))}


RECIPE = SparKRecipe
