"""MAEBackbone: MAE's ViT encoder as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_mae import MAEModel, MAEPreTrainedModel


class MAEBackbone(MIMBackboneMixin, MAEPreTrainedModel):
    """MAE's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    encoder_class = MAEModel


__all__ = ["MAEBackbone"]
