"""ColorMAE configuration: MAE's, plus where the colour-noise masks come from."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ...layers.mask_color_noise import COLORS
from ..mae.configuration_mae import MAEConfig
from ..validation import COUNT, POSITIVE, Choice, Rule
from ...layers.patch_embed import to_2tuple


@strict
class ColorMAEConfig(MAEConfig):
    r"""ColorMAE (Hinojosa et al., ECCV 2024): MAE whose masks are windows of filtered noise.

    Args (besides MAEConfig's):
        noise_color: "red", "blue", "green" (the paper's best) or "purple".
        noise_pattern_path: the authors' `<color>_noise_data_3072.npz` to draw windows from;
            None generates the colour offline (`generate_noise_patterns`, cached on disk).
        noise_pattern_count, noise_pattern_size, noise_pattern_seed: the generated stack.
    """

    model_type = "color_mae"

    noise_color: str = "green"
    noise_pattern_path: str | None = None
    noise_pattern_count: int = 64
    noise_pattern_size: int = 64
    noise_pattern_seed: int = 0

    FIELD_RULES = {
        **MAEConfig.FIELD_RULES, "noise_color": Choice(*COLORS), "noise_pattern_path": Rule("str", optional=True),
        "noise_pattern_count": POSITIVE, "noise_pattern_size": POSITIVE, "noise_pattern_seed": COUNT,
    }

    def __post_init__(self, **kwargs):
        size = to_2tuple(self.image_size)[0]
        if self.noise_pattern_size < size // self.patch_size:
            raise ValueError(f"ColorMAEConfig: noise_pattern_size {self.noise_pattern_size} is smaller than the "
                             f"{size // self.patch_size}-patch grid")
        super().__post_init__(**kwargs)


__all__ = ["ColorMAEConfig"]
