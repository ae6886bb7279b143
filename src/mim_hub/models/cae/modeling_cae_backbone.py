"""CAEBackbone: CAE's ViT encoder as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_cae import CAEModel, CAEPreTrainedModel


class CAEBackbone(MIMBackboneMixin, CAEPreTrainedModel):
    """CAE's ViT encoder, returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved CAE model: `CAEBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    encoder_class = CAEModel


__all__ = ["CAEBackbone"]
