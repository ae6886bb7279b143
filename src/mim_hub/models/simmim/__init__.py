from .configuration_simmim import SimMIMConfig
from .image_processing_simmim import SimMIMImageProcessor
from .modeling_simmim import (
    SimMIMForImageClassification,
    SimMIMForPreTraining,
    SimMIMModel,
    SimMIMPreTrainedModel,
    SimMIMPreTrainingOutput,
)
from .modeling_simmim_backbone import SimMIMBackbone

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": SimMIMConfig,
    "model": SimMIMModel,
    "pretraining": SimMIMForPreTraining,
    "classification": SimMIMForImageClassification,
    "backbone": SimMIMBackbone,
    "image_processor": SimMIMImageProcessor,
    "masked_image_modeling": SimMIMForPreTraining,
}

__all__ = [
    "SimMIMBackbone",
    "SimMIMConfig",
    "SimMIMImageProcessor",
    "SimMIMModel",
    "SimMIMPreTrainedModel",
    "SimMIMForPreTraining",
    "SimMIMForImageClassification",
    "SimMIMPreTrainingOutput",
]
