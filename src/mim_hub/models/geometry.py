"""Weights of one geometry (image size, window size) in a model of another.

Fine-tuning usually runs at another resolution than pre-training: SimMIM pre-trains Swin at
192 px with window 6 and fine-tunes at 224 px with window 7, MAE fine-tunes ViTs at 384 px. The
originals' fine-tuning scripts then resize what depends on the geometry before loading, and so do
we, both in `load_at_geometry` (also reached by `from_pretrained(..., image_size=..., window_size=...)`)
and in the SimMIM converter:
- a relative position bias table is resampled to the new window
  (`resize_relative_position_table`: SimMIM's/BEiT's geometric bicubic interpolation);
- a learned absolute position table is interpolated bicubically to the new patch grid, its cls
  row kept (MAE's `interpolate_pos_embed`);
- a fixed table (a frozen sin-cos parameter, which the model computes from its geometry) takes the
  new model's own values: it is what the model would have had at that size.
Any other tensor whose shape differs is an error naming it: nothing is silently re-initialised.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.pos_embed import interpolate_pos_embed
from ..layers.relative_position import RelativePositionBias, infer_window_size, resize_relative_position_table

# Config fields that change a model's geometry without changing its weights' meaning.
GEOMETRY_FIELDS = ("image_size", "window_size")


def _square_side(count: int) -> int | None:
    side = math.isqrt(count) if count > 0 else 0
    return side if side and side * side == count else None


def _position_grids(old_rows: int, new_rows: int) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
    """(prefix tokens, old grid, new grid) for two square position tables of `old_rows` and
    `new_rows` rows: one cls row when both stay square without it, else none."""
    for prefix in (1, 0):
        old, new = _square_side(old_rows - prefix), _square_side(new_rows - prefix)
        if old and new:
            return prefix, (old, old), (new, new)
    return None


def adapt_geometry(state: dict[str, torch.Tensor], model: nn.Module, *, source: str = "checkpoint",
                   old_model: nn.Module | None = None, error: type[Exception] = ValueError) -> dict[str, torch.Tensor]:
    """`state` with every geometry-dependent tensor resized to fit `model` (see the module's
    docstring); tensors that already fit are passed through. `old_model`, the model `state` came
    from, gives the old windows; without it they are read from the table's shape (square windows).
    Raises `error` naming the tensor when a shape differs and no rule covers it."""
    expected = model.state_dict()
    parameters = dict(model.named_parameters())
    adapted = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if target is None or tuple(value.shape) == tuple(target.shape):
            continue
        owner_name, _, leaf = key.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if isinstance(owner, RelativePositionBias) and leaf == "relative_position_bias_table" and value.shape[1:] == target.shape[1:]:
            if old_model is not None:
                old_window = old_model.get_submodule(owner_name).window_size
            else:
                try:
                    old_window = infer_window_size(value.shape[0], cls_token=owner.cls_token)
                except ValueError as reason:
                    raise error(f"{source}: {key}: {reason}") from None
            adapted[key] = resize_relative_position_table(value.float(), old_window, owner.window_size, cls_token=owner.cls_token).to(value.dtype)
        elif leaf.endswith("pos_embed") and value.dim() == 3 and value.shape[0] == 1 and value.shape[2] == target.shape[2]:
            if key in parameters and not parameters[key].requires_grad:
                # a fixed sin-cos table: the model's own, computed for its geometry (left out for a
                # model on the meta device, which computes it when it is materialised)
                if target.is_meta:
                    del adapted[key]
                else:
                    adapted[key] = target.detach().clone().to(value.dtype)
                continue
            grids = _position_grids(value.shape[1], target.shape[1])
            if grids is None:
                raise error(f"{source}: {key} of shape {tuple(value.shape)} cannot be interpolated to {tuple(target.shape)}: "
                            "the position rows form no square grid")
            prefix, old_grid, new_grid = grids
            adapted[key] = interpolate_pos_embed(value, new_grid, num_prefix_tokens=prefix, old_grid=old_grid)
        else:
            raise error(f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}, "
                        "and it is not a position table that could be resized to the new geometry")
    return adapted


def geometry_changes(saved_config, requested: dict) -> dict:
    """The entries of `requested` (geometry fields) that differ from `saved_config`'s values."""
    def same(a, b):
        as_tuple = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v, v))
        return as_tuple(a) == as_tuple(b)

    return {field: value for field, value in requested.items()
            if field in GEOMETRY_FIELDS and hasattr(saved_config, field) and not same(getattr(saved_config, field), value)}


__all__ = ["GEOMETRY_FIELDS", "adapt_geometry", "geometry_changes"]
