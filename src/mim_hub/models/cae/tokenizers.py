"""Tokenizers that give CAE its target ids: the DALL-E dVAE encoder (the original's) or, when its
weights are not at hand, a weightless colour quantiser for demos and tests.

Any callable mapping images [B, C, H, W] in [0, 1] to ids [B, h, w] (or [B, h*w]) with
`h x w` = the model's patch grid works (`CAEForPreTraining.set_tokenizer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchColorTokenizer(nn.Module):
    """Token id of each patch = its quantised mean colour (`levels` steps per channel, ids in
    [0, levels**channels)). No weights: a stand-in target for offline demos, not a replacement
    for the dVAE."""

    def __init__(self, grid_size: tuple[int, int], vocab_size: int, num_channels: int = 3):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_channels = num_channels
        levels = 1
        while (levels + 1) ** num_channels <= vocab_size:
            levels += 1
        if levels < 2:
            raise ValueError(f"vocab_size {vocab_size} is too small to quantise {num_channels} channels")
        self.levels = levels
        self.vocab_size = vocab_size

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        means = F.adaptive_avg_pool2d(pixels.float().clamp(0, 1), self.grid_size)  # [B, C, h, w]
        steps = (means * self.levels).long().clamp(max=self.levels - 1)
        ids = torch.zeros_like(steps[:, 0])
        for c in range(steps.shape[1]):
            ids = ids * self.levels + steps[:, c]
        return ids


def tokenizer_input_size(tokenizer, grid_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Image size to feed `tokenizer` so that its token grid is the model's patch grid (the dVAE
    downsamples by 8: 112 px for a 14 x 14 grid)."""
    factor = getattr(tokenizer, "downsample", patch_size)
    return grid_size[0] * factor, grid_size[1] * factor


def load_tokenizer(spec: str | None, config):
    """`spec`: a path to the DALL-E `encoder.pkl` (or a state-dict file of it), or `color` / None
    for `PatchColorTokenizer`. The vocabulary must fit the model's `vocab_size`."""
    grid = (config.grid_size[0], config.grid_size[1])
    if spec in (None, "", "color"):
        return PatchColorTokenizer(grid, config.vocab_size, config.num_channels)
    from .tokenizer_dalle import DalleTokenizer

    tokenizer = DalleTokenizer.from_original(spec)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model predicts vocab_size={config.vocab_size}")
    return tokenizer


__all__ = ["PatchColorTokenizer", "load_tokenizer", "tokenizer_input_size"]
