"""Every method's encoder as a transformers backbone (`BackboneMixin`), written once.

A `<Method>Backbone` holds the method's base model under its `base_model_prefix` (so any saved
model of the method loads into it: base model, pre-training or classifier checkpoints, their
decoders and heads ignored) and returns `BackboneOutput.feature_maps`, one [B, C, h, w] map per
stage in `config.out_features`:

- plain ViTs: the chosen blocks' outputs (no final norm, as BEiT's and ViTDet's backbones), prefix
  tokens dropped, on the patch grid (stride = patch size);
- Swin: its stages (strides 4, 8, 16, 32 for patch 4);
- ConvMAE's hybrid: `conv1` / `conv2` (its convolution stages, strides p1 and p1 p2) and the
  transformer stage's blocks (stride = patch size).

`config.add_fpn=True` (plain ViTs, exactly 4 `out_features`) adds the feature pyramid of the
BEiT/MAE segmentation code, as transformers' `BeitBackbone` does: the four maps are rescaled x4
(two 2x2 transposed convolutions with BatchNorm + GELU between), x2 (one), x1 and x0.5 (2x2 max
pooling), giving strides 4/8/16/32 for patch 16. We chose this neck over ViTDet's simple feature
pyramid because it is what MAE, BEiT, CAE and ColorMAE report their ADE20K numbers with. Its
weights are new: a model loaded from a checkpoint without them starts them freshly initialised
(they are not reported as missing; every encoder weight is).

Any input size the encoder accepts works: position tables are interpolated (CRATE keeps its
image size).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.processing_utils import Unpack
from transformers.utils.generic import TransformersKwargs, can_return_tuple

from .. import initialization as init


class FeaturePyramidNeck(nn.Module):
    """BEiT's `add_fpn` neck: four maps of one width, rescaled x4, x2, x1, x0.5."""

    def __init__(self, channels: int, batch_norm_eps: float = 1e-5):
        super().__init__()
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            nn.BatchNorm2d(channels, eps=batch_norm_eps),
            nn.GELU(),
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(op(m) for op, m in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), maps))


class MIMBackboneMixin(BackboneMixin):
    """Put first in the bases of `<Method>Backbone(MIMBackboneMixin, <Method>PreTrainedModel)`;
    the subclass names its encoder class (`encoder_class`) and the arguments it is built with.

    The backbone returns `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. It loads from any saved model of its method:
    `<Method>Backbone.from_pretrained(dir, out_indices=[...])`; `AutoBackbone.from_config(config)`
    builds it."""

    encoder_class: type | None = None
    # the feature maps are block outputs: no pooling layer and no final norm (no parameter the
    # backbone's forward leaves unused: DDP's `find_unused_parameters=False` needs every one)
    encoder_kwargs: dict = {"add_pooling_layer": False, "add_final_norm": False}
    # the neck is new in every checkpoint that was not saved by a backbone
    _keys_to_ignore_on_load_missing = [r"(^|\.)neck\."]
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^head", r"^regressor\.", r"^mimic_heads\.", r"mask_token", r"^decoder_pos_embed",
                                          r"^encoder_to_regressor", r"fc_norm\.",
                                          r"(^|\.)layernorm\.", r"embeddings\.fusion\."]

    def __init__(self, config):
        super().__init__(config)
        encoder = self.encoder_class(config, **self.encoder_kwargs)
        setattr(self, self.base_model_prefix, encoder)
        self.num_features = self._stage_channels(config)
        self.neck = None
        if getattr(config, "add_fpn", False):
            if self._is_multiscale(config):
                raise ValueError(f"{type(self).__name__}: add_fpn is for plain ViTs; this encoder's stages are already multi-scale "
                                 "(choose them with out_features)")
            if len(self.out_features) != 4:
                raise ValueError(f"add_fpn needs exactly 4 out_features (rescaled x4, x2, x1, x0.5), got {self.out_features}")
            self.neck = FeaturePyramidNeck(config.hidden_size)
        self.post_init()

    def _init_transformers_backbone(self) -> None:
        self.config.refresh_stage_names()
        super()._init_transformers_backbone()

    # what differs per encoder ---------------------------------------------------------------
    @staticmethod
    def _is_multiscale(config) -> bool:
        return getattr(config, "backbone", "vit") in ("swin", "convvit")

    @staticmethod
    def _stage_channels(config) -> list[int]:
        """Channels of each stage in `config.stage_names`."""
        if getattr(config, "backbone", None) == "swin":
            return [config.embed_dim] + [config.embed_dim * 2**stage for stage in range(len(config.depths))]
        widths = [config.hidden_size] * (config.num_hidden_layers + 1)
        if getattr(config, "backbone", None) == "convvit":
            widths = list(config.conv_hidden_sizes) + widths
        return widths

    @property
    def encoder(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.ConvTranspose2d):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        """`feature_maps`: a [B, C, h, w] map per stage of `config.out_features` (after the
        feature pyramid with `add_fpn`). `hidden_states` / `attentions`: the encoder's, on request
        (transformers' `filter_output_hidden_states`, as its ViT-style backbones)."""
        encoder = self.encoder
        stages, encoded = encoder._feature_stages(pixel_values, interpolate_pos_encoding=encoder.supports_interpolation, **kwargs)
        if len(stages) != len(self.stage_names):
            raise RuntimeError(f"{type(encoder).__name__} gave {len(stages)} stages for stage_names {self.stage_names}")
        chosen = [stage for name, stage in zip(self.stage_names, stages) if name in self.out_features]
        if not getattr(self.config, "reshape_hidden_states", True):  # tokens, as DINOv2's option (DPT's neck reads them)
            feature_maps = tuple(stage.tokens for stage in chosen)
        else:
            maps = [stage.as_map() for stage in chosen]
            feature_maps = self.neck(maps) if self.neck is not None else tuple(maps)
        return BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=encoded.hidden_states,
            attentions=encoded.get("attentions"),  # (none in a convnet)
        )


__all__ = ["MIMBackboneMixin", "FeaturePyramidNeck"]
