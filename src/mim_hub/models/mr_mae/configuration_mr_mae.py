"""MR-MAE configuration (Gao et al., "Mimic before Reconstruct: Enhancing Masked Autoencoders with
Feature Mimicking", arXiv:2303.05475), with ConvMAE's hybrid backbone (Alpha-VL/ConvMAE)."""

from __future__ import annotations

import numbers

from huggingface_hub.dataclasses import strict

from ..backbone_config import MIMBackboneConfigMixin
from ..config_fields import (BLOCK_NUMERICS_RULES, MAE_DECODER_RULES, VIT_ENCODER_RULES, BlockNumericsFields, MAEDecoderFields,
                             ViTEncoderFields)
from ..validation import BOOL, EPS, POSITIVE, Choice, Int, MIMConfig, Rule, check_divisible, check_image_size

BACKBONES = ("convvit", "vit")
MIMIC_LOSSES = ("mse", "smooth_l1", "cosine")
MIMIC_TARGET_NORMS = ("none", "layernorm", "l2")
MIMIC_HEADS = ("linear", "mlp")


@strict
class MRMAEConfig(MIMBackboneConfigMixin, MIMConfig, ViTEncoderFields, MAEDecoderFields, BlockNumericsFields):
    r"""MR-MAE: an MAE whose encoder also mimics frozen teachers (CLIP, DINO) on the visible tokens.

    Two backbones (`backbone`):
    - "convvit" (MR-MCMAE / ConvMAE, the default: the released checkpoints are of this kind):
      convolutional stages 1-2 (`conv_hidden_sizes`, `conv_depths`, `conv_patch_sizes`,
      `conv_intermediate_sizes`) with masked convolution in pre-training, then a patch embedding
      of the remaining `patch_size // prod(conv_patch_sizes)` and the transformer stage 3
      (`hidden_size`, `num_hidden_layers`, ...). Stage outputs 1-2 are fused into the latent
      (`use_multiscale_fusion`). Defaults: ConvMAE-Base (256/384/768, depths 2/2/11, 12 heads).
    - "vit" (MR-MAE): MAE's plain ViT (shared modules), always with a cls token.

    The ViT, decoder and block-numerics fields are the shared groups of
    `models/config_fields.py` (`num_hidden_layers` declared again: 11).

    Args:
        image_size, patch_size, num_channels: input; `patch_size` is the size of one token of the
            transformer stage in pixels (16 for ConvMAE-Base: 4 x 2 x 2), also the patch of the
            pixel loss. Stage sizes are derived from it, never hard-coded.
        conv_hidden_sizes, conv_depths, conv_patch_sizes, conv_intermediate_sizes: stages 1-2 of
            "convvit" (CBlocks: depthwise 5x5 convolution + 1x1 MLP).
        conv_kernel_size: the depthwise kernel of the CBlocks (5 in ConvMAE).
        use_cls_token: a cls token before the transformer stage (ConvMAE-v2 / MR-MCMAE files have
            one; ConvMAE v1 has none). Always True for "vit".
        use_multiscale_fusion: "convvit" pre-training adds strided-conv projections of the stage
            1-2 maps to the visible latents (ConvMAE's `stage{1,2}_output_decode`).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, qkv_bias,
            layer_norm_eps: the transformer stage. conv_layer_norm_eps: the convolutional stages'
            LayerNorms (1e-5 in ConvMAE).
        decoder_*: MAE's decoder. mask_ratio, norm_pix_loss: MAE's pixel reconstruction.
        use_mean_pooling: the fine-tuning head (mean of patch tokens + `fc_norm`, no final norm).
        teacher_names_or_paths: frozen teachers (transformers vision models: `CLIPVisionModel`,
            `CLIPModel`, `ViTModel`, `Dinov2Model`, ... by Hub id or folder). Empty: the objective
            is exactly ConvMAE's / MAE's.
        teacher_hidden_sizes: width of each teacher's features (sizes the mimic heads; filled in
            when teachers are attached, so a saved model rebuilds its heads without them).
        teacher_layer: which teacher hidden state to mimic (None: `last_hidden_state`).
        mimic_loss_weights: weight of each teacher's mimic loss (default 1.0 each).
        mimic_loss: "mse" (the paper's L2), "smooth_l1" or "cosine".
        mimic_target_norm: normalisation of the teacher features: "layernorm" (parameter-free,
            our default), "l2" or "none".
        mimic_head: projection of the student's visible tokens to each teacher's width:
            "linear" or "mlp" (Linear-GELU-Linear).
        image_mean, image_std: the normalisation of the student's `pixel_values`, undone before
            each teacher's own preprocessing (one number: the same for every channel).
    """

    model_type = "mr_mae"

    backbone: str = "convvit"
    conv_hidden_sizes: list[int] | tuple[int, ...] = (256, 384)
    conv_depths: list[int] | tuple[int, ...] = (2, 2)
    conv_patch_sizes: list[int] | tuple[int, ...] = (4, 2)
    conv_intermediate_sizes: list[int] | tuple[int, ...] = (1024, 1536)
    conv_kernel_size: int = 5
    conv_layer_norm_eps: float = 1e-5
    use_cls_token: bool = False
    use_multiscale_fusion: bool = True
    num_hidden_layers: int = 11  # ConvMAE-B: 11 ViT blocks after the two convolution stages
    use_mean_pooling: bool = False
    teacher_names_or_paths: list[str] | tuple[str, ...] = ()
    teacher_hidden_sizes: list[int] | tuple[int, ...] = ()
    teacher_layer: int | None = None
    mimic_loss_weights: list[float] | tuple[float, ...] | None = None
    mimic_loss: str = "mse"
    mimic_target_norm: str = "layernorm"
    mimic_head: str = "linear"
    image_mean: float | list[float] | tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: float | list[float] | tuple[float, ...] = (0.229, 0.224, 0.225)

    FIELD_RULES = {
        **VIT_ENCODER_RULES, **MAE_DECODER_RULES, **BLOCK_NUMERICS_RULES,
        "backbone": Choice(*BACKBONES), "conv_hidden_sizes": Rule("ints", 1), "conv_depths": Rule("ints", 0),
        "conv_patch_sizes": Rule("ints", 1), "conv_intermediate_sizes": Rule("ints", 1), "conv_kernel_size": POSITIVE,
        "conv_layer_norm_eps": EPS, "use_cls_token": BOOL, "use_multiscale_fusion": BOOL, "use_mean_pooling": BOOL,
        "teacher_names_or_paths": Rule("strs"), "teacher_hidden_sizes": Rule("ints", 1), "teacher_layer": Int(optional=True),
        "mimic_loss_weights": Rule("floats", 0, optional=True), "mimic_loss": Choice(*MIMIC_LOSSES),
        "mimic_target_norm": Choice(*MIMIC_TARGET_NORMS), "mimic_head": Choice(*MIMIC_HEADS), "image_mean": Rule("channels"),
        "image_std": Rule("channels", 0, low_open=True),
    }

    def __post_init__(self, **kwargs):
        name = type(self).__name__
        for field in ("image_mean", "image_std"):  # one number: every channel's (as transformers' image processors take it)
            value = getattr(self, field)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                setattr(self, field, [value] * self.num_channels)
        for field in ("conv_hidden_sizes", "conv_depths", "conv_patch_sizes", "conv_intermediate_sizes", "teacher_names_or_paths",
                      "teacher_hidden_sizes", "image_mean", "image_std"):
            setattr(self, field, list(getattr(self, field)))
        if self.mimic_loss_weights is not None:
            self.mimic_loss_weights = [float(w) for w in self.mimic_loss_weights]
        check_image_size(self)
        if self.backbone == "vit":
            self.use_cls_token = True
        else:
            stages = (self.conv_hidden_sizes, self.conv_depths, self.conv_patch_sizes, self.conv_intermediate_sizes)
            if any(len(s) != 2 for s in stages):
                raise ValueError(f"{name}: conv_hidden_sizes, conv_depths, conv_patch_sizes and conv_intermediate_sizes "
                                 f"need one value per convolutional stage (2), got {[list(s) for s in stages]}")
            if self.conv_kernel_size % 2 == 0:
                raise ValueError(f"{name}: conv_kernel_size must be odd (same padding), got {self.conv_kernel_size}")
            down = self.conv_patch_sizes[0] * self.conv_patch_sizes[1]
            if self.patch_size % down:
                raise ValueError(f"{name}: patch_size {self.patch_size} is not divisible by the convolutional stages' "
                                 f"patch sizes {self.conv_patch_sizes} (product {down})")
        check_divisible(self, "hidden_size", "num_attention_heads")
        check_divisible(self, "decoder_hidden_size", "decoder_num_attention_heads")
        for field in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, field) % 4:
                raise ValueError(f"{name}: {field} {getattr(self, field)} must be divisible by 4 (2-D sin-cos position embedding)")
        if self.teacher_hidden_sizes and len(self.teacher_hidden_sizes) != len(self.teacher_names_or_paths):
            raise ValueError(f"{name}: {len(self.teacher_hidden_sizes)} teacher_hidden_sizes for "
                             f"{len(self.teacher_names_or_paths)} teacher_names_or_paths")
        if self.mimic_loss_weights is not None and len(self.mimic_loss_weights) != len(self.teacher_names_or_paths):
            raise ValueError(f"{name}: {len(self.mimic_loss_weights)} mimic_loss_weights for "
                             f"{len(self.teacher_names_or_paths)} teachers")
        if len(self.image_mean) != self.num_channels or len(self.image_std) != self.num_channels:
            raise ValueError(f"{name}: image_mean and image_std need {self.num_channels} values")
        super().__post_init__(**kwargs)

    def backbone_stage_names(self) -> list[str]:
        """The hybrid's convolution stages `conv1`, `conv2` first, then the ViT's `stem` (the
        stage-3 patch embedding) and one stage per transformer block."""
        names = super().backbone_stage_names()
        return ["conv1", "conv2", *names] if self.backbone == "convvit" else names

    def segmentation_stages(self) -> tuple[list[str], bool]:
        """The hybrid: its two convolution stages and the last block (ConvMAE's); ViT: as every ViT."""
        if self.backbone == "convvit":
            return ["conv1", "conv2", list(self.stage_names)[-1]], False
        return super().segmentation_stages()

    @property
    def stage3_patch_size(self) -> int:
        """Patch size of the embedding in front of the transformer stage ("convvit")."""
        return self.patch_size // (self.conv_patch_sizes[0] * self.conv_patch_sizes[1])

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_names_or_paths)


__all__ = ["MRMAEConfig"]
