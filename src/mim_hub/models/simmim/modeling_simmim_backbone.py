"""SimMIMBackbone: SimMIM's encoder: its ViT (blocks) or its Swin (stages) as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_simmim import SimMIMModel, SimMIMPreTrainedModel


class SimMIMBackbone(MIMBackboneMixin, SimMIMPreTrainedModel):
    """SimMIM's encoder: its ViT (blocks) or its Swin (stages), returning `feature_maps` [B, C, h, w] for `config.out_features` (stage names in
    `config.stage_names`; the last stage by default), with BEiT's feature pyramid when
    `config.add_fpn`. Loads from any saved SimMIM model: `SimMIMBackbone.from_pretrained(dir,
    out_indices=[...])`; `AutoBackbone.from_config(config)` builds it."""

    encoder_class = SimMIMModel


__all__ = ["SimMIMBackbone"]
