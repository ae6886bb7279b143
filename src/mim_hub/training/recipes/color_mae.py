"""ColorMAE's pre-training recipe: MAE's, with masks from coloured-noise windows.

Each batch's windows are drawn exactly as the original does for a batch (one crop and flip pair
per pass over the pattern stack, sample b from pattern b mod P), from a generator seeded by the
batch's first sample, so runs stay reproducible and resumable. `--noise-color` picks the colour,
`--noise-patterns` the authors' `.npz` file; both are written into the model's config, from
which the recipe builds its own generator (the model builds the same one when it is called
without `noise`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...layers.mask_color_noise import ColorNoiseMaskGenerator
from ...models.color_mae.modeling_color_mae import mask_generator_for
from .base import PretrainRecipe


@dataclass(frozen=True)
class ColorMAERecipe(PretrainRecipe):
    method = "color_mae"
    mask_generator: ColorNoiseMaskGenerator = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "mask_generator", mask_generator_for(self.config))

    @classmethod
    def configure_model(cls, model, options, *, mean=None, std=None) -> None:
        if getattr(options, "noise_color", None):
            model.config.noise_color = options.noise_color
        if getattr(options, "noise_patterns", None):
            model.config.noise_pattern_path = options.noise_patterns

    def sample_inputs(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"mask_seed": torch.tensor(int(rng.integers(0, 2**62)))}

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": torch.stack([s["pixel_values"] for s in samples])}
        generator = torch.Generator().manual_seed(int(samples[0]["mask_seed"]))
        batch["noise"] = self.mask_generator(len(samples), generator=generator)
        return batch


RECIPE = ColorMAERecipe
