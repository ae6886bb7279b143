"""SimMIM's Swin Transformer encoder (Swin-V1, microsoft/SimMIM `models/swin_transformer.py`),
with the architecture interface `SimMIMModel` relies on (see `modeling_simmim_vit.py`).

Shifted-window attention is the shared `Attention` with an additive bias: the window's relative
position bias, plus the -100 mask between regions that the cyclic shift brought together. A stage
whose resolution is not larger than the window attends over the whole stage (window = resolution,
no shift), as the original. A stage that is not a whole number of windows, and an odd stage before
patch merging, are zero-padded as transformers' Swin pads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ...layers import MLP, DropPath, PatchEmbedding, interpolate_pos_embed
from ...layers.attention import Attention
from ...layers.relative_position import RelativePositionBias
from ...layers.block import drop_path_rates
from ..features import FeatureStage
from .configuration_simmim import SimMIMConfig


def window_partition(hidden: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, window * window, C], windows in row-major order per image."""
    batch, height, width, channels = hidden.shape
    hidden = hidden.view(batch, height // window, window, width // window, window, channels)
    return hidden.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nW, window * window, C] -> [B, H, W, C]."""
    channels = windows.shape[-1]
    hidden = windows.view(-1, height // window, width // window, window, window, channels)
    return hidden.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """[nW, N, N] additive mask (0 within a region, -100 across regions) for a cyclic shift."""
    regions = torch.zeros(1, height, width, 1, device=device)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, rows, cols, :] = count
            count += 1
    windows = window_partition(regions, window).squeeze(-1)  # [nW, N]
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class SwinWindowAttention(Attention):
    """`Attention` over the windows of a batch: scores get the relative position bias [heads, N, N]
    and, in shifted blocks, the region mask [nW, N, N] (broadcast over the images)."""

    def forward(self, windows: torch.Tensor, attention_bias: torch.Tensor | None = None, num_windows: int = 1, **kwargs):
        q, k, v = self.project_qkv(windows)  # [B*nW, heads, N, d]
        total, heads, length, dim = q.shape
        if attention_bias is not None and attention_bias.dim() == 4 and num_windows > 1:
            # fold each image's windows into the head axis: the [nW, heads, N, N] bias then
            # broadcasts over the batch as [1, nW * heads, N, N] (4-D, no copy: fused SDPA kernels)
            shape = (-1, num_windows * heads, length, dim)
            bias = attention_bias.reshape(1, num_windows * heads, length, length)
            out, weights = self.attend(q.reshape(shape), k.reshape(shape), v.reshape(shape), bias, **kwargs)
            # [B, N, nW * heads, d] -> [B * nW, N, heads * d]
            out = out.reshape(-1, length, num_windows, heads * dim).transpose(1, 2)
            weights = weights.reshape(total, heads, length, length) if weights is not None else None
        else:
            out, weights = self.attend(q, k, v, attention_bias, **kwargs)
        out = out.reshape(total, length, heads * dim)
        return self.proj_dropout(self.o_proj(out)), weights


class SwinBlock(GradientCheckpointingLayer):
    """x + attn(norm1(x)) over (shifted) windows, then x + mlp(norm2(x))."""

    def __init__(self, config: SimMIMConfig, dim: int, num_heads: int, resolution: tuple[int, int], shift: bool, drop_path: float):
        super().__init__()
        self.resolution = resolution
        window = config.window_size
        shift_size = window // 2 if shift else 0
        if min(resolution) <= window:  # the stage fits in one window
            window, shift_size = min(resolution), 0
        self.window_size = window
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = SwinWindowAttention(
            dim, num_heads, qkv_bias=config.qkv_bias, attention_dropout=config.attention_probs_dropout_prob,
            proj_dropout=config.hidden_dropout_prob,
        )
        self.relative_position_bias = RelativePositionBias(window, num_heads, cls_token=False)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = MLP(dim, int(dim * config.mlp_ratio), config.hidden_act, dropout=config.hidden_dropout_prob)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._mask_cache: dict = {}

    def region_mask(self, height: int, width: int, device) -> torch.Tensor:
        key = (height, width, str(device))
        if key not in self._mask_cache:
            self._mask_cache = {key: shifted_window_mask(height, width, self.window_size, self.shift_size, device)}
        return self._mask_cache[key]

    def forward(self, hidden: torch.Tensor, resolution: tuple[int, int], **kwargs):
        height, width = resolution
        batch, length, channels = hidden.shape
        window, shift = self.window_size, self.shift_size
        shortcut = hidden
        hidden = self.norm1(hidden).view(batch, height, width, channels)
        # a stage that is not a whole number of windows is zero-padded at the bottom and right
        # after the norm, and cropped back after attention (transformers' SwinLayer.maybe_pad)
        pad_bottom, pad_right = -height % window, -width % window
        if pad_bottom or pad_right:
            hidden = F.pad(hidden, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_height, padded_width = height + pad_bottom, width + pad_right
        # cyclic shift, windows
        if shift:
            hidden = torch.roll(hidden, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(hidden, window)
        bias = self.relative_position_bias().to(windows.dtype)  # [heads, N, N]
        num_windows = (padded_height // window) * (padded_width // window)
        if shift:
            bias = bias.unsqueeze(0) + self.region_mask(padded_height, padded_width, windows.device).unsqueeze(1).to(windows.dtype)
        attended, weights = self.attn(windows, attention_bias=bias, num_windows=num_windows, **kwargs)
        # merge windows, reverse the shift, drop the padding
        hidden = window_reverse(attended, window, padded_height, padded_width)
        if shift:
            hidden = torch.roll(hidden, shifts=(shift, shift), dims=(1, 2))
        if pad_bottom or pad_right:
            hidden = hidden[:, :height, :width]
        hidden = shortcut + self.drop_path(hidden.reshape(batch, length, channels))
        hidden = hidden + self.drop_path(self.mlp(self.norm2(hidden)))
        return hidden, weights


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (order [0::2,0::2], [1::2,0::2], [0::2,1::2],
    [1::2,1::2]), normalised, and projected from 4C to 2C without bias."""

    def __init__(self, dim: int, layer_norm_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=layer_norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, hidden: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        """[B, h*w, C] -> [B, ceil(h/2)*ceil(w/2), 2C]; an odd side is zero-padded first (transformers'
        SwinPatchMerging.maybe_pad)."""
        height, width = resolution
        batch, _, channels = hidden.shape
        hidden = hidden.view(batch, height, width, channels)
        if height % 2 or width % 2:
            hidden = F.pad(hidden, (0, 0, 0, width % 2, 0, height % 2))
        merged = torch.cat(
            [hidden[:, 0::2, 0::2], hidden[:, 1::2, 0::2], hidden[:, 0::2, 1::2], hidden[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(merged.view(batch, -1, 4 * channels)))


class SwinStage(nn.Module):
    """The blocks of one resolution (shift on every second block), then patch merging."""

    def __init__(self, config: SimMIMConfig, stage: int, resolution: tuple[int, int], drop_paths: list[float]):
        super().__init__()
        dim = config.embed_dim * 2**stage
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            SwinBlock(config, dim, config.num_heads[stage], resolution, shift=index % 2 == 1, drop_path=rate)
            for index, rate in enumerate(drop_paths)
        )
        last = stage == len(config.depths) - 1
        self.downsample = None if last else PatchMerging(dim, config.layer_norm_eps)


class SwinEncoder(nn.Module):
    """The stages (`layers`); the model records each block's output and attention weights."""

    num_prefix_tokens = 0  # no cls token
    head_init_scale = None  # the classifier head keeps the model's init

    def __init__(self, config: SimMIMConfig, grid: tuple[int, int]):
        super().__init__()
        self.depths = list(config.depths)
        rates = drop_path_rates(config.drop_path_rate, sum(config.depths))
        self.layers = nn.ModuleList()
        start = 0
        for stage, depth in enumerate(config.depths):
            resolution = (grid[0] // 2**stage, grid[1] // 2**stage)
            self.layers.append(SwinStage(config, stage, resolution, rates[start:start + depth]))
            start += depth

    @staticmethod
    def final_norms(config: SimMIMConfig, add_pooling_layer: bool) -> tuple[bool | None, bool]:
        """(add_final_norm, add_pooling_layer): Swin always norms its last stage; no `fc_norm`."""
        return True, False

    @staticmethod
    def shared_relative_position_bias(config: SimMIMConfig, grid: tuple[int, int]) -> None:
        """Swin's tables are per block (in its window attention): the model holds none."""
        return None

    def forward(self, hidden: torch.Tensor, grid: tuple[int, int], shared_bias: None = None, **kwargs) -> torch.Tensor:
        """The last stage's tokens [B, h'*w', C'] (on `output_grid(grid)`); `shared_bias` is always
        None (see `shared_relative_position_bias`)."""
        resolution = tuple(grid)
        for stage in self.layers:
            for block in stage.blocks:
                hidden = block(hidden, resolution, **kwargs)[0]
            if stage.downsample is not None:
                hidden = stage.downsample(hidden, resolution)
                resolution = ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)
        return hidden

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The last stage's resolution for an input patch grid (each merging halves it, rounding up)."""
        resolution = tuple(grid)
        for _ in self.layers[:-1]:
            resolution = ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)
        return resolution

    @staticmethod
    def pool(hidden: torch.Tensor, fc_norm: None = None) -> torch.Tensor:
        """The mean token of the normed last stage (SimMIM's Swin `avgpool`)."""
        return hidden.mean(dim=1)

    def layer_id(self, name: str) -> int | None:
        return swin_layer_id(name, self.depths)

    def feature_stages(self, hidden_states: tuple[torch.Tensor, ...], grid: tuple[int, int]) -> list[FeatureStage]:
        """The embeddings, then each stage's last block (before its patch merging) at the stage's resolution."""
        stages = [FeatureStage(hidden_states[0], grid)]
        end = 0
        for stage, depth in enumerate(self.depths):
            end += depth
            stages.append(FeatureStage(hidden_states[end], (grid[0] // 2**stage, grid[1] // 2**stage)))
        return stages

    def expand_relative_position_bias(self, shared) -> None:
        raise ValueError("expand_relative_position_bias needs a ViT with a shared relative position table")


class SwinEmbeddings(nn.Module):
    """Patch embedding + LayerNorm (`patch_norm`), SimMIM's mask-token substitution, and the
    optional absolute position table (`ape`, no cls token)."""

    def __init__(self, config: SimMIMConfig, use_mask_token: bool = True):
        super().__init__()
        self.patch_embed = PatchEmbedding(config.image_size, config.patch_size, config.num_channels, config.embed_dim)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps) if config.patch_norm else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if use_mask_token else None
        if config.use_absolute_position_embeddings:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, config.embed_dim))
        else:
            self.pos_embed = None

    def forward(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False):
        tokens, grid = self.patch_embed(pixel_values, interpolate_pos_encoding, return_grid=True)
        if self.norm is not None:
            tokens = self.norm(tokens)
        # mask tokens replace the masked patches
        if bool_masked_pos is not None:
            w = bool_masked_pos.reshape(tokens.shape[0], -1).unsqueeze(-1).to(tokens.dtype)
            tokens = tokens * (1.0 - w) + self.mask_token.to(tokens.dtype) * w
        if self.pos_embed is not None:
            tokens = tokens + interpolate_pos_embed(self.pos_embed, grid, num_prefix_tokens=0, old_grid=self.patch_embed.grid_size)
        return tokens, grid


def swin_layer_id(name: str, depths: list[int]) -> int | None:
    """SimMIM's `get_swin_layer` for layer-wise lr decay: 0 for the embeddings, 1 + the block's
    global index for a block, the stage's last block index for its patch merging; None when the
    name is not in the encoder."""
    parts = name.split(".")
    if "layers" not in parts:
        return None
    at = parts.index("layers")
    if at + 1 >= len(parts) or not parts[at + 1].isdigit():
        return None
    stage = int(parts[at + 1])
    if at + 2 < len(parts) and parts[at + 2] == "downsample":
        return sum(depths[: stage + 1])
    if at + 3 < len(parts) and parts[at + 2] == "blocks" and parts[at + 3].isdigit():
        return sum(depths[:stage]) + int(parts[at + 3]) + 1
    return None


__all__ = ["SwinEmbeddings", "SwinEncoder", "SwinBlock", "SwinStage", "PatchMerging", "SwinWindowAttention", "window_partition", "window_reverse", "shifted_window_mask", "swin_layer_id"]
