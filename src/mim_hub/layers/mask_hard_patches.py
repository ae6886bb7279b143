"""HPM's hard-patch masks (Haochen-Wang409/HPM, `generate_mask` in `models_mae_learn_loss.py`).

A teacher (HPM: the EMA of the model) predicts each patch's reconstruction loss on the unmasked
image. Of the `L - len_keep` patches to mask (`len_keep = int(L * (1 - mask_ratio))`, as MAE), the
`int((L - len_keep) * (epoch + 1) / total_epochs * max_hard_share)` with the highest predicted
loss are always masked (the "hard" ones, placed last in the shuffle, ascending loss); the other
patches are shuffled at random and fill the front, so the first `len_keep` of the shuffle stay
visible and the rest of the masked set is random. Before the first hard patch (early epochs, where
the count rounds to 0) the mask is plain random masking. `max_hard_share` is 0.5 in HPM.

The generator returns MAE-convention `noise` [B, L] (lowest kept) whose argsort is the original's
`ids_shuffle`, so `random_masking(noise, mask_ratio)` gives the original's mask and `ids_restore`.
The random part comes from an explicit source:
- `rng`: a `numpy.random.RandomState` (or the `numpy.random` module): one `shuffle` of the
  ascending non-hard ids per sample, in batch order, as the original (`np.random.seed(s)` then the
  original's calls is the stream of `RandomState(s)`); in the random branch, `generator` (a
  `torch.Generator`, default the global RNG) draws the original's `torch.randn(B, L)`;
- `noise` [B, L]: a draw per sample (e.g. `torch.rand`) that orders the non-hard patches (lowest
  first), and, in the random branch, is the masking noise itself. Training draws it per sample
  from the data pipeline's generator, so runs are reproducible and resumable.
"""

from __future__ import annotations

import numpy as np
import torch


def hard_patch_count(num_patches: int, mask_ratio: float, epoch: int | float, total_epochs: int | float, max_hard_share: float = 0.5) -> int:
    """How many of the masked patches are chosen by predicted loss at `epoch` (0-based) of
    `total_epochs`: `int((L - len_keep) * (epoch + 1) / total_epochs * max_hard_share)`. (A run
    shorter than its first epoch, `total_epochs` < 1, is at the end of the schedule: the share
    is at most `max_hard_share`.)"""
    len_keep = int(num_patches * (1 - mask_ratio))
    share = min(float((epoch + 1) / total_epochs), 1.0) * max_hard_share
    return max(0, int((num_patches - len_keep) * share))


class HardPatchMaskGenerator:
    """`gen(predicted_loss, epoch, *, noise=None, rng=None, generator=None)` -> noise [B, L]
    (lowest kept; see the module docstring). `predicted_loss` [B, L] is the teacher's per-patch
    prediction on the unmasked image, in patch order."""

    def __init__(self, mask_ratio: float = 0.75, total_epochs: int | float = 800, max_hard_share: float = 0.5):
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not total_epochs > 0:
            raise ValueError(f"total_epochs must be positive, got {total_epochs}")
        if not 0.0 <= max_hard_share <= 1.0:
            raise ValueError(f"max_hard_share must be in [0, 1], got {max_hard_share}")
        self.mask_ratio, self.total_epochs, self.max_hard_share = float(mask_ratio), total_epochs, float(max_hard_share)

    def num_hard(self, num_patches: int, epoch: int | float) -> int:
        return hard_patch_count(num_patches, self.mask_ratio, epoch, self.total_epochs, self.max_hard_share)

    @torch.no_grad()
    def __call__(self, predicted_loss: torch.Tensor, epoch: int | float, *, noise: torch.Tensor | None = None, rng=None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if predicted_loss.dim() != 2:
            raise ValueError(f"predicted_loss must be [batch, num_patches], got shape {tuple(predicted_loss.shape)}")
        if noise is not None and rng is not None:
            raise ValueError("give the random source once: noise or rng")
        batch, length = predicted_loss.shape
        device = predicted_loss.device
        if noise is not None and tuple(noise.shape) != (batch, length):
            raise ValueError(f"noise must be [batch, num_patches] = {(batch, length)}, got {tuple(noise.shape)}")
        if int(length * (1 - self.mask_ratio)) < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} keeps no patch out of {length}")
        num_hard = self.num_hard(length, epoch)
        # before the first hard patch: random masking (the original: argsort(torch.randn(B, L)))
        if num_hard <= 0:
            if noise is None:
                noise = torch.randn(batch, length, generator=generator, device="cpu" if generator is not None else device)
            return noise.to(device=device, dtype=torch.float32)
        # the hardest patches go last, in ascending order of predicted loss
        hard = torch.argsort(predicted_loss.float(), dim=1)[:, length - num_hard:]
        is_hard = torch.zeros(batch, length, dtype=torch.bool, device=device).scatter_(1, hard, True)
        if noise is not None:
            # the others in ascending-noise order (a uniformly random shuffle for i.i.d. noise), in front
            by_noise = torch.argsort(noise.to(device), dim=1)
            rest = torch.gather(by_noise, 1, torch.argsort(torch.gather(is_hard, 1, by_noise).to(torch.uint8), dim=1, stable=True))
            ids_shuffle = torch.cat([rest[:, : length - num_hard], hard], dim=1)
        else:
            # numpy's shuffle of the ascending non-hard ids, one sample after the other, as the original
            shuffle = (rng if rng is not None else np.random).shuffle
            hard_np, rest = hard.cpu().numpy(), []
            for row in range(batch):
                others = np.delete(np.arange(length), hard_np[row])
                shuffle(others)
                rest.append(torch.from_numpy(others))
            ids_shuffle = torch.cat([torch.stack(rest).to(device), hard], dim=1)
        # noise whose argsort is ids_shuffle: each patch's position in it
        ranks = torch.arange(length, device=device, dtype=torch.float32).expand(batch, length)
        return torch.empty(batch, length, device=device).scatter_(1, ids_shuffle, ranks)


__all__ = ["HardPatchMaskGenerator", "hard_patch_count"]
