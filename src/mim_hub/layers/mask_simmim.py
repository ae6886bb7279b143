"""SimMIM's random masking of large square blocks (microsoft/SimMIM, `data/data_simmim.py`).

The image is cut into `mask_patch_size` blocks; `ceil(blocks * mask_ratio)` of them, drawn by one
`permutation`, are masked, and the block grid is repeated up to the model's patch grid.
"""

from __future__ import annotations

import numpy as np


class SimMIMMaskGenerator:
    """`gen(rng)` -> int mask [input_size / model_patch_size] x 2, 1 = masked.

    `rng` is a `numpy.random.RandomState`: with the seed the original used it reproduces its masks
    bit for bit (the original draws from numpy's global legacy RNG, so `np.random.seed(s)` then
    its calls is the same stream as one `RandomState(s)`). `gen()` / `gen(None)` draws from
    numpy's global RNG exactly as the original does. Constructing a generator draws nothing.
    """

    def __init__(self, input_size: int = 192, mask_patch_size: int = 32, model_patch_size: int = 4, mask_ratio: float = 0.6):
        if min(input_size, mask_patch_size, model_patch_size) <= 0:
            raise ValueError("input_size, mask_patch_size and model_patch_size must be positive")
        if input_size % mask_patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of mask_patch_size {mask_patch_size}")
        if mask_patch_size % model_patch_size:
            raise ValueError(f"mask_patch_size {mask_patch_size} is not a multiple of model_patch_size {model_patch_size}")
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        self.input_size = input_size
        self.mask_patch_size = mask_patch_size
        self.model_patch_size = model_patch_size
        self.mask_ratio = mask_ratio
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size**2
        # the original computes the count with np.ceil on a float64 product; math.ceil is the same
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))

    @property
    def grid_size(self) -> int:
        """Side of the returned mask: patches of the model per image side."""
        return self.rand_size * self.scale

    def gen(self, rng: np.random.RandomState | None = None) -> np.ndarray:
        """One mask, drawing one permutation from `rng` (numpy's global RNG when None)."""
        source = np.random if rng is None else rng
        masked = source.permutation(self.token_count)[: self.mask_count]
        mask = np.zeros(self.token_count, dtype=np.int64)
        mask[masked] = 1
        mask = mask.reshape(self.rand_size, self.rand_size)
        # blocks -> model patches
        return mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)

    def __call__(self, rng: np.random.RandomState | None = None) -> np.ndarray:
        return self.gen(rng)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, mask_patch_size={self.mask_patch_size}, "
            f"model_patch_size={self.model_patch_size}, mask_ratio={self.mask_ratio})"
        )


__all__ = ["SimMIMMaskGenerator"]
