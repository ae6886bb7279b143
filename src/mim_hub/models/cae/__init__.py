from .configuration_cae import CAEConfig
from .image_processing_cae import CAEImageProcessor
from .modeling_cae import CAEForImageClassification, CAEForPreTraining, CAEModel, CAEPreTrainedModel
from .modeling_cae_backbone import CAEBackbone

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": CAEConfig,
    "model": CAEModel,
    "pretraining": CAEForPreTraining,
    "classification": CAEForImageClassification,
    "backbone": CAEBackbone,
    "image_processor": CAEImageProcessor,
}

__all__ = [
    "CAEBackbone",
    "CAEConfig",
    "CAEImageProcessor",
    "CAEModel",
    "CAEPreTrainedModel",
    "CAEForPreTraining",
    "CAEForImageClassification",
]
