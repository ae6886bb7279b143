"""ColorMAE: MAE's encoder, decoder and loss (shared, not copied), with masks drawn from
coloured-noise windows instead of uniform noise."""

from __future__ import annotations

import warnings

import torch

from ...layers.mask_color_noise import ColorNoiseMaskGenerator, cached_noise_patterns, load_noise_patterns
from ..mae.modeling_mae import MAEForImageClassification, MAEForPreTraining, MAEModel
from .configuration_color_mae import ColorMAEConfig
from ...layers.patch_embed import to_2tuple


def mask_generator_for(config: ColorMAEConfig, grid: tuple[int, int] | None = None) -> ColorNoiseMaskGenerator:
    """The config's colour-noise mask generator (the authors' file, or generated patterns), for
    the config's patch grid or for `grid` (h, w) (an input of another size).

    A grid larger than the config's patterns (pre-training at a larger input size with
    `interpolate_pos_encoding=True`) gets patterns of the colour made at the size it needs:
    filtered noise with the config's count and seed (the filters work in pattern pixels, so the
    blobs keep their size in patches), cached on disk as the config's own stack is. The authors'
    files have one size; a larger grid then uses generated patterns of the config's colour, with
    a warning."""
    size = to_2tuple(config.image_size)[0]
    wanted = (size // config.patch_size,) * 2 if grid is None else (int(grid[0]), int(grid[1]))
    patterns = load_noise_patterns(config.noise_pattern_path) if config.noise_pattern_path else None
    if patterns is not None and (patterns.shape[-2] < wanted[0] or patterns.shape[-1] < wanted[1]):
        warnings.warn(f"{config.noise_pattern_path}: its {patterns.shape[-2]}x{patterns.shape[-1]} noise patterns are smaller than the "
                      f"{wanted[0]}x{wanted[1]} patch grid; masks of this grid come from generated {config.noise_color} noise "
                      "(generate_noise_patterns)", stacklevel=2)
        patterns = None
    if patterns is None:
        side = max(config.noise_pattern_size, *wanted)
        patterns = cached_noise_patterns(config.noise_color, config.noise_pattern_count, side, config.noise_pattern_seed)
    return ColorNoiseMaskGenerator(patterns, wanted[0] if wanted[0] == wanted[1] else wanted, config.mask_ratio)


class ColorMAEModel(MAEModel):
    """ColorMAE's ViT encoder (MAE's). Without `noise` it encodes every patch in order."""

    config_class = ColorMAEConfig


class ColorMAEForPreTraining(MAEForPreTraining):
    """MAE pre-training with colour-noise masks. `noise` [B, L] (lowest kept; the original's
    windows negated) may be given; otherwise it is drawn from the configured pattern stack with
    `generator` (a `torch.Generator`, default the global RNG, as the original), with windows
    of the input's patch grid (another size with `interpolate_pos_encoding=True`)."""

    config_class = ColorMAEConfig

    def __init__(self, config: ColorMAEConfig):
        super().__init__(config)
        self._mask_generators: dict[tuple[int, int], ColorNoiseMaskGenerator] = {}

    @property
    def mask_generator(self) -> ColorNoiseMaskGenerator:
        """The generator for the config's patch grid."""
        return self.mask_generator_for_grid(tuple(self.mae.embeddings.patch_embed.grid_size))

    @mask_generator.setter
    def mask_generator(self, generator: ColorNoiseMaskGenerator) -> None:
        """Use `generator` at the config's grid; generators of other grids are rebuilt from the config."""
        self._mask_generators = {tuple(self.mae.embeddings.patch_embed.grid_size): generator}

    def mask_generator_for_grid(self, grid: tuple[int, int]) -> ColorNoiseMaskGenerator:
        if grid not in self._mask_generators:
            own = tuple(self.mae.embeddings.patch_embed.grid_size)
            self._mask_generators[grid] = mask_generator_for(self.config, None if grid == own else grid)
        return self._mask_generators[grid]

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                interpolate_pos_encoding: bool = False, **kwargs):
        if noise is None:
            grid = self.mae.embeddings.patch_embed.check_input(pixel_values, interpolate_pos_encoding)
            noise = self.mask_generator_for_grid(tuple(grid))(pixel_values.shape[0], generator=generator).to(pixel_values.device)
        return super().forward(pixel_values, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)


class ColorMAEForImageClassification(MAEForImageClassification):
    """A fine-tuned ColorMAE encoder (mean pooling + `fc_norm`, as mmpretrain's `avg_featmap`)."""

    config_class = ColorMAEConfig


__all__ = ["ColorMAEModel", "ColorMAEForPreTraining", "ColorMAEForImageClassification", "mask_generator_for"]
