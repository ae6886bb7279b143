"""ConvMAE's hybrid backbone (Alpha-VL/ConvMAE `vision_transformer.py`, `models_convmae.py`):
two convolutional stages with masked convolution, then a patch embedding into the transformer
stage, and the multi-scale fusion of the stage outputs into the pre-training latent.

Stage sizes follow from the config (`patch_size`, `conv_patch_sizes`), never from 224: for an
H x W image the stage maps are H/p1 x W/p1 and H/(p1 p2) x W/(p1 p2), the token grid is
H/patch_size x W/patch_size, and the token mask is upsampled to each map by repetition (the
original's reshape-repeat-permute, a nearest-neighbour upsampling).
"""

from __future__ import annotations

import torch
from torch import nn

from ...layers import DropPath, get_2d_sincos_pos_embed, interpolate_pos_embed
from ...layers.patch_embed import to_2tuple
from ...layers.block import drop_path_rates
from .configuration_mr_mae import MRMAEConfig


class ChannelsLastLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map (ConvMAE permutes to channels-last)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvPatchEmbed(nn.Module):
    """Strided convolution -> LayerNorm (channels) -> GELU (ConvMAE's `PatchEmbed`)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int, eps: float):
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.norm = ChannelsLastLayerNorm(hidden_size, eps=eps)
        self.act = nn.GELU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.projection(hidden_states)))


class ConvMLP(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv (ConvMAE's `CMlp`)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Conv2d(hidden_size, intermediate_size, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(intermediate_size, hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class ConvBlock(nn.Module):
    """ConvMAE's `CBlock`: x + conv2(dwconv(keep * conv1(norm1(x)))), then x + mlp(norm2(x)).

    `keep` [B, 1, H, W] (1 = visible) is the masked convolution of pre-training: masked regions
    are zeroed before the depthwise convolution so that no information leaks from them.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, *, kernel_size: int = 5, eps: float = 1e-5, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = ChannelsLastLayerNorm(hidden_size, eps=eps)
        self.conv1 = nn.Conv2d(hidden_size, hidden_size, 1)
        self.dwconv = nn.Conv2d(hidden_size, hidden_size, kernel_size, padding=kernel_size // 2, groups=hidden_size)
        self.conv2 = nn.Conv2d(hidden_size, hidden_size, 1)
        self.norm2 = ChannelsLastLayerNorm(hidden_size, eps=eps)
        self.mlp = ConvMLP(hidden_size, intermediate_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        mixed = self.conv1(self.norm1(hidden_states))
        if keep is not None:
            mixed = keep * mixed
        hidden_states = hidden_states + self.drop_path(self.conv2(self.dwconv(mixed)))
        return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))


