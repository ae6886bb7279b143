"""MRMAEBackbone: MR-MAE's encoder: its plain ViT (blocks) or ConvMAE's hybrid (`conv1`, `conv2`, then the transformer blocks) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_mr_mae import MRMAEModel, MRMAEPreTrainedModel


class MRMAEBackbone(MIMBackboneMixin, MRMAEPreTrainedModel):
    """MR-MAE's encoder: its plain ViT (blocks) or ConvMAE's hybrid (`conv1`, `conv2`, then the transformer blocks), returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved MRMAE model: `MRMAEBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    encoder_kwargs = {"add_pooling_layer": False, "add_fusion": False}
    encoder_class = MRMAEModel


__all__ = ["MRMAEBackbone"]
