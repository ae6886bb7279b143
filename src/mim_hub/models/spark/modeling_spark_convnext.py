"""SparK's ConvNeXt encoder: the official ConvNeXt (facebookresearch/ConvNeXt; the layout and
key names of the released `convnext{S,B,L}_1kpretrained_official_style.pth`), every layer
masked-aware (`sparse.py`).

`downsample_layers[0]` is the stem (4x4/4 conv, LayerNorm), `downsample_layers[1..3]` LayerNorm +
2x2/2 conv; `stages[i]` the blocks: 7x7 depthwise conv, LayerNorm (eps 1e-6), Linear to 4x, exact
GELU, Linear back, layer scale (`gamma`), residual. The masked path re-masks after the depthwise
conv and at the end of each block's branch, as the original.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ...layers.block import DropPath, drop_path_rates
from .configuration_spark import SparKConfig
from .modeling_spark_resnet import EncoderStage
from .sparse import MaskedConv2d, MaskedLayerNorm, MaskedSequential, VisibleMask


class ConvNeXtBlock(GradientCheckpointingLayer):
    """One block; recomputed in the backward pass under gradient checkpointing (it holds no
    BatchNorm, whose running statistics a recomputation would update twice: timm's ResNet blocks
    are therefore not checkpointed)."""

    def __init__(self, dim: int, drop_path: float, layer_scale_init_value: float, eps: float):
        super().__init__()
        self.dwconv = MaskedConv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = MaskedLayerNorm(dim, eps=eps, channels_first=False)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value))) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        residual = x
        x = self.dwconv(x, mask).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x, mask))))
        if self.gamma is not None:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        if mask is not None:
            x = mask.apply(x)
        return residual + self.drop_path(x)


class SparKConvNeXtEncoder(nn.Module):
    """The official ConvNeXt without its final norm and head; `forward` returns the stem's output and the four stages' maps."""

    pooled_norm = True  # its fine-tuning model norms the pooled feature (`norm`) before the head

    def __init__(self, config: SparKConfig):
        super().__init__()
        dims, eps = config.hidden_sizes, config.layer_norm_eps
        self.downsample_layers = nn.ModuleList([
            MaskedSequential(MaskedConv2d(config.num_channels, dims[0], kernel_size=4, stride=4), MaskedLayerNorm(dims[0], eps=eps))
        ])
        for index in range(1, len(dims)):
            self.downsample_layers.append(
                MaskedSequential(MaskedLayerNorm(dims[index - 1], eps=eps), MaskedConv2d(dims[index - 1], dims[index], kernel_size=2, stride=2))
            )
        rates = iter(drop_path_rates(config.drop_path_rate, config.num_hidden_layers))
        self.stages = nn.ModuleList([
            EncoderStage(*[ConvNeXtBlock(dim, next(rates), config.layer_scale_init_value, eps) for _ in range(depth)])
            for depth, dim in zip(config.depths, dims)
        ])

    def forward(self, pixel_values: torch.Tensor, mask: VisibleMask | None = None) -> list[torch.Tensor]:
        x, features = pixel_values, []
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = downsample(x, mask)
            if not features:  # the stem's output
                features.append(x)
            x = stage(x, mask)
            features.append(x)
        return features

    @staticmethod
    def num_layers_for_decay(config: SparKConfig) -> int:
        """N + 1 of `convnext_get_layer_id_and_scale_exp` (downstream_imagenet/models/__init__.py):
        N = 12 for the 27-block third stage, 6 for shallower ones (more where a third stage needs them)."""
        third = config.depths[2]
        return max(12 if third > 9 else 6, 4 + (third - 1) // 3) + 1

    @classmethod
    def layer_id(cls, name: str, config: SparKConfig) -> int:
        """The original's lr-decay layer of an encoder parameter (`name` relative to the encoder)."""
        last = cls.num_layers_for_decay(config) - 1
        parts = name.split(".")
        if parts[0] == "downsample_layers":
            stage = int(parts[1])
            return 0 if stage == 0 else stage + 1 if stage in (1, 2) else last
        if parts[0] == "stages":
            stage, block = int(parts[1]), int(parts[2])
            return stage + 1 if stage in (0, 1) else 3 + block // 3 if stage == 2 else last
        return last + 1


__all__ = ["SparKConvNeXtEncoder", "ConvNeXtBlock"]
