"""transformers' guarded init functions (they skip tensors already loaded from a checkpoint),
plus the few our models need that it lacks."""

from __future__ import annotations

import torch
from transformers.initialization import (  # noqa: F401  (re-exported)
    constant_,
    copy_,
    kaiming_normal_,
    kaiming_uniform_,
    normal_,
    ones_,
    trunc_normal_,
    xavier_uniform_,
    zeros_,
)


def xavier_uniform_flat_(weight: torch.Tensor) -> torch.Tensor:
    """Xavier-uniform on a conv kernel viewed as [out, in*k*k], as MAE initialises its patch
    projection (like a Linear)."""
    if getattr(weight, "_is_hf_initialized", False):
        return weight
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        return weight.uniform_(-bound, bound)
