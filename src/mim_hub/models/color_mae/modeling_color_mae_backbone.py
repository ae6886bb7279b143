"""ColorMAEBackbone: ColorMAE's ViT encoder (MAE's) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from ..mae.modeling_mae import MAEPreTrainedModel
from .configuration_color_mae import ColorMAEConfig
from .modeling_color_mae import ColorMAEModel


class ColorMAEBackbone(MIMBackboneMixin, MAEPreTrainedModel):
    """ColorMAE's ViT encoder (MAE's), returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved ColorMAE model: `ColorMAEBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    config_class = ColorMAEConfig
    encoder_class = ColorMAEModel


__all__ = ["ColorMAEBackbone"]
