"""MAE's per-sample random masking, driven by an explicit `noise` tensor, and the one check of a
`bool_masked_pos` argument (SimMIM, CAE)."""

from __future__ import annotations

import torch


def random_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the patches to keep from `noise` [B, L], exactly as MAE's `random_masking`.

    The `int(L * (1 - mask_ratio))` patches with the LOWEST noise are kept, in ascending-noise
    order. Returns `(ids_keep [B, K], mask [B, L] with 1 = masked, ids_restore [B, L])`; gathering
    `[kept tokens, mask tokens]` with `ids_restore` puts every token back in its original place.
    """
    if noise.dim() != 2:
        raise ValueError(f"noise must be [batch, num_patches], got shape {tuple(noise.shape)}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    batch, length = noise.shape
    len_keep = int(length * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch out of {length}")
    ids_shuffle = torch.argsort(noise, dim=1)
    # the inverse permutation by one scatter (MAE: a second argsort), and the mask as "ranked past
    # the kept ones" (MAE: ones, zeroed, gathered): the same tensors, 1.5x faster at batch 64 on CPU
    ranks = torch.arange(length, device=noise.device).expand(batch, length)
    ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, ranks)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = (ids_restore >= len_keep).to(torch.float32)
    return ids_keep, mask, ids_restore


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens [B, L, D] gathered along L by ids [B, K] -> [B, K, D]."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def flat_bool_mask(bool_masked_pos: torch.Tensor, batch: int, grid: tuple[int, int]) -> torch.Tensor:
    """A `bool_masked_pos` argument (True = masked) as [B, L] bool: given [B, L] or [B, h, w] on the
    model's patch grid (flattened row-major); any other shape is refused naming both."""
    length = grid[0] * grid[1]
    if tuple(bool_masked_pos.shape) not in ((batch, length), (batch, grid[0], grid[1])):
        raise ValueError(
            f"bool_masked_pos must be [batch, num_patches] = [{batch}, {length}] or [{batch}, {grid[0]}, {grid[1]}] "
            f"(model-patch resolution), got {tuple(bool_masked_pos.shape)}"
        )
    return bool_masked_pos.reshape(batch, length).bool()
