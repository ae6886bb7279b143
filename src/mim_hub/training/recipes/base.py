"""MAE's pre-training recipe, the base (and the default) of every method's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..transforms import RandomResizedCropFlip

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def image_side(config) -> int:
    return config.image_size if isinstance(config.image_size, int) else config.image_size[0]


@dataclass(frozen=True)
class PretrainRecipe:
    """MAE's recipe (also the default): RandomResizedCrop(0.2-1, bicubic) + flip, uniform noise
    per sample, AdamW(0.9, 0.95), base lr 1.5e-4 x batch / 256, weight decay 0.05.

    Built for one model's `config` (after `configure_model`) and the run's input normalisation
    `mean` / `std`; immutable. `device` is where `model_inputs` computes (unused here)."""

    config: object
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    device: object = None

    method: ClassVar[str] = "mae"
    base_lr: ClassVar[float] = 1.5e-4
    weight_decay: ClassVar[float] = 0.05
    betas: ClassVar[tuple[float, float]] = (0.9, 0.95)
    min_crop_scale: ClassVar[float] = 0.2
    warmup_fraction: ClassVar[float] = 0.05
    optimizer: ClassVar[str] = "adamw"
    weight_decay_end: ClassVar[float | None] = None  # None: constant weight decay
    clip_grad: ClassVar[float | None] = None  # None: no clipping

    @classmethod
    def configure_model(cls, model, options, *, mean=None, std=None) -> None:
        """Apply the run's options `options` (its method options as attributes, may be None) and
        its input normalisation (`mean` / `std`, None: not known) to the model: an explicit step
        of building the run's model (`recipes.configure_model`), before the recipe is built. The
        model, not the recipe, keeps what they change. Nothing for MAE."""

    @classmethod
    def recipe_options(cls, options) -> dict:
        """Keyword arguments of the recipe itself taken from `options` (none for MAE)."""
        return {}

    @classmethod
    def for_model(cls, model, options=None, *, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=None) -> "PretrainRecipe":
        """A recipe for the model's config (configured already, see `configure_model`); changes
        nothing in the model."""
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        return cls(model.config, mean=mean, std=std, device=device, **cls.recipe_options(options))

    @property
    def image_size(self) -> int:
        return image_side(self.config)

    def train_transform(self, *, min_crop_scale: float | None = None, flip: bool = True):
        """image, rng -> the normalised crop (or named views) of one sample."""
        scale = self.min_crop_scale if min_crop_scale is None else min_crop_scale
        return RandomResizedCropFlip(self.image_size, self.mean, self.std, scale=(scale, 1.0), flip=flip)

    def sample_inputs(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Model inputs drawn for one sample besides its pixels (MAE: the masking noise)."""
        length = (self.image_size // self.config.patch_size) ** 2
        return {"noise": torch.from_numpy(rng.random(length, dtype=np.float32))}

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Samples -> a batch (in the data loader's workers)."""
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch on the training device -> the model's keyword arguments (MAE: the batch)."""
        return batch

    def training_state(self, model, *, total_epochs: float):
        """What the recipe keeps over a run besides the model, for the unwrapped `model` on its
        device (HPM: the EMA teacher that chooses its masks), or None (MAE: nothing). The trainer
        passes each batch's model inputs through `state.model_inputs(inputs, epoch=)`, calls
        `state.step_end(model, epoch=)` after every optimizer step, `state.save(folder)` into every
        checkpoint and `state.load(folder)` on resume, and writes `state.final_models()` (name ->
        model) beside the final model."""
        return None
