"""Fixed 2-D sine-cosine position embeddings and their interpolation to other grids."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from .patch_embed import to_2tuple


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[len(positions), dim]: sin half then cos half, frequencies 1 / 10000**(i / (dim/2))."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed(
    dim: int,
    grid_size: int | tuple[int, int],
    *,
    cls_token: bool = False,
    row_first: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table as a tensor [(1 +) H*W, dim].

    Computed in float64 and cast, exactly as MAE's `util/pos_embed.py`: the first half of the
    channels encodes the column (W) coordinate, the second half the row, because MAE builds the
    grid with `np.meshgrid(grid_w, grid_h)`. `row_first=True` swaps the halves (mmpretrain's and
    ColorMAE's layout). With `cls_token`, a zero row is prepended for the class token.

    The float32 table is then put in `dtype` on `device`, by default torch's current default
    dtype and device, as any factory function: a model built under `from_pretrained(...,
    dtype=torch.bfloat16)` or `with torch.device("meta")` gets its table in that dtype, there.
    """
    if dim % 4 != 0:
        raise ValueError(f"2-D sin-cos position embeddings need a width divisible by 4, got {dim}")
    grid_h, grid_w = to_2tuple(grid_size)
    cols, rows = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    first, second = (rows, cols) if row_first else (cols, rows)
    table = np.concatenate([_sincos_1d(dim // 2, first), _sincos_1d(dim // 2, second)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros([1, dim]), table], axis=0)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.get_default_device() if device is None else device
    return torch.from_numpy(table).float().to(device=device, dtype=dtype)


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    *,
    num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample a [1, prefix + h*w, D] position table to `new_grid` (bicubic, as MAE and ViT do).

    Prefix rows (the cls token) are kept as they are. Returns the table unchanged when the grid
    already matches.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = int(round(grid.shape[1] ** 0.5))
        if side * side != grid.shape[1]:
            raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position rows; pass old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([prefix, grid], dim=1)
