"""Block-wise masking of BEiT and CAE (`furnace/masking_generator.py`), with its random source
made explicit.

`BlockMaskGenerator(...)(rng)` with `rng = random.Random(s)` returns exactly the masks the
original `MaskingGenerator()` returns after `random.seed(s)`: the same Mersenne-Twister draws in
the same order (`uniform`, `uniform`, then `randint`, `randint` only when the rectangle fits),
Python's banker's `round`, and the same overlap rule. `RandomMaskGenerator(...)(rng)` with
`rng = numpy.random.RandomState(s)` equals the original `RandomMaskingGenerator()` after
`np.random.seed(s)`.
"""

from __future__ import annotations

import math
import random

import numpy as np

# A mask that makes no progress for this many rounds of 10 attempts cannot be finished (the
# original would loop forever); refuse it instead.
_MAX_IDLE_ROUNDS = 10_000


def _grid(input_size) -> tuple[int, int]:
    if isinstance(input_size, (tuple, list)):
        if len(input_size) != 2:
            raise ValueError(f"input_size must be an int or an (height, width) pair, got {input_size}")
        height, width = int(input_size[0]), int(input_size[1])
    else:
        height = width = int(input_size)
    if height < 1 or width < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    return height, width


class BlockMaskGenerator:
    """Masks exactly `num_masking_patches` cells of a `input_size` patch grid with rectangles.

    Each rectangle has an area drawn uniformly between `min_num_patches` and the patches still to
    mask (capped by `max_num_patches`, default `num_masking_patches`) and a log-uniform aspect
    ratio in [`min_aspect`, `max_aspect`] (default 1 / `min_aspect`). CAE's defaults for 224 / 16:
    `BlockMaskGenerator(14, 98, min_num_patches=16)`.

    `gen(rng)` -> int8 array [H, W], 1 = masked; `mask.flatten()` (row-major) is the model's
    `bool_masked_pos`.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int],
        num_masking_patches: int,
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ):
        self.height, self.width = _grid(input_size)
        self.num_patches = self.height * self.width
        if not 0 < num_masking_patches <= self.num_patches:
            raise ValueError(
                f"num_masking_patches must be in [1, {self.num_patches}] for a {self.height}x{self.width} grid, got {num_masking_patches}"
            )
        if self.height < 2 or self.width < 2:
            raise ValueError(f"block masking needs a grid of at least 2x2 (rectangles must be narrower than the grid), got {self.height}x{self.width}")
        if min_aspect <= 0 or (max_aspect is not None and max_aspect <= 0):
            raise ValueError(f"aspect ratios must be positive, got min_aspect={min_aspect}, max_aspect={max_aspect}")
        self.num_masking_patches = int(num_masking_patches)
        self.min_num_patches = min_num_patches
        self.max_num_patches = self.num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def __repr__(self) -> str:
        return (
            f"BlockMaskGenerator({self.height}, {self.width} -> [{self.min_num_patches} ~ {self.max_num_patches}], "
            f"max = {self.num_masking_patches}, {self.log_aspect_ratio[0]:.3f} ~ {self.log_aspect_ratio[1]:.3f})"
        )

    def get_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def _mask(self, mask: np.ndarray, max_mask_patches: int, rng: random.Random) -> int:
        """Up to 10 attempts to add one rectangle; returns how many cells it newly masked."""
        delta = 0
        for _ in range(10):
            target_area = rng.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                window = mask[top: top + h, left: left + w]
                new = h * w - int(window.sum())
                # the rectangle must add something, and not more than is left to mask
                if 0 < new <= max_mask_patches:
                    window[...] = 1
                    delta += new
                if delta > 0:
                    break
        return delta

    def __call__(self, rng: random.Random | None = None) -> np.ndarray:
        """One mask [H, W] (int8, 1 = masked) drawn from `rng` (default: Python's global `random`,
        as the original)."""
        rng = random if rng is None else rng
        mask = np.zeros(self.get_shape(), dtype=np.int8)
        count, idle = 0, 0
        while count != self.num_masking_patches:
            max_mask_patches = min(self.num_masking_patches - count, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches, rng)
            count += delta
            idle = 0 if delta else idle + 1
            if idle > _MAX_IDLE_ROUNDS:
                raise RuntimeError(f"{self!r} cannot place the remaining {self.num_masking_patches - count} patches")
        return mask

    gen = __call__


class RandomMaskGenerator:
    """CAE's `RandomMaskingGenerator`: `int(ratio * H * W)` cells masked uniformly at random.

    `gen(rng: numpy.random.RandomState)` -> float64 array [H*W] (flat, as the original), 1 = masked.
    """

    def __init__(self, input_size: int | tuple[int, int], ratio_masking_patches: float):
        self.height, self.width = _grid(input_size)
        self.num_patches = self.height * self.width
        if not 0.0 <= ratio_masking_patches < 1.0:
            raise ValueError(f"ratio_masking_patches must be in [0, 1), got {ratio_masking_patches}")
        self.num_masking_patches = int(ratio_masking_patches * self.num_patches)

    def __repr__(self) -> str:
        return f"RandomMaskGenerator(total patches {self.num_patches}, mask patches {self.num_masking_patches})"

    def __call__(self, rng: np.random.RandomState | None = None) -> np.ndarray:
        rng = np.random if rng is None else rng
        mask = np.hstack([np.zeros(self.num_patches - self.num_masking_patches), np.ones(self.num_masking_patches)])
        rng.shuffle(mask)
        return mask

    gen = __call__


__all__ = ["BlockMaskGenerator", "RandomMaskGenerator"]
