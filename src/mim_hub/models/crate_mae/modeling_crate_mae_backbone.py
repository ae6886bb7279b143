"""CrateMAEBackbone: The CRATE-MAE (or CRATE) encoder, at its own image size as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_crate_mae import CrateMAEModel, CrateMAEPreTrainedModel


class CrateMAEBackbone(MIMBackboneMixin, CrateMAEPreTrainedModel):
    """CrateMAE's encoder as a transformers backbone: `MIMBackboneMixin`'s `feature_maps`, loading and pyramid."""

    encoder_kwargs = {"use_mask_token": False, "add_final_norm": False}
    encoder_class = CrateMAEModel


__all__ = ["CrateMAEBackbone"]
