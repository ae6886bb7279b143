from .configuration_cae import CAEConfig
from .image_processing_cae import CAEImageProcessor
from .modeling_cae import CAEForImageClassification, CAEForPreTraining, CAEModel, CAEPreTrainedModel

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": CAEConfig,
    "model": CAEModel,
    "pretraining": CAEForPreTraining,
    "classification": CAEForImageClassification,
    "image_processor": CAEImageProcessor,
}

__all__ = [
    "CAEConfig",
    "CAEImageProcessor",
    "CAEModel",
    "CAEPreTrainedModel",
    "CAEForPreTraining",
    "CAEForImageClassification",
]
