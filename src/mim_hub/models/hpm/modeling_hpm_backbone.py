"""HPMBackbone: HPM's ViT encoder (MAE's) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from ..mae.modeling_mae import MAEPreTrainedModel
from .configuration_hpm import HPMConfig
from .modeling_hpm import HPMModel


class HPMBackbone(MIMBackboneMixin, MAEPreTrainedModel):
    """HPM's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    config_class = HPMConfig
    encoder_class = HPMModel


__all__ = ["HPMBackbone"]
