"""The optimisers (AdamW, fused where possible; LAMB for SparK), optimiser parameter groups (no weight
decay on biases, norms, tokens and position tables; layer-wise lr decay) and the cosine schedule
with linear warm-up (and, optionally, the weight decay annealed along a cosine)."""

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


def _closure_loss(closure):
    """An optimiser step's `closure()` (with gradients on), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def trust_ratio(weight: torch.Tensor, update: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """The layer-wise rate of LARS and LAMB: `coefficient x ||weight|| / ||update||`, 1 where
    either norm is 0."""
    weight_norm, update_norm = torch.linalg.vector_norm(weight), torch.linalg.vector_norm(update)
    return torch.where((weight_norm > 0) & (update_norm > 0), coefficient * weight_norm / update_norm, torch.ones_like(weight_norm))


class LARS(torch.optim.Optimizer):
    """LARS as MAE's util/lars.py defines it, for its linear probe: SGD with momentum whose update
    of every weight matrix is weight-decayed, then scaled by `trust_ratio` (x `trust_coefficient`);
    1-D parameters get neither."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:  # weight matrices: weight decay, then the trust ratio
                    update = update.add(param, alpha=group["weight_decay"])
                    update = update.mul(trust_ratio(param, update, group["trust_coefficient"]))
                state = self.state[param]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(param)
                state["mu"].mul_(group["momentum"]).add_(update)
                param.add_(state["mu"], alpha=-group["lr"])
        return loss


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning") as NVIDIA's FusedLAMB
    and timm's `Lamb` compute it, the variant SparK pre-trains with (keyu-tian/SparK
    `pretrain/utils/lamb.py`, max_grad_norm 5):

    - the gradients are first scaled together so that their global norm is at most
      `max_grad_norm` (None: not clipped);
    - Adam's bias-corrected step `m_hat / (sqrt(v_hat) + eps)`, plus `weight_decay x p`;
    - for a group with weight decay (or with `always_adapt`), the step is scaled by the trust ratio
      `||p|| / ||step||` (1 where either norm is 0; at most 1 with `trust_clip`); groups without
      weight decay take Adam's step as it is;
    - `p -= lr x step`.

    The step count is per group (`group["step"]`), saved with the optimizer's state; so is every
    moment, and a resumed run continues exactly. Under FSDP the norms would be a shard's, so
    the trainer refuses LAMB there."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 max_grad_norm: float | None = 1.0, trust_clip: bool = False, always_adapt: bool = False):
        if lr < 0 or eps <= 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Lamb: invalid lr {lr}, eps {eps}, weight_decay {weight_decay} or betas {betas}")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"Lamb: max_grad_norm must be positive or None, got {max_grad_norm}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                                      trust_clip=trust_clip, always_adapt=always_adapt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return loss
        if any(g.is_sparse for g in grads):
            raise RuntimeError("Lamb does not support sparse gradients")
        max_norm = self.defaults["max_grad_norm"]
        clip = None
        if max_norm is not None:  # one scale for every gradient: the global norm at most max_norm
            global_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            clip = torch.where(global_norm > max_norm, max_norm / global_norm, torch.ones_like(global_norm))
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            beta1, beta2 = group["betas"]
            correction1, correction2 = 1 - beta1 ** group["step"], 1 - beta2 ** group["step"]
            adapt = group["weight_decay"] != 0 or group["always_adapt"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad if clip is None else param.grad * clip.to(param.grad.dtype)
                state = self.state[param]
                if not state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = (exp_avg / correction1).div_((exp_avg_sq.sqrt() / math.sqrt(correction2)).add_(group["eps"]))
                if group["weight_decay"] != 0:
                    update.add_(param, alpha=group["weight_decay"])
                if adapt:
                    ratio = trust_ratio(param, update)
                    if group["trust_clip"]:
                        ratio = ratio.clamp(max=1.0)
                    update.mul_(ratio)
                param.add_(update, alpha=-group["lr"])
        return loss


OPTIMIZERS = ("adamw", "lamb")


def build_optimizer(name: str, groups, *, lr: float, betas=(0.9, 0.999), max_grad_norm: float | None = None) -> torch.optim.Optimizer:
    """The optimiser called `name` ("adamw": `adamw`; "lamb": `Lamb`, clipping the global gradient
    norm to `max_grad_norm` itself) over parameter groups that carry their weight decay."""
    if name == "adamw":
        return adamw(groups, lr=lr, betas=betas)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, max_grad_norm=max_grad_norm)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


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


class CosineWeightDecay(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR that also anneals the weight decay of every group that has one, along a half
    cosine from its value at the start to `weight_decay_end` at the last step (SparK's `wd` ->
    `wde`, `utils/lr_control.py`: step i of n has `end + (start - end) x (1 + cos(pi i / (n - 1))) / 2`).
    The decay follows the schedule's own step count, so a loaded state gives it back exactly;
    groups without weight decay keep none."""

    def __init__(self, optimizer, lr_lambda, *, total_steps: int, weight_decay_end: float):
        self.total_steps, self.weight_decay_end = total_steps, weight_decay_end
        for group in optimizer.param_groups:
            group.setdefault("initial_weight_decay", group["weight_decay"])
        super().__init__(optimizer, lr_lambda)

    def weight_decay_at(self, start: float, step: int) -> float:
        if start == 0:
            return 0.0
        progress = min(1.0, step / max(1, self.total_steps - 1))
        return self.weight_decay_end + (start - self.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * progress))

    def step(self, epoch=None):
        super().step(epoch)
        for group in self.optimizer.param_groups:
            group["weight_decay"] = self.weight_decay_at(group["initial_weight_decay"], self.last_epoch)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0, weight_decay_end: float | None = None):
    """LambdaLR: linear warm-up to the base lr, then half-cosine down to `min_lr_ratio` of it.
    Groups with an `lr_scale` (layer decay) are scaled by it. With `weight_decay_end`, the weight
    decay is annealed too (`CosineWeightDecay`)."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    lambdas = [lambda s, k=k: factor(s) * k for k in scales]
    if weight_decay_end is None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return CosineWeightDecay(optimizer, lambdas, total_steps=total_steps, weight_decay_end=weight_decay_end)
