"""CrateMAEBackbone: The CRATE-MAE (or CRATE) encoder, at its own image size as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_crate_mae import CrateMAEModel, CrateMAEPreTrainedModel


class CrateMAEBackbone(MIMBackboneMixin, CrateMAEPreTrainedModel):
    """The CRATE-MAE (or CRATE) encoder, at its own image size, returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved CrateMAE model: `CrateMAEBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    encoder_kwargs = {}
    encoder_class = CrateMAEModel


__all__ = ["CrateMAEBackbone"]
