"""SimMIM configuration (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..config_fields import BLOCK_NUMERICS_RULES, VIT_ENCODER_RULES, BlockNumericsFields, ViTEncoderFields
from ..validation import BOOL, POSITIVE, Choice, Float, Int, MIMConfig, Rule, check_divisible, check_image_size

BACKBONES = ("vit", "swin")


@strict
class SimMIMConfig(MIMBackboneConfigMixin, MIMConfig, ViTEncoderFields, BlockNumericsFields):
    r"""Configuration of SimMIM: a ViT (BEiT-style) or Swin encoder, the one-layer decoder
    (1x1 conv + PixelShuffle) and the fine-tuning head.

    `backbone` picks the encoder. Fields left at `None` take the released model's value for that
    backbone: ViT-B/16 at 224 (`simmim_pretrain__vit_base__img224__800ep`) or Swin-B at 192 with
    window 6 (`simmim_pretrain__swin_base__img192_window6__800ep`).

    The ViT and block-numerics fields are the shared groups of `models/config_fields.py`
    (`image_size`, `patch_size`, `layer_norm_eps`, `drop_path_rate` declared again: None).

    Args:
        backbone: "vit" or "swin".
        image_size, patch_size, num_channels: input geometry (defaults 224/16 for ViT, 192/4 for Swin).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the ViT encoder.
            For Swin they are derived: `hidden_size` = width of the last stage, `num_hidden_layers`
            = sum(depths), `num_attention_heads` = heads of the last stage.
        qkv_bias: ViT: learned q and v biases with a zero k bias (BEiT); Swin: one qkv bias.
        layer_scale_init_value: ViT layer scale (`gamma_1/2`) initial value; None or 0 = none.
        use_absolute_position_embeddings: learned absolute positions (ViT `pos_embed`, Swin `ape`).
        use_relative_position_bias: ViT: one relative position table per block (fine-tuning).
        use_shared_relative_position_bias: ViT: one table shared by all blocks (pre-training).
        use_mean_pooling: ViT: the classifier pools the mean patch token + `fc_norm` and the
            encoder has no final norm (fine-tuning); False pools the normed cls token.
        embed_dim, depths, num_heads, window_size, mlp_ratio, patch_norm: the Swin encoder
            (as transformers' `SwinConfig`); a stage smaller than the window uses the stage
            resolution as its window and no shift; a stage that is not a whole number of windows
            is zero-padded to one (as transformers' Swin).
        encoder_stride: total downsampling of the encoder, the decoder's PixelShuffle factor
            (ViT: patch_size; Swin: patch_size * 2 ** (stages - 1)).
        mask_patch_size, mask_ratio: the pre-training mask generator (blocks of `mask_patch_size`
            pixels, `ceil(blocks * mask_ratio)` masked).
        layer_norm_eps: 1e-6 for ViT, 1e-5 for Swin (the originals').
        drop_path_rate: stochastic depth (released pre-training: 0.1 ViT, 0.0 Swin).
        hidden_act, hidden_dropout_prob, attention_probs_dropout_prob,
            initializer_range: numerics and regularisation.
    """

    model_type = "simmim"

    backbone: str = "vit"
    # None: the backbone's released value (filled in by __post_init__); the other ViT fields are
    # ViTEncoderFields', the numerics BlockNumericsFields'
    image_size: int | list[int] | tuple[int, int] | None = None
    patch_size: int | None = None
    # ViT
    layer_scale_init_value: float | None = 0.1
    use_absolute_position_embeddings: bool = False
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = True
    use_mean_pooling: bool = False
    # Swin
    embed_dim: int = 128
    depths: list[int] | tuple[int, ...] = (2, 2, 18, 2)
    num_heads: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 6
    mlp_ratio: float | int = 4.0
    patch_norm: bool = True
    # SimMIM
    encoder_stride: int | None = None
    mask_patch_size: int = 32
    mask_ratio: float = 0.6
    layer_norm_eps: float | None = None
    drop_path_rate: float | None = None

    # None: the backbone's released value (filled in by __post_init__)
    FIELD_RULES = {
        **VIT_ENCODER_RULES, **BLOCK_NUMERICS_RULES,
        "backbone": Choice(*BACKBONES), "image_size": Rule("size", optional=True), "patch_size": Int(1, optional=True),
        "layer_scale_init_value": Float(0, optional=True), "use_absolute_position_embeddings": BOOL,
        "use_relative_position_bias": BOOL, "use_shared_relative_position_bias": BOOL, "use_mean_pooling": BOOL,
        "embed_dim": POSITIVE, "depths": Rule("ints", 1), "num_heads": Rule("ints", 1), "window_size": POSITIVE,
        "mlp_ratio": Float(0, low_open=True), "patch_norm": BOOL, "encoder_stride": Int(1, optional=True),
        "mask_patch_size": POSITIVE, "mask_ratio": Float(0, 1), "layer_norm_eps": Float(0, low_open=True, optional=True),
        "drop_path_rate": Float(0, 1, high_open=True, optional=True),
    }

    def __post_init__(self, **kwargs):
        name = type(self).__name__
        swin = self.backbone == "swin"
        if self.image_size is None:
            self.image_size = 192 if swin else 224
        if self.patch_size is None:
            self.patch_size = 4 if swin else 16
        if self.layer_norm_eps is None:
            self.layer_norm_eps = 1e-5 if swin else 1e-6
        if self.drop_path_rate is None:  # the released pre-training configs
            self.drop_path_rate = 0.0 if swin else 0.1
        sides = check_image_size(self)
        if swin:
            self.depths = [int(d) for d in self.depths]
            self.num_heads = [int(h) for h in self.num_heads]
            if len(self.depths) != len(self.num_heads):
                raise ValueError(f"{name}: depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
            stages = len(self.depths)
            for stage, heads in enumerate(self.num_heads):
                width = self.embed_dim * 2**stage
                if width % heads:
                    raise ValueError(f"{name}: stage {stage} width {width} is not divisible by num_heads[{stage}] = {heads}")
            factor = 2 ** (stages - 1)
            for side in sides:
                grid = side // self.patch_size
                if grid % factor:
                    raise ValueError(
                        f"{name}: a {side}-pixel side gives {grid} patches, not divisible by 2**{stages - 1} for {stages} stages of patch merging"
                    )
            # (a stage that is not a whole number of windows is padded, as transformers' Swin does)
            # derived, as transformers' SwinConfig
            self.hidden_size = self.embed_dim * factor
            self.num_hidden_layers = sum(self.depths)
            self.num_attention_heads = self.num_heads[-1]
            self.intermediate_size = int(self.hidden_size * self.mlp_ratio)
            stride = self.patch_size * factor
        else:
            check_divisible(self, "hidden_size", "num_attention_heads")
            stride = self.patch_size
        if self.encoder_stride is None:
            self.encoder_stride = stride
        if self.encoder_stride != stride:
            raise ValueError(
                f"{name}: encoder_stride {self.encoder_stride} must equal the encoder's total downsampling {stride} "
                "(the decoder's PixelShuffle must give back the input size)"
            )
        if self.mask_patch_size % self.patch_size:
            raise ValueError(f"{name}: mask_patch_size {self.mask_patch_size} must be a multiple of patch_size {self.patch_size}")
        super().__post_init__(**kwargs)

    def backbone_stage_names(self) -> list[str]:
        """ViT: `stem`, then one stage per block; Swin: `stem`, then one stage per resolution."""
        if self.backbone == "swin":
            return ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        return super().backbone_stage_names()

    def segmentation_stages(self) -> tuple[list[str], bool]:
        """Swin: its stages, one per resolution (a pyramid already); ViT: as every ViT."""
        if self.backbone == "swin":
            return list(self.stage_names)[1:], False
        return super().segmentation_stages()

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.image_size
        return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


__all__ = ["SimMIMConfig"]
