"""Patch embedding (a strided convolution) and MAE's patchify/unpatchify."""

from __future__ import annotations

import torch
from torch import nn


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


class PatchEmbedding(nn.Module):
    """Split an image into non-overlapping patches and project each to `hidden_size`.

    Output tokens are in row-major (h, w) order, as `Conv2d -> flatten(2).transpose(1, 2)` in the
    originals. Images must match `image_size` unless `interpolate_pos_encoding` is used, and must
    always be a whole number of patches.
    """

    def __init__(self, image_size, patch_size, num_channels: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.image_size = to_2tuple(image_size)
        self.patch_size = to_2tuple(patch_size)
        self.num_channels = num_channels
        for side, patch in zip(self.image_size, self.patch_size):
            if side % patch != 0:
                raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def check_input(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        """Validate `pixel_values` [B, C, H, W]; return its patch grid."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [batch, channels, height, width], got shape {tuple(pixel_values.shape)}")
        _, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels but the model expects num_channels={self.num_channels}"
            )
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size[0]}x{self.patch_size[1]}"
            )
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(
                f"image size {height}x{width} does not match the model's {self.image_size[0]}x{self.image_size[1]}; "
                "resize it (the image processor does) or pass interpolate_pos_encoding=True"
            )
        return height // self.patch_size[0], width // self.patch_size[1]

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, return_grid: bool = False):
        """[B, h*w, D] patch tokens (the input cast to the projection's dtype: float32 images
        into a bf16 model), and with `return_grid` also the patch grid (h, w)."""
        grid = self.check_input(pixel_values, interpolate_pos_encoding)
        tokens = self.projection(pixel_values.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)
        return (tokens, grid) if return_grid else tokens


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, h*w, p*p*C], each patch vector ordered (row, column, channel) as MAE."""
    batch, channels, height, width = pixel_values.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
    h, w = height // p, width // p
    x = pixel_values.reshape(batch, channels, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(batch, h * w, p * p * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, num_channels: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Inverse of `patchify`: [B, h*w, p*p*C] -> [B, C, h*p, w*p] (square grid unless `grid`)."""
    batch, length, _ = patches.shape
    p = patch_size
    if grid is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    h, w = grid
    x = patches.reshape(batch, h, w, p, p, num_channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(batch, num_channels, h * p, w * p)
