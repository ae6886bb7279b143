"""MAE's linear-probe protocol (`mim-hub eval --protocol linear --probe mae`), as its
main_linprobe.py runs it (values and sources: `finetune_recipes.LINEAR_PROBE_MAE`):

- the head: BatchNorm1d without affine parameters (eps 1e-6), then a Linear layer initialised
  with a truncated normal of std 0.01 and zero bias, on frozen features (cls token by default);
- LARS (`optim.LARS`: SGD with momentum 0.9 whose update of every weight matrix is rescaled by
  trust x |w| / |update|; biases and other 1-D parameters get neither weight decay nor that
  rescaling), no weight decay;
- effective batch 16384, lr = 0.1 x effective batch / 256, 90 epochs, 10 of them linear warm-up,
  then a half-cosine to 0, set per iteration; gradient accumulation reaches the effective batch
  when the per-step batch is smaller.

Differences, stated: the features are computed once, without MAE's per-epoch RandomResizedCrop
and flip; on a dataset smaller than the effective batch the effective batch is the dataset (one
step per epoch; otherwise no step would ever be taken), and the lr follows it.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .optim import LARS

logger = logging.getLogger("mim_hub.eval")


def lr_at(epoch: float, *, lr: float, epochs: float, warmup_epochs: float, min_lr: float = 0.0) -> float:
    """MAE's util/lr_sched.py: linear warm-up over `warmup_epochs`, then a half-cosine to
    `min_lr`; `epoch` is fractional (set at every iteration)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max(1e-12, epochs - warmup_epochs)))


def mae_linear_probe(train_x, train_y, test_x, test_y, *, effective_batch: int = 16384, batch_size: int = 512, base_lr: float = 0.1,
                     epochs: int = 90, warmup_epochs: int = 10, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """Train MAE's probe on frozen features; returns {"linear_mae": test accuracy, and the
    settings used: "linear_mae_lr", "linear_mae_effective_batch", "linear_mae_accumulation"}.
    `batch_size` is the per-step batch (memory); the accumulation makes up the effective batch."""
    train_x, test_x = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(test_x, dtype=torch.float32)
    train_y, test_y = torch.as_tensor(train_y), torch.as_tensor(test_y)
    if batch_size < 2:
        raise ValueError(f"the probe's per-step batch must be at least 2 (BatchNorm), got {batch_size}")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    effective = min(effective_batch, len(train_x))
    if effective < effective_batch:
        logger.info("MAE probe: %d training samples < effective batch %d; using %d (one step per epoch)", len(train_x), effective_batch, effective)
    batch_size = min(batch_size, effective)
    accumulation = max(1, effective // batch_size)
    effective = batch_size * accumulation
    lr = base_lr * effective / 256
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        nn.init.trunc_normal_(linear.weight, std=0.01, generator=generator)
        linear.bias.zero_()
    head = nn.Sequential(nn.BatchNorm1d(train_x.shape[1], affine=False, eps=1e-6), linear)
    optimizer = LARS(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train_x) // batch_size  # MAE's loader drops the last partial batch
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(train_x), generator=generator)
        optimizer.zero_grad()
        for step in range(steps_per_epoch):
            if step % accumulation == 0:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(epoch + step / steps_per_epoch, lr=lr, epochs=epochs, warmup_epochs=warmup_epochs)
            batch = order[step * batch_size:(step + 1) * batch_size]
            loss = nn.functional.cross_entropy(head(train_x[batch]), train_y[batch]) / accumulation
            loss.backward()
            if (step + 1) % accumulation == 0:
                optimizer.step()
                optimizer.zero_grad()
    head.eval()
    with torch.no_grad():
        accuracy = (head(test_x).argmax(-1) == test_y).float().mean().item()
    return {"linear_mae": accuracy, "linear_mae_lr": lr, "linear_mae_effective_batch": effective, "linear_mae_accumulation": accumulation}
