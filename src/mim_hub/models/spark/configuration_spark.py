"""SparK configuration (Tian et al., "Designing BERT for Convolutional Networks: Sparse and
Hierarchical Masked Modeling", ICLR 2023)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..validation import EPS, NON_NEGATIVE, POSITIVE, PROBABILITY, Choice, Float, MIMConfig, Rule, check_image_size

BACKBONES = ("resnet", "convnext")
# the downsampling of every SparK encoder: the mask lives on this grid (one cell = 32 x 32 pixels)
DOWNSAMPLE_RATIO = 32
# config.backbone -> the released base model's stage layout and numerics (pretrain/models/__init__.py,
# utils/arg_util.py): ResNet-50 and ConvNeXt-S
BACKBONE_DEFAULTS = {
    "resnet": {"depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048], "densify_norm": "bn"},
    "convnext": {"depths": [3, 3, 27, 3], "hidden_sizes": [96, 192, 384, 768], "densify_norm": "ln"},
}


@strict
class SparKConfig(MIMBackboneConfigMixin, MIMConfig):
    r"""Configuration of SparK: a convolutional encoder (ResNet or ConvNeXt, by `backbone`), run
    sparsely on masked images in pre-training, the densifying layers and the light UNet decoder,
    and the fine-tuning head.

    Fields left at `None` take the released model's value for the backbone: ResNet-50
    (`resnet50_1kpretrained_timm_style.pth`) or ConvNeXt-S (`convnextS_1kpretrained_official_style.pth`).

    Args:
        backbone: "resnet" (timm's ResNet) or "convnext" (the official ConvNeXt).
        image_size, num_channels: input geometry; every side a multiple of 32 (the mask's grid).
        depths: blocks per stage (transformers' `ResNetConfig` / `ConvNextConfig` name); 4 stages.
        hidden_sizes: each stage's output width, as transformers' configs (ResNet-50: 256, 512,
            1024, 2048, i.e. timm's `channels` x 4 for bottlenecks; ConvNeXt-S: 96, 192, 384, 768).
        layer_type: ResNet blocks, "bottleneck" (ResNet-50 and up) or "basic" (ResNet-18/34).
        embedding_size: ResNet stem width (7x7 conv, stride 2, then 3x3 max pooling).
        layer_scale_init_value: ConvNeXt layer scale's initial value (0: none).
        layer_norm_eps: ConvNeXt LayerNorm eps (1e-6, the original's); ResNet BatchNorm uses 1e-5.
        drop_path_rate: stochastic depth over all blocks, 0 by default (a training choice: the
            presets carry the original's pre-training values, ResNet-50 0.05, ConvNeXt-S 0.2; the
            fine-tuning recipes theirs).
        mask_ratio: share of the 1/32 grid masked in pre-training (`round(L * (1 - r))` kept).
        densify_norm: the norm of each encoder map before densifying, "bn" (ResNet), "ln"
            (ConvNeXt) or "none"; statistics from the visible positions only.
        decoder_hidden_size: the light decoder's width at 1/32 (halved at every 2x upsampling;
            768 in every release).
        initializer_range: std of the truncated-normal init of ConvNeXt and decoder weights.
    """

    model_type = "spark"

    backbone: str = "resnet"
    image_size: int | list[int] | tuple[int, int] = 224
    num_channels: int = 3
    depths: list[int] | tuple[int, ...] | None = None
    hidden_sizes: list[int] | tuple[int, ...] | None = None
    layer_type: str = "bottleneck"
    embedding_size: int = 64
    layer_scale_init_value: float = 1e-6
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    mask_ratio: float = 0.6
    densify_norm: str | None = None
    decoder_hidden_size: int = 768
    initializer_range: float = 0.02

    FIELD_RULES = {
        "backbone": Choice(*BACKBONES), "image_size": Rule("size"), "num_channels": POSITIVE,
        "depths": Rule("ints", 1, optional=True), "hidden_sizes": Rule("ints", 1, optional=True),
        "layer_type": Choice("bottleneck", "basic"), "embedding_size": POSITIVE, "layer_scale_init_value": Float(0),
        "layer_norm_eps": EPS, "drop_path_rate": Float(0, 1, high_open=True), "mask_ratio": Float(0, 1, high_open=True),
        "densify_norm": Choice("bn", "ln", "none", optional=True), "decoder_hidden_size": POSITIVE,
        "initializer_range": NON_NEGATIVE,
    }

    def __post_init__(self, **kwargs):
        name = type(self).__name__
        defaults = BACKBONE_DEFAULTS[self.backbone]
        for field in ("depths", "hidden_sizes", "densify_norm"):
            if getattr(self, field) is None:
                setattr(self, field, defaults[field])
        self.depths, self.hidden_sizes = [int(d) for d in self.depths], [int(h) for h in self.hidden_sizes]
        if len(self.depths) != 4 or len(self.hidden_sizes) != 4:
            raise ValueError(f"{name}: depths {self.depths} and hidden_sizes {self.hidden_sizes} must have 4 stages each "
                             "(strides 4, 8, 16, 32)")
        if self.backbone == "resnet" and self.layer_type == "bottleneck" and any(h % 4 for h in self.hidden_sizes):
            raise ValueError(f"{name}: bottleneck hidden_sizes {self.hidden_sizes} must be multiples of 4 (the blocks' inner width is a quarter)")
        check_image_size(self, patch_field="encoder_stride")
        if self.decoder_hidden_size % 2 ** 5:
            raise ValueError(f"{name}: decoder_hidden_size {self.decoder_hidden_size} must be divisible by 32 "
                             "(the decoder halves its width at each of its 5 upsamplings)")
        if (1 - self.mask_ratio) * self.num_mask_cells() < 0.5:
            raise ValueError(f"{name}: mask_ratio {self.mask_ratio} keeps no cell of the {self.num_mask_cells()}-cell mask grid")
        super().__post_init__(**kwargs)

    # derived, read-only --------------------------------------------------------------------
    @property
    def encoder_stride(self) -> int:
        """The encoder's total downsampling; the mask is on this grid."""
        return DOWNSAMPLE_RATIO

    @property
    def patch_size(self) -> int:
        """The mask cell and the loss's patch: 32 x 32 pixels (the encoder's downsampling)."""
        return DOWNSAMPLE_RATIO

    @property
    def norm_pix_loss(self) -> bool:
        """SparK always regresses per-patch normalised pixels."""
        return True

    @property
    def hidden_size(self) -> int:
        """The width of the last stage (what the classifier's head receives)."""
        return self.hidden_sizes[-1]

    @property
    def num_hidden_layers(self) -> int:
        """Blocks in all stages."""
        return sum(self.depths)

    @property
    def stem_width(self) -> int:
        """Channels of the stem's output (the `stem` stage): ResNet's `embedding_size`, ConvNeXt's first stage width."""
        return self.embedding_size if self.backbone == "resnet" else self.hidden_sizes[0]

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.image_size
        return (int(size[0]), int(size[-1])) if isinstance(size, (list, tuple)) else (int(size), int(size))

    def num_mask_cells(self) -> int:
        height, width = self.image_hw
        return (height // DOWNSAMPLE_RATIO) * (width // DOWNSAMPLE_RATIO)

    def estimated_parameters(self, pretraining: bool = True) -> int:
        """About how many parameters a model of this config has (`models/size_bounds.py`): convolution
        and Linear weights of the encoder, plus the densifying layers and the decoder when `pretraining`."""
        total, cin = 0, self.num_channels
        if self.backbone == "resnet":
            total += 49 * cin * self.embedding_size
            cin = self.embedding_size
            for depth, cout in zip(self.depths, self.hidden_sizes):
                width = cout // 4 if self.layer_type == "bottleneck" else cout
                block = (width * (cin + 9 * width + cout)) if self.layer_type == "bottleneck" else 9 * cout * (cin + cout)
                total += block + cin * cout + (depth - 1) * (block - width * (cin - cout) if self.layer_type == "bottleneck" else 9 * cout * 2 * cout)
                cin = cout
        else:
            for depth, cout in zip(self.depths, self.hidden_sizes):
                total += (16 if cin == self.num_channels else 4) * cin * cout + depth * (49 * cout + 8 * cout * cout)
                cin = cout
        if pretraining:
            width = self.decoder_hidden_size
            for index, channels in enumerate(reversed(self.hidden_sizes)):
                total += (1 if index == 0 else 9) * channels * width
                width //= 2
            total += sum(25 * (self.decoder_hidden_size // 2**i) ** 2 for i in range(5)) + 9 * sum(
                (self.decoder_hidden_size // 2**i) * (self.decoder_hidden_size // 2 ** (i + 1)) for i in range(5))
        return int(total + max(self.num_labels, 0) * self.hidden_size)

    def segmentation_stages(self) -> tuple[list[str], bool]:
        """UperNet's inputs: the four stages (strides 4-32) as they are, no feature pyramid."""
        return self.backbone_stage_names()[1:], False

    def backbone_stage_names(self) -> list[str]:
        """`stem`, then the four stages (strides 4, 8, 16, 32), as transformers' ConvNext and ResNet."""
        return ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]


__all__ = ["SparKConfig"]
