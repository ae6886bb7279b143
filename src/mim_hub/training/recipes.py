"""Per-method pre-training recipes.

A recipe tells the trainer what only the method knows: its augmentation, what each sample
carries besides the image (MAE's `noise`, SimMIM's and CAE's `bool_masked_pos`, CAE's token
`labels`, ...), its optimiser defaults, and any command-line options of its own.

Adding a method: write `mim_hub/models/<method>/recipe.py` defining `RECIPE`, an instance of
`PretrainRecipe` (or a subclass overriding `sample_inputs`, `collate`, `add_arguments`,
`configure_model`). `get_recipe(method)` imports it; methods without one use MAE's recipe, which
fits every model whose pre-training forward takes `pixel_values` and `noise`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import torch

from .transforms import RandomResizedCropFlip


@dataclass
class PretrainRecipe:
    """MAE's recipe (also the default): RandomResizedCrop(0.2-1, bicubic) + flip, uniform noise
    per sample, AdamW(0.9, 0.95), base lr 1.5e-4 x batch / 256, weight decay 0.05."""

    method: str = "mae"
    base_lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    min_crop_scale: float = 0.2
    warmup_fraction: float = 0.05

    def add_arguments(self, parser) -> None:
        """Options of this method's own (none for MAE)."""

    def configure_model(self, model, args) -> None:
        """Adjust a freshly built or loaded model from the method's options (none for MAE)."""

    def train_transform(self, config, mean, std, *, min_crop_scale: float | None = None, flip: bool = True):
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropFlip(size, mean, std, scale=(scale, 1.0), flip=flip)

    def sample_inputs(self, config, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Model inputs drawn for one sample besides its pixels (MAE: the masking noise)."""
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        length = (size // config.patch_size) ** 2
        return {"noise": torch.from_numpy(rng.random(length, dtype=np.float32))}

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def get_recipe(method: str) -> PretrainRecipe:
    try:
        module = importlib.import_module(f"mim_hub.models.{method}.recipe")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith(f"mim_hub.models.{method}"):
            raise
        return PretrainRecipe(method=method)
    return module.RECIPE
