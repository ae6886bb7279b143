"""SparK's ResNet encoder: timm 0.5.4's `ResNet` (the layout and key names of the released
`resnet{50,101,152,200}_1kpretrained_timm_style.pth`), every layer masked-aware (`sparse.py`).

Stem: 7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pooling. Stages `layer1`..`layer4` (strides 4, 8,
16, 32) of bottleneck (1x1, 3x3 with the stride, 1x1 to 4x the inner width) or basic (two 3x3)
blocks; the shortcut is a 1x1 conv + BatchNorm where the shape changes. BatchNorm eps 1e-5.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...layers.block import DropPath, drop_path_rates
from .configuration_spark import SparKConfig
from .sparse import MaskedBatchNorm2d, MaskedConv2d, MaskedMaxPool2d, MaskedSequential, VisibleMask


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> MaskedConv2d:
    return MaskedConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, init_mode="kaiming")


class EncoderStage(MaskedSequential):
    """One resolution's blocks (its output is a recorded hidden state)."""


class ResNetBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_path: float):
        super().__init__()
        width = cout // 4
        self.conv1, self.bn1 = _conv(cin, width, 1), MaskedBatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), MaskedBatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), MaskedBatchNorm2d(cout, zero_init=True)
        self.downsample = shortcut(cin, cout, stride)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x, mask)
        x = torch.relu(self.bn1(self.conv1(x, mask), mask))
        x = torch.relu(self.bn2(self.conv2(x, mask), mask))
        x = self.bn3(self.conv3(x, mask), mask)
        return torch.relu(self.drop_path(x) + residual)


class ResNetBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_path: float):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, 3, stride), MaskedBatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 3), MaskedBatchNorm2d(cout, zero_init=True)
        self.downsample = shortcut(cin, cout, stride)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: VisibleMask | None = None) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x, mask)
        x = torch.relu(self.bn1(self.conv1(x, mask), mask))
        x = self.bn2(self.conv2(x, mask), mask)
        return torch.relu(self.drop_path(x) + residual)


def shortcut(cin: int, cout: int, stride: int) -> MaskedSequential | None:
    """timm's `downsample`: 1x1 conv (with the stride) + BatchNorm where the shape changes."""
    if stride == 1 and cin == cout:
        return None
    return MaskedSequential(_conv(cin, cout, 1, stride), MaskedBatchNorm2d(cout))


BLOCKS = {"bottleneck": ResNetBottleneck, "basic": ResNetBasicBlock}


class SparKResNetEncoder(nn.Module):
    """timm's ResNet without its head; `forward` returns the stem's output and the four stages' maps."""

    pooled_norm = False  # timm's ResNet pools straight into the head

    def __init__(self, config: SparKConfig):
        super().__init__()
        self.conv1 = MaskedConv2d(config.num_channels, config.embedding_size, 7, stride=2, padding=3, bias=False, init_mode="kaiming")
        self.bn1 = MaskedBatchNorm2d(config.embedding_size)
        self.maxpool = MaskedMaxPool2d(kernel_size=3, stride=2, padding=1)
        rates = iter(drop_path_rates(config.drop_path_rate, config.num_hidden_layers))
        block, cin = BLOCKS[config.layer_type], config.embedding_size
        for index, (depth, cout) in enumerate(zip(config.depths, config.hidden_sizes)):
            stride = 1 if index == 0 else 2
            blocks = [block(cin if j == 0 else cout, cout, stride if j == 0 else 1, next(rates)) for j in range(depth)]
            self.add_module(f"layer{index + 1}", EncoderStage(*blocks))
            cin = cout

    @property
    def stages(self) -> list[EncoderStage]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, pixel_values: torch.Tensor, mask: VisibleMask | None = None) -> list[torch.Tensor]:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(pixel_values, mask), mask)), mask)
        features = [x]
        for stage in self.stages:
            x = stage(x, mask)
            features.append(x)
        return features

    @staticmethod
    def _decay_blocks(config: SparKConfig) -> tuple[int, int]:
        """Blocks of stages 2 and 3 that share an lr-decay layer (the original's table for the
        released depths; one block per layer otherwise)."""
        known = {(4, 6): (2, 3), (4, 23): (2, 3), (8, 36): (4, 4), (24, 36): (4, 4), (30, 48): (5, 6)}
        return known.get((config.depths[1], config.depths[2]), (1, 1))

    @classmethod
    def num_layers_for_decay(cls, config: SparKConfig) -> int:
        """N + 1 of `resnets_get_layer_id_and_scale_exp` (downstream_imagenet/models/__init__.py): the head's id."""
        per2, per3 = cls._decay_blocks(config)
        return 2 + math.ceil(config.depths[1] / per2 - 1e-5) + math.ceil(config.depths[2] / per3 - 1e-5) + 1

    @classmethod
    def layer_id(cls, name: str, config: SparKConfig) -> int:
        """The original's lr-decay layer of an encoder parameter (`name` relative to the encoder):
        0 for the stem, 1 for layer1, then groups of blocks, N for layer4."""
        per2, per3 = cls._decay_blocks(config)
        last = cls.num_layers_for_decay(config) - 1
        if not name.startswith("layer"):
            return 0
        stage, block = int(name[5]), int(name.split(".")[1])
        if stage == 1:
            return 1
        if stage == 2:
            return 2 + block // per2
        if stage == 3:
            return 2 + math.ceil(config.depths[1] / per2 - 1e-5) + block // per3
        return last


__all__ = ["SparKResNetEncoder", "ResNetBottleneck", "ResNetBasicBlock", "EncoderStage"]
