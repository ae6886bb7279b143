"""SimMIMBackbone: SimMIM's encoder: its ViT (blocks) or its Swin (stages) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_simmim import SimMIMModel, SimMIMPreTrainedModel


class SimMIMBackbone(MIMBackboneMixin, SimMIMPreTrainedModel):
    """SimMIM's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    encoder_class = SimMIMModel


__all__ = ["SimMIMBackbone"]
