"""ColorMAEBackbone: ColorMAE's ViT encoder (MAE's) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from ..mae.modeling_mae import MAEPreTrainedModel
from .configuration_color_mae import ColorMAEConfig
from .modeling_color_mae import ColorMAEModel


class ColorMAEBackbone(MIMBackboneMixin, MAEPreTrainedModel):
    """ColorMAE's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    config_class = ColorMAEConfig
    encoder_class = ColorMAEModel


__all__ = ["ColorMAEBackbone"]
