"""Relative position biases (BEiT/SimMIM/CAE with three extra cls entries; Swin without) and the
resizing of their tables to another window, in torch.

Layout of a table for a window of h x w tokens: row `(dh + h - 1) * (2w - 1) + (dw + w - 1)` holds
the bias (one column per head) between two tokens `dh` rows and `dw` columns apart. With a cls
token, three rows follow: cls -> token, token -> cls, cls -> cls (BEiT's order).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .patch_embed import to_2tuple

NUM_CLS_ENTRIES = 3


def num_relative_distances(window_size, cls_token: bool = True) -> int:
    """Rows of the table for `window_size` (h, w): (2h-1)(2w-1), + 3 with a cls token."""
    h, w = to_2tuple(window_size)
    return (2 * h - 1) * (2 * w - 1) + (NUM_CLS_ENTRIES if cls_token else 0)


def relative_position_index(window_size, cls_token: bool = True) -> torch.Tensor:
    """Index into the table for every pair of tokens of a window: long [N, N], N = h*w (+1 with
    the cls token first). Same values as the `relative_position_index` buffer of BEiT, SimMIM and
    Swin (rows = query token, columns = key token, tokens in row-major order)."""
    h, w = to_2tuple(window_size)
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # [2, hw]
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # [hw, hw, 2]
    index = (relative[..., 0] + h - 1) * (2 * w - 1) + (relative[..., 1] + w - 1)
    if not cls_token:
        return index.long()
    total = num_relative_distances((h, w), cls_token=True)
    full = torch.zeros(h * w + 1, h * w + 1, dtype=torch.long)
    full[1:, 1:] = index
    full[0, :] = total - 3  # cls -> token
    full[:, 0] = total - 2  # token -> cls
    full[0, 0] = total - 1  # cls -> cls
    return full


def gather_relative_position_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table [num_distances, heads], index [N, N] -> bias [heads, N, N]."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).contiguous()


class RelativePositionBias(nn.Module):
    """A learned relative position bias for a window of tokens: `forward()` -> [heads, N, N] to
    add to the attention scores (N = h*w, + 1 with `cls_token`, the cls token first).

    `relative_position_bias_table` [num_distances, heads] is the learned parameter (zeros at
    construction, as BEiT/SimMIM); `relative_position_index` is a fixed, non-persistent buffer
    (it follows from the window, so checkpoints need not carry it).
    """

    def __init__(self, window_size, num_heads: int, cls_token: bool = True):
        super().__init__()
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        self.cls_token = cls_token
        self.num_relative_distance = num_relative_distances(self.window_size, cls_token)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(self.num_relative_distance, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size, cls_token), persistent=False)

    def forward(self, window_size=None) -> torch.Tensor:
        """The bias [heads, N, N] for this module's window, or for another `window_size` (the
        table resized with `resize_relative_position_table`, differentiably: a model trained at
        one resolution then runs at another, as BEiT's `interpolate_pos_encoding`)."""
        table = self.relative_position_bias_table
        window = self.window_size if window_size is None else to_2tuple(window_size)
        if window != self.window_size:
            table = resize_relative_position_table(table, self.window_size, window, cls_token=self.cls_token)
            index = relative_position_index(window, self.cls_token).to(table.device)
        else:
            index = self.relative_position_index
            if index.is_meta or index.device != table.device:
                index = relative_position_index(window, self.cls_token).to(table.device)
        return gather_relative_position_bias(table, index)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}, cls_token={self.cls_token}"


def relative_position_attention_bias(grid, shared: RelativePositionBias | None = None, per_block=None):
    """The `attention_bias` a `ViTEncoder` takes for BEiT-style relative positions on `grid`:
    None, one [heads, N, N] tensor (a table shared by every block), or a callable index -> the
    block's own bias plus the shared one (`per_block`: one `RelativePositionBias` per block).
    Tables are resized when `grid` differs from their window (see `RelativePositionBias`)."""
    shared_bias = shared(grid) if shared is not None else None
    if not per_block:
        return shared_bias

    def block(index: int) -> torch.Tensor:
        own = per_block[index](grid)
        return own if shared_bias is None else own + shared_bias

    return block


# ----------------------------------------------------------------------------------------------
# Resizing a table to another window (BEiT/SimMIM's geometric interpolation, in torch)
# ----------------------------------------------------------------------------------------------


def _bspline_basis(knots: torch.Tensor, degree: int, points: torch.Tensor) -> torch.Tensor:
    """B-spline basis functions [len(points), len(knots) - degree - 1] (Cox-de Boor); points at
    the last knot belong to the last non-empty interval, as FITPACK evaluates them."""
    t = knots
    x = points[:, None]
    last = int(torch.nonzero(t[1:] > t[:-1]).max())  # last non-empty interval [t_last, t_last+1)
    basis = ((t[:-1] <= x) & (x < t[1:])).to(t.dtype)
    at_end = (points >= t[last + 1])
    basis[at_end] = 0
    basis[at_end, last] = 1
    for k in range(1, degree + 1):
        left_den = t[k:-1] - t[: -k - 1]
        right_den = t[k + 1 :] - t[1:-k]
        left = torch.where(left_den > 0, (x - t[: -k - 1]) / torch.where(left_den > 0, left_den, 1), 0) * basis[:, :-1]
        right = torch.where(right_den > 0, (t[k + 1 :] - x) / torch.where(right_den > 0, right_den, 1), 0) * basis[:, 1:]
        basis = left + right
    return basis


