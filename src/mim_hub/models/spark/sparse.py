"""SparK's sparse convolution, written as dense ops on masked maps (keyu-tian/SparK,
`pretrain/encoder.py`).

A pre-training image is masked on the encoder's 1/32 grid. Every layer that mixes positions
(convolution, pooling) is followed by the mask, brought to its map's resolution, so masked
positions stay exactly zero all the way through the encoder; the norms (BatchNorm, LayerNorm)
normalise the visible positions only and write zeros elsewhere, so in training BatchNorm's
statistics come from the visible positions alone (the original gathers them, we weight by the
mask: the same numbers). Without a mask each layer is its plain dense self: the same module
is the fine-tuning CNN.

Every masked layer takes `(x, mask)`, `mask` a `VisibleMask` or None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VisibleMask:
    """The visible cells of a batch ([B, 1, h, w] bool, True = visible) and that mask at the
    resolution of any map it meets: nearest upsampling (each cell repeated), as the original's
    `repeat_interleave`. Each resolution is computed once per forward."""

    def __init__(self, visible: torch.Tensor):
        if visible.dim() != 4 or visible.shape[1] != 1:
            raise ValueError(f"visible must be [B, 1, h, w], got {tuple(visible.shape)}")
        self.visible = visible.bool()
        self._cache: dict[tuple, torch.Tensor] = {}

    def at(self, height: int, width: int, channels_last: bool = False) -> torch.Tensor:
        """bool [B, 1, height, width] (or [B, height, width, 1] with `channels_last`)."""
        key = (height, width, channels_last)
        if key not in self._cache:
            rows, cols = self.visible.shape[-2:]
            if height % rows or width % cols:
                raise ValueError(f"a {height}x{width} map is not a whole multiple of the {rows}x{cols} mask grid")
            batch, rh, rw = self.visible.shape[0], height // rows, width // cols
            grown = self.visible[:, :, :, None, :, None].expand(batch, 1, rows, rh, cols, rw).reshape(batch, 1, height, width)
            self._cache[key] = grown.permute(0, 2, 3, 1) if channels_last else grown
        return self._cache[key]

    def like(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """The mask at the resolution of `x` ([B, C, H, W], or [B, H, W, C] with `channels_last`)."""
        height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
        return self.at(height, width, channels_last)

    def apply(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """`x` with its masked positions set to zero."""
        return x * self.like(x, channels_last).to(x.dtype)


def apply_mask(x: torch.Tensor, mask: VisibleMask | None) -> torch.Tensor:
    return x if mask is None else mask.apply(x)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output is re-masked (`SparseConv2d`). `init_mode` says how
    `_init_weights` initialises it: "trunc_normal" (ConvNeXt, decoder) or "kaiming" (timm's ResNet)."""

    def __init__(self, *args, init_mode: str = "trunc_normal", **kwargs):
        super().__init__(*args, **kwargs)
        self.init_mode = init_mode

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        return apply_mask(super().forward(x), mask)


class MaskedMaxPool2d(nn.MaxPool2d):
    """Max pooling whose output is re-masked (`SparseMaxPooling`)."""

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        return apply_mask(super().forward(x), mask)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the visible positions only (`SparseBatchNorm2d`, a BatchNorm1d on the
    visible [N, C] vectors): in training the batch statistics (and the running ones it updates)
    come from them; the output is zero at masked positions. `zero_init`: the last norm of a
    residual branch, initialised to zero as timm's ResNet does."""

    def __init__(self, *args, zero_init: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.zero_init = zero_init

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        visible = mask.like(x).to(x.dtype)
        if self.training or not self.track_running_stats:
            count = visible.sum() if x.shape[1] else visible.new_ones(())
            mean = (x * visible).sum(dim=(0, 2, 3)) / count
            var = ((x - mean[None, :, None, None]).square() * visible).sum(dim=(0, 2, 3)) / count
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        return (x * scale[None, :, None, None] + shift[None, :, None, None]) * visible

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """As BatchNorm1d on the visible vectors: the unbiased variance, `momentum` (None: the cumulative average)."""
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


class MaskedLayerNorm(nn.LayerNorm):
    """ConvNeXt's LayerNorm over channels, on [B, C, H, W] (`channels_first`) or [B, H, W, C]
    maps, applied to the visible positions with zeros elsewhere (`SparseConvNeXtLayerNorm`);
    dense without a mask."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, channels_first: bool = True):
        super().__init__(normalized_shape, eps=eps)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        if self.channels_first:
            x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
            return apply_mask(x, mask)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x if mask is None else mask.apply(x, channels_last=True)


class MaskedSequential(nn.Sequential):
    """`nn.Sequential` whose layers each take the mask (stages, the ConvNeXt downsampling layers)."""

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, mask)
        return x


__all__ = ["VisibleMask", "apply_mask", "MaskedConv2d", "MaskedMaxPool2d", "MaskedBatchNorm2d", "MaskedLayerNorm", "MaskedSequential"]