class ConvStage(nn.Module):
    """A convolutional stage: patch embedding then CBlocks."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int, intermediate_size: int, depth: int, *,
                 kernel_size: int, eps: float, drop_paths: list[float]):
        super().__init__()
        self.patch_embed = ConvPatchEmbed(patch_size, in_channels, hidden_size, eps)
        self.blocks = nn.ModuleList(
            ConvBlock(hidden_size, intermediate_size, kernel_size=kernel_size, eps=eps, drop_path=rate) for rate in drop_paths[:depth]
        )

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = self.patch_embed(hidden_states)
        for block in self.blocks:
            hidden_states = block(hidden_states, keep)
        return hidden_states


def upsample_mask(mask: torch.Tensor, grid: tuple[int, int], factor: int) -> torch.Tensor:
    """Token mask [B, h*w] (1 = masked) -> keep map [B, 1, h*factor, w*factor] (1 = visible)."""
    keep = 1 - mask.reshape(mask.shape[0], 1, grid[0], grid[1])
    return keep.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def stage_drop_paths(config: MRMAEConfig) -> tuple[list[float], list[float], list[float]]:
    """Stochastic-depth rates rising over all blocks of the three stages (ConvViT's rule)."""
    depths = [*config.conv_depths, config.num_hidden_layers]
    total = sum(depths)
    rates = drop_path_rates(config.drop_path_rate, total)
    first, second = depths[0], depths[0] + depths[1]
    return rates[:first], rates[first:second], rates[second:]


class ConvViTEmbeddings(nn.Module):
    """Stages 1-2 (convolutional), the stage-3 patch embedding + `patch_proj` (ConvMAE's
    `patch_embed4`), positions, the optional cls token and the optional multi-scale fusion.

    Called with `mask` [B, L] (1 = masked) it runs the pre-training path: masked convolution in
    stages 1-2 and (with fusion) the projections of both stage maps onto the token grid.
    """

    num_stem_stages = 3  # conv1, conv2, then the token stem (`_feature_stages` before the first block)

    def __init__(self, config: MRMAEConfig, add_fusion: bool):
        super().__init__()
        self.config = config
        c1, c2 = config.conv_hidden_sizes
        p1, p2 = config.conv_patch_sizes
        p3 = config.stage3_patch_size
        self.image_size = to_2tuple(config.image_size)
        self.patch_size = config.patch_size
        self.grid_size = (self.image_size[0] // config.patch_size, self.image_size[1] // config.patch_size)
        self.factors = (p2 * p3, p3)  # token grid -> stage-1 / stage-2 map
        rates1, rates2, _ = stage_drop_paths(config)
        common = dict(kernel_size=config.conv_kernel_size, eps=config.conv_layer_norm_eps)
        self.stages = nn.ModuleList([
            ConvStage(p1, config.num_channels, c1, config.conv_intermediate_sizes[0], config.conv_depths[0], drop_paths=rates1, **common),
            ConvStage(p2, c1, c2, config.conv_intermediate_sizes[1], config.conv_depths[1], drop_paths=rates2, **common),
        ])
        self.patch_embed = ConvPatchEmbed(p3, c2, config.hidden_size, config.conv_layer_norm_eps)
        self.patch_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.num_prefix_tokens = 1 if config.use_cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_cls_token else None
        table = get_2d_sincos_pos_embed(config.hidden_size, self.grid_size, cls_token=config.use_cls_token)
        self.pos_embed = nn.Parameter(table.unsqueeze(0))
        if add_fusion:
            self.fusion = nn.ModuleList([
                nn.Conv2d(c1, config.hidden_size, self.factors[0], stride=self.factors[0]),
                nn.Conv2d(c2, config.hidden_size, self.factors[1], stride=self.factors[1]),
            ])
        else:
            self.fusion = None
        for module in [*self.stages.modules(), *(self.fusion or [])]:
            if isinstance(module, nn.Conv2d):
                module.torch_default_init = True  # see MRMAEPreTrainedModel._init_weights

    def check_input(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> tuple[int, int]:
        """Validate `pixel_values` [B, C, H, W]; return the token grid."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [batch, channels, height, width], got shape {tuple(pixel_values.shape)}")
        _, channels, height, width = pixel_values.shape
        if channels != self.config.num_channels:
            raise ValueError(f"pixel_values has {channels} channels but the model expects num_channels={self.config.num_channels}")
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p} "
                             f"(conv stages {self.config.conv_patch_sizes} x stage-3 patch {self.config.stage3_patch_size})")
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(f"image size {height}x{width} does not match the model's {self.image_size[0]}x{self.image_size[1]}; "
                             "resize it (the image processor does) or pass interpolate_pos_encoding=True")
        return height // p, width // p

    @staticmethod
    def transformer_drop_path_rates(config: MRMAEConfig) -> list[float]:
        """The transformer stage's share of the rates rising over all three stages."""
        return stage_drop_paths(config)[2]

    def input_embeddings(self) -> nn.Module:
        return self.stages[0].patch_embed

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, grid, num_prefix_tokens=self.num_prefix_tokens, old_grid=self.grid_size)

    def forward(self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                output_stage_maps: bool = False):
        """Returns (patch tokens with positions [B, L, D], cls token with position [B, 1, D] or
        None, the fused stage features [[B, L, D], [B, L, D]] or None, and with
        `output_stage_maps` the convolution stages' outputs ([B, C1, H/p1, W/p1],
        [B, C2, H/(p1 p2), W/(p1 p2)]), else None)."""
        grid = self.check_input(pixel_values, interpolate_pos_encoding)
        dtype = self.patch_proj.weight.dtype
        hidden = pixel_values.to(dtype)
        keeps = (None, None)
        if mask is not None:
            keeps = tuple(upsample_mask(mask, grid, f).to(dtype) for f in self.factors)
        # convolutional stages (masked convolution in pre-training)
        maps = []
        for stage, keep in zip(self.stages, keeps):
            hidden = stage(hidden, keep)
            maps.append(hidden)
        # multi-scale fusion: both stage maps projected onto the token grid
        fused = None
        if mask is not None and self.fusion is not None:
            fused = [conv(m).flatten(2).transpose(1, 2) for conv, m in zip(self.fusion, maps)]
        # tokens of the transformer stage
        tokens = self.patch_proj(self.patch_embed(hidden).flatten(2).transpose(1, 2))
        pos = self.position_table(grid)
        tokens = tokens + pos[:, self.num_prefix_tokens:]
        cls = None
        if self.cls_token is not None:
            cls = (self.cls_token + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        return tokens, cls, fused, tuple(maps) if output_stage_maps else None


__all__ = ["ConvViTEmbeddings", "ConvBlock", "ConvPatchEmbed", "ConvStage", "upsample_mask", "stage_drop_paths"]
