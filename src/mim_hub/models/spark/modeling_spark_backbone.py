"""SparKBackbone: SparK's CNN as a transformers backbone (see `models/backbone.py`)."""

from __future__ import annotations

from ..backbone import MIMBackboneMixin
from .modeling_spark import SparKModel, SparKPreTrainedModel


class SparKBackbone(MIMBackboneMixin, SparKPreTrainedModel):
    """SparK's ResNet or ConvNeXt as a transformers backbone: `feature_maps` of the stages in
    `config.out_features` (`stem`, then `stage1`..`stage4` at strides 4, 8, 16, 32, as
    transformers' `ConvNextBackbone` / `ResNetBackbone`), for UperNet, Mask2Former or DETR."""

    encoder_class = SparKModel
    _keys_to_ignore_on_load_unexpected = MIMBackboneMixin._keys_to_ignore_on_load_unexpected + [r"^densify\."]

    @staticmethod
    def _is_multiscale(config) -> bool:
        return True

    @staticmethod
    def _stage_channels(config) -> list[int]:
        return [config.stem_width, *config.hidden_sizes]


__all__ = ["SparKBackbone"]