def spline_interpolation_matrix(source: torch.Tensor, target: torch.Tensor, degree: int = 3) -> torch.Tensor:
    """Linear map [len(target), len(source)] taking values at the increasing `source` positions
    to the interpolating spline's values at `target` (float64).

    The spline is FITPACK's interpolating spline (`s=0`: knots at the interior data points, i.e.
    "not-a-knot"), which is what scipy's `interp2d(kind='cubic')` / `RectBivariateSpline` fit on a
    grid; targets outside the data range take the boundary value (FITPACK clamps them). Fewer
    than `degree + 1` points lower the degree.
    """
    source = source.to(torch.float64)
    target = target.to(torch.float64)
    m = source.numel()
    degree = min(degree, m - 1)
    if degree < 1:
        return torch.ones(target.numel(), 1, dtype=torch.float64)
    if degree % 2:  # odd degree: interior knots at the data points (FITPACK fpcurf/regrid with s=0)
        interior = source[(degree + 1) // 2 : m - (degree + 1) // 2]
    else:  # even degree: knots between data points
        mid = (source[1:] + source[:-1]) / 2
        interior = mid[degree // 2 : m - 1 - degree // 2]
    knots = torch.cat([source[:1].repeat(degree + 1), interior, source[-1:].repeat(degree + 1)])
    collocation = _bspline_basis(knots, degree, source)  # [m, m]
    evaluation = _bspline_basis(knots, degree, target.clamp(source[0], source[-1]))  # [T, m]
    return torch.linalg.solve(collocation.T, evaluation.T).T


def geometric_source_positions(src_size: int, dst_size: int) -> torch.Tensor:
    """BEiT/SimMIM's positions of the `src_size` table rows when stretched to `dst_size`: offsets
    growing geometrically from the centre so that the outermost lands near `dst_size // 2`."""
    half = src_size // 2

    def progression(ratio: float) -> float:
        return (1.0 - ratio**half) / (1.0 - ratio)

    left, right = 1.01, 1.5
    ratio = (left + right) / 2.0
    while right - left > 1e-6:
        ratio = (left + right) / 2.0
        if progression(ratio) > dst_size // 2:
            right = ratio
        else:
            left = ratio
    distances, current = [], 1.0
    for i in range(half):
        distances.append(current)
        current += ratio ** (i + 1)
    return torch.tensor([-d for d in reversed(distances)] + [0.0] + distances, dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _axis_matrix(src_size: int, dst_size: int) -> torch.Tensor:
    if src_size == dst_size:
        return torch.eye(src_size, dtype=torch.float64)
    source = geometric_source_positions(src_size, dst_size)
    half = dst_size // 2
    target = torch.arange(-float(half), half + 0.1, 1.0, dtype=torch.float64)
    return spline_interpolation_matrix(source, target, degree=3)


def resize_relative_position_table(table: torch.Tensor, old_window, new_window, cls_token: bool = True) -> torch.Tensor:
    """Resize a relative position bias table [num_distances, heads] from `old_window` to
    `new_window` (each an int or (h, w)), as SimMIM's `remap_pretrained_keys_vit/_swin` do
    before fine-tuning at another resolution or window size: the (2h-1) x (2w-1) grid of each
    head is placed on geometrically spaced positions and re-sampled at unit steps with a bicubic
    interpolating spline (the original's `scipy.interpolate.interp2d(kind='cubic')`, which no
    longer exists, done here in torch). The three cls entries are kept unchanged.
    """
    old_h, old_w = to_2tuple(old_window)
    new_h, new_w = to_2tuple(new_window)
    expected = num_relative_distances((old_h, old_w), cls_token)
    if table.dim() != 2 or table.shape[0] != expected:
        raise ValueError(
            f"relative position table of shape {tuple(table.shape)} does not fit a {old_h}x{old_w} window "
            f"({'with' if cls_token else 'without'} cls entries: {expected} rows expected)"
        )
    if (old_h, old_w) == (new_h, new_w):
        return table.clone()
    extra = table[-NUM_CLS_ENTRIES:] if cls_token else table[:0]
    grid = table[: table.shape[0] - extra.shape[0]]
    heads = grid.shape[1]
    work = torch.float64 if grid.device.type == "cpu" or grid.dtype == torch.float64 else torch.float32
    grid = grid.T.reshape(heads, 2 * old_h - 1, 2 * old_w - 1).to(work)
    rows = _axis_matrix(2 * old_h - 1, 2 * new_h - 1).to(device=grid.device, dtype=work)
    cols = _axis_matrix(2 * old_w - 1, 2 * new_w - 1).to(device=grid.device, dtype=work)
    resized = rows @ grid @ cols.T  # [heads, 2H-1, 2W-1]
    resized = resized.reshape(heads, -1).T.to(table.dtype)
    return torch.cat([resized, extra], dim=0)


def infer_window_size(num_rows: int, cls_token: bool = True) -> tuple[int, int]:
    """The square window whose table has `num_rows` rows (tables carry no other shape)."""
    grid = num_rows - (NUM_CLS_ENTRIES if cls_token else 0)
    side = int(round(math.sqrt(max(grid, 0))))
    if side * side != grid or side % 2 == 0:
        raise ValueError(f"a relative position table of {num_rows} rows fits no square window")
    return (side + 1) // 2, (side + 1) // 2


__all__ = [
    "RelativePositionBias",
    "relative_position_index",
    "num_relative_distances",
    "gather_relative_position_bias",
    "resize_relative_position_table",
    "spline_interpolation_matrix",
    "geometric_source_positions",
    "infer_window_size",
]
