"""MAEBackbone: MAE's ViT encoder as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_mae import MAEModel, MAEPreTrainedModel


class MAEBackbone(MIMBackboneMixin, MAEPreTrainedModel):
    """MAE's ViT encoder, returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved MAE model: `MAEBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    encoder_class = MAEModel


__all__ = ["MAEBackbone"]
