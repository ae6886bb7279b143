"""AdamW (fused where possible), optimiser parameter groups (no weight decay on biases, norms, tokens and position tables;
layer-wise lr decay) and the cosine schedule with linear warm-up."""

from __future__ import annotations

import math

import torch


def _unwrap(model):
    return getattr(model, "module", model)


def adamw(groups, *, lr: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (one pass over all parameters instead of a Python loop of
    small ops per tensor: 3x faster per step on CPU for the demo's model), where every parameter
    is a floating-point tensor on a device the kernel supports; the plain implementation otherwise."""
    params = [p for group in groups for p in group["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps", "xpu") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights and the model's `no_weight_decay()` parameters."""
    skip = _unwrap(model).no_weight_decay() if hasattr(_unwrap(model), "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in _unwrap(model).named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name in skip or param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def param_groups_lrd(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """Layer-wise lr decay (BEiT/MAE fine-tuning): parameters of layer i get lr scale
    `layer_decay ** (num_layers - i)`, embeddings are layer 0 and the head the last layer.
    Uses the model's `layer_id(name)` and `num_layers_for_decay()` hooks."""
    inner = _unwrap(model)
    return layer_decay_groups(inner.named_parameters(), inner.layer_id, inner.num_layers_for_decay(), inner.no_weight_decay(),
                              weight_decay, layer_decay)


def layer_decay_groups(named_parameters, layer_of, num_layers: int, no_weight_decay: set[str], weight_decay: float,
                       layer_decay: float) -> list[dict]:
    """Optimizer groups by (layer, decayed or not): `layer_of(name)` gives a parameter's layer
    (0 .. `num_layers`), its lr scale is `layer_decay ** (num_layers - layer)`; names in
    `no_weight_decay` and 1-D parameters get no weight decay."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        no_decay = name in no_weight_decay or param.ndim <= 1
        layer = layer_of(name)
        key = (layer, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (num_layers - layer), "layer_id": layer}
        groups[key]["params"].append(param)
    return [groups[k] for k in sorted(groups)]


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """LambdaLR: linear warm-up to the base lr, then half-cosine down to `min_lr_ratio` of it.
    Groups with an `lr_scale` (layer decay) are scaled by it."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, k=k: factor(s) * k for k in scales])
