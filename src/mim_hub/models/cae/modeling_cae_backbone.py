"""CAEBackbone: CAE's ViT encoder as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_cae import CAEModel, CAEPreTrainedModel


class CAEBackbone(MIMBackboneMixin, CAEPreTrainedModel):
    """CAE's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    encoder_class = CAEModel


__all__ = ["CAEBackbone"]
