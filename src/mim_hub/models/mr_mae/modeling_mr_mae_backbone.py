"""MRMAEBackbone: MR-MAE's encoder: its plain ViT (blocks) or ConvMAE's hybrid (`conv1`, `conv2`, then the transformer blocks) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_mr_mae import MRMAEModel, MRMAEPreTrainedModel


class MRMAEBackbone(MIMBackboneMixin, MRMAEPreTrainedModel):
    """MRMAE's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    encoder_kwargs = {"add_pooling_layer": False, "add_final_norm": False, "add_fusion": False}
    encoder_class = MRMAEModel


__all__ = ["MRMAEBackbone"]
