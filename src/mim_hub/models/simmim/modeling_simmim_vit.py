"""SimMIM's ViT encoder (BEiT's ViT, microsoft/SimMIM `models/vision_transformer.py`).

No absolute positions by default, a relative position bias (one table shared by every block in
pre-training, one per block in fine-tuning, each with three cls entries), layer scale, learned
q/v biases with a zero k bias, and mean pooling + `fc_norm` in fine-tuning.

The architecture interface `SimMIMModel` relies on (`modeling_simmim_swin.py` has the other):
`num_prefix_tokens`, `head_init_scale`, `final_norms`, `shared_relative_position_bias`,
`forward(tokens, grid, shared_bias, **kwargs)` (`shared_bias`: the bias tensor of the
model's shared table), `output_grid`, `pool`, `layer_id`, `feature_stages`,
`expand_relative_position_bias`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...layers import PatchEmbedding, ViTEncoder, interpolate_pos_embed
from ...layers.relative_position import RelativePositionBias
from ..features import FeatureStage
from ..modeling_common import MIMPreTrainedModel, vit_blocks
from .configuration_simmim import SimMIMConfig


class SimMIMViTEmbeddings(nn.Module):
    """Patch embedding, SimMIM's mask-token substitution, cls token, optional absolute positions."""

    def __init__(self, config: SimMIMConfig, use_mask_token: bool = True):
        super().__init__()
        self.patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        if config.use_absolute_position_embeddings:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, config.hidden_size))
        else:
            self.pos_embed = None

    def forward(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False):
        tokens, grid = self.patch_embed(pixel_values, interpolate_pos_encoding, return_grid=True)
        # mask tokens replace the masked patches
        if bool_masked_pos is not None:
            w = bool_masked_pos.reshape(tokens.shape[0], -1).unsqueeze(-1).to(tokens.dtype)
            tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        # cls token, positions
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        if self.pos_embed is not None:
            tokens = tokens + interpolate_pos_embed(self.pos_embed, grid, old_grid=self.patch_embed.grid_size)
        return tokens, grid


class SimMIMViTEncoder(ViTEncoder):
    """BEiT's blocks (`layers`), each with its own relative position table in fine-tuning; the
    table shared by all blocks (pre-training) belongs to the model (`relative_position_bias`)."""

    num_prefix_tokens = 1  # the cls token
    head_init_scale = 1e-3  # BEiT's init_scale of the classifier head

    def __init__(self, config: SimMIMConfig, grid: tuple[int, int]):
        blocks = vit_blocks(config, qkv_bias="qv" if config.qkv_bias else False, layer_scale_init_value=config.layer_scale_init_value)
        if config.use_relative_position_bias:  # one table per block (fine-tuning)
            for block in blocks:
                block.relative_position_bias = RelativePositionBias(grid, config.num_attention_heads)
        super().__init__(blocks)
        self.per_block_bias = config.use_relative_position_bias

    @staticmethod
    def final_norms(config: SimMIMConfig, add_pooling_layer: bool) -> tuple[bool | None, bool]:
        """(add_final_norm, add_pooling_layer): the final norm unless mean pooling + `fc_norm`."""
        return None, add_pooling_layer

    @staticmethod
    def shared_relative_position_bias(config: SimMIMConfig, grid: tuple[int, int]) -> RelativePositionBias | None:
        return RelativePositionBias(grid, config.num_attention_heads) if config.use_shared_relative_position_bias else None

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], shared_bias: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """`shared_bias`: [heads, N, N] from the model's shared table (pre-training), or None;
        with per-block tables each block gets its own (+ the shared one)."""
        bias = shared_bias
        if self.per_block_bias:
            def bias(index: int) -> torch.Tensor:
                own = self.layers[index].relative_position_bias(grid)
                return own if shared_bias is None else own + shared_bias
        return super().forward(tokens, attention_bias=bias, **kwargs)

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return tuple(grid)

    @staticmethod
    def pool(hidden: torch.Tensor, fc_norm: nn.Module | None) -> torch.Tensor:
        """`fc_norm` of the mean patch token with mean pooling, else the cls token."""
        return fc_norm(hidden[:, 1:].mean(dim=1)) if fc_norm is not None else hidden[:, 0]

    @staticmethod
    def layer_id(name: str) -> int | None:
        """1 + the block's index for a parameter of block i (layer-wise lr decay), else None."""
        match = MIMPreTrainedModel._layer_pattern.search(name)
        return int(match.group(1)) + 1 if match else None

    def feature_stages(self, hidden_states: tuple[torch.Tensor, ...], grid: tuple[int, int]) -> list[FeatureStage]:
        """The embeddings, then every block, on the patch grid."""
        return [FeatureStage(h, grid, self.num_prefix_tokens) for h in hidden_states]

    @torch.no_grad()
    def expand_relative_position_bias(self, shared: RelativePositionBias) -> None:
        """Give every block its own table, starting as a copy of `shared` (plus the block's own,
        where it has one), as the original's `load_pretrained` does."""
        table = shared.relative_position_bias_table
        for layer in self.layers:
            own = RelativePositionBias(shared.window_size, shared.num_heads).to(device=table.device, dtype=table.dtype)
            previous = getattr(layer, "relative_position_bias", None)
            own.relative_position_bias_table.copy_(table if previous is None else table + previous.relative_position_bias_table)
            layer.relative_position_bias = own
        self.per_block_bias = True


__all__ = ["SimMIMViTEmbeddings", "SimMIMViTEncoder"]
