"""MR-MAE's plain ViT stem: MAE's embeddings (shared, not copied), with the interface the
hybrid's `ConvViTEmbeddings` has (`modeling_convvit.py`), so that `MRMAEModel` runs either
without asking which it holds. A plain ViT has no convolution stages: nothing to mask or fuse."""

from __future__ import annotations

import torch
from torch import nn

from ...layers.block import drop_path_rates
from ..mae.modeling_mae import MAEEmbeddings
from .configuration_mr_mae import MRMAEConfig


class MRMAEViTEmbeddings(MAEEmbeddings):
    """Patch embedding + cls token + the fixed 2-D sin-cos table (MAE's)."""

    num_stem_stages = 1  # the token stem (`_feature_stages` before the first block)

    def __init__(self, config: MRMAEConfig, add_fusion: bool = False):
        super().__init__(config)  # (`add_fusion`: the hybrid's; a plain ViT has no stage maps to fuse)

    @staticmethod
    def transformer_drop_path_rates(config: MRMAEConfig) -> list[float]:
        return drop_path_rates(config.drop_path_rate, config.num_hidden_layers)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    def input_embeddings(self) -> nn.Module:
        return self.patch_embed

    def check_input(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        return self.patch_embed.check_input(pixel_values, interpolate_pos_encoding)

    def forward(self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                output_stage_maps: bool = False):
        """(patch tokens with positions [B, L, D], cls token with position [B, 1, D], None, None):
        the mask only selects tokens later, and there are no stage features or maps."""
        tokens, cls, _ = super().forward(pixel_values, interpolate_pos_encoding)
        return tokens, cls, None, None


__all__ = ["MRMAEViTEmbeddings"]
