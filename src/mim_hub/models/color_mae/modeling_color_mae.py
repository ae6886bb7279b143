"""ColorMAE: MAE's encoder, decoder and loss (shared, not copied), with masks drawn from
coloured-noise windows instead of uniform noise."""

from __future__ import annotations

import torch

from ...layers.mask_color_noise import ColorNoiseMaskGenerator, cached_noise_patterns, load_noise_patterns
from ..mae.modeling_mae import MAEForImageClassification, MAEForPreTraining, MAEModel
from .configuration_color_mae import ColorMAEConfig


def mask_generator_for(config: ColorMAEConfig) -> ColorNoiseMaskGenerator:
    """The config's colour-noise mask generator (the authors' file, or generated patterns)."""
    if config.noise_pattern_path:
        patterns = load_noise_patterns(config.noise_pattern_path)
    else:
        patterns = cached_noise_patterns(config.noise_color, config.noise_pattern_count, config.noise_pattern_size, config.noise_pattern_seed)
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return ColorNoiseMaskGenerator(patterns, size // config.patch_size, config.mask_ratio)


class ColorMAEModel(MAEModel):
    """ColorMAE's ViT encoder (MAE's). Without `noise` it encodes every patch in order."""

    config_class = ColorMAEConfig


class ColorMAEForPreTraining(MAEForPreTraining):
    """MAE pre-training with colour-noise masks. `noise` [B, L] (lowest kept; the original's
    windows negated) may be given; otherwise it is drawn from the configured pattern stack with
    `generator` (a `torch.Generator`, default the global RNG, as the original)."""

    config_class = ColorMAEConfig

    def __init__(self, config: ColorMAEConfig):
        super().__init__(config)
        self._mask_generator = None

    @property
    def mask_generator(self) -> ColorNoiseMaskGenerator:
        if self._mask_generator is None:
            self._mask_generator = mask_generator_for(self.config)
        return self._mask_generator

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None, **kwargs):
        if noise is None:
            noise = self.mask_generator(pixel_values.shape[0], generator=generator).to(pixel_values.device)
        return super().forward(pixel_values, noise=noise, **kwargs)


class ColorMAEForImageClassification(MAEForImageClassification):
    """A fine-tuned ColorMAE encoder (mean pooling + `fc_norm`, as mmpretrain's `avg_featmap`)."""

    config_class = ColorMAEConfig


__all__ = ["ColorMAEModel", "ColorMAEForPreTraining", "ColorMAEForImageClassification", "mask_generator_for"]
