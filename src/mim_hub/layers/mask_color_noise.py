"""ColorMAE's data-independent masks: windows cut from stacks of filtered ("coloured") noise.

`ColorNoiseMaskGenerator(patterns, grid_size, mask_ratio)` reproduces the original
`ColorMasking.extract_windows` + `color_noise_mask` (carlosh93/ColorMAE): per transform call one
random crop and one pair of horizontal/vertical flips shared by the whole pattern stack, each
window divided by its maximum, sample b using pattern b mod P; the LARGEST window values stay
visible. It returns MAE-convention `noise` (the negated window: lowest values kept), so every
MAE-family model's `random_masking` gives exactly the original's mask and ratio.

Pattern stacks: the authors' `<color>_noise_data_3072.npz` files load with `load_noise_patterns`;
`generate_noise_patterns` makes red/blue/green/purple noise offline (see its docstring).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..utils.atomic import atomic_file
from .patch_embed import to_2tuple

COLORS = ("red", "blue", "green", "purple")


class ColorNoiseMaskGenerator:
    """Masking noise from a pattern stack [P, M, N] for a `grid_size` x `grid_size` patch grid
    (or a `grid_size=(h, w)` grid: an input of another size or shape, with windows of h x w)."""

    def __init__(self, patterns, grid_size: int | tuple[int, int], mask_ratio: float):
        patterns = torch.as_tensor(np.asarray(patterns) if not torch.is_tensor(patterns) else patterns)
        if patterns.dim() == 2:
            patterns = patterns[None]
        if patterns.dim() != 3:
            raise ValueError(f"patterns must be a [P, M, N] stack, got shape {tuple(patterns.shape)}")
        grid_h, grid_w = to_2tuple(grid_size)
        if patterns.shape[1] < grid_h or patterns.shape[2] < grid_w:
            raise ValueError(f"noise patterns of {patterns.shape[1]}x{patterns.shape[2]} are smaller than the {grid_h}x{grid_w} patch grid")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if int(grid_h * grid_w * (1 - mask_ratio)) < 1:
            raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of the {grid_h}x{grid_w} grid")
        self.patterns, self.grid_size, self.mask_ratio = patterns, grid_size, mask_ratio
        self.grid = (grid_h, grid_w)

    def _one_call(self, generator: torch.Generator | None) -> torch.Tensor:
        """One pass of the original transform over the whole stack -> [P, h, w] windows."""
        count, height, width = self.patterns.shape
        h, w = self.grid
        top = left = 0
        if not (height == h and width == w):  # torchvision's RandomCrop draws nothing then
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        windows = self.patterns[:, top:top + h, left:left + w]
        if torch.rand(1, generator=generator) < 0.5:
            windows = windows.flip(-1)
        if torch.rand(1, generator=generator) < 0.5:
            windows = windows.flip(-2)
        return windows / windows.amax(dim=(-2, -1), keepdim=True)

    def windows(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, h, w] max-normalised windows, as the original's `extract_windows(B)`."""
        count = self.patterns.shape[0]
        calls = batch_size // count + (1 if batch_size % count else 0)
        return torch.cat([self._one_call(generator) for _ in range(calls)])[:batch_size]

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`noise` [B, h*w] in MAE's convention: the negated windows (largest window values kept)."""
        return -self.windows(batch_size, generator).reshape(batch_size, -1).float()

    gen = __call__


def load_noise_patterns(path: str) -> np.ndarray:
    """The first array of a pattern `.npz` (as the original `change_color_pattern`), as [P, M, N]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no noise pattern file at {path}")
    with np.load(path, allow_pickle=False) as data:
        if not data.files:
            raise ValueError(f"{path} holds no arrays")
        patterns = np.asarray(data[data.files[0]], dtype=np.float32)
    return patterns[None] if patterns.ndim == 2 else patterns


def _gaussian_lowpass(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with wrap-around borders, in the Fourier domain (exactly periodic)."""
    if sigma <= 0:
        return noise
    fy = np.fft.fftfreq(noise.shape[-2])[:, None]
    fx = np.fft.fftfreq(noise.shape[-1])[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * transfer))


# colour -> (description, how it is made from white noise w; sigmas in pixels)
FILTERS = {
    "red": ("low-pass: G(w, 2)", lambda w: _gaussian_lowpass(w, 2.0)),
    "blue": ("high-pass: w - G(w, 1)", lambda w: w - _gaussian_lowpass(w, 1.0)),
    "green": ("band-pass: G(w, 1) - G(w, 3)", lambda w: _gaussian_lowpass(w, 1.0) - _gaussian_lowpass(w, 3.0)),
    "purple": ("band-stop: w - (G(w, 1) - G(w, 3))", lambda w: w - (_gaussian_lowpass(w, 1.0) - _gaussian_lowpass(w, 3.0))),
}


def generate_noise_patterns(color: str, count: int = 64, size: int = 64, seed: int = 0) -> np.ndarray:
    """`count` patterns of `size` x `size` coloured noise, float32 [P, size, size].

    White Gaussian noise filtered with wrap-around Gaussian filters G(w, sigma) as the ColorMAE
    paper describes the four colours: red = low-pass G(w, 2); blue = high-pass w - G(w, 1);
    green = band-pass G(w, 1) - G(w, 3); purple = band-stop w - green. Each pattern is then
    standardised (zero mean, unit variance). Deterministic in `seed`.
    """
    if color not in FILTERS:
        raise ValueError(f"unknown noise colour {color!r}; choose one of {list(FILTERS)}")
    white = np.random.RandomState(seed).standard_normal((count, size, size))
    patterns = FILTERS[color][1](white)
    patterns = (patterns - patterns.mean((1, 2), keepdims=True)) / patterns.std((1, 2), keepdims=True)
    return patterns.astype(np.float32)


def cached_noise_patterns(color: str, count: int = 64, size: int = 64, seed: int = 0, cache_dir: str | None = None) -> np.ndarray:
    """`generate_noise_patterns`, cached as an .npz under `cache_dir` (default ~/.cache/mim_hub/color_noise)."""
    cache_dir = cache_dir or os.path.join(os.path.expanduser(os.environ.get("MIM_HUB_CACHE", "~/.cache/mim_hub")), "color_noise")
    path = os.path.join(cache_dir, f"{color}_noise_{count}x{size}x{size}_seed{seed}.npz")
    if os.path.isfile(path):
        return load_noise_patterns(path)
    patterns = generate_noise_patterns(color, count, size, seed)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:  # concurrent workers: each writes whole, one wins
        np.savez_compressed(handle, patterns=patterns)
    return patterns


def radial_power_spectrum(patterns: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of a stack (for the documentation picture)."""
    power = (np.abs(np.fft.fftshift(np.fft.fft2(patterns), axes=(-2, -1))) ** 2).mean(0)
    h, w = power.shape
    yy, xx = np.indices(power.shape)
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    totals = np.bincount(radius.ravel(), power.ravel())
    counts = np.bincount(radius.ravel())
    return (totals / np.maximum(counts, 1))[: min(h, w) // 2]
