from .configuration_mae import MAEConfig
from .image_processing_mae import MAEImageProcessor
from .modeling_mae import MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": MAEConfig,
    "model": MAEModel,
    "pretraining": MAEForPreTraining,
    "classification": MAEForImageClassification,
    "image_processor": MAEImageProcessor,
}

__all__ = [
    "MAEConfig",
    "MAEImageProcessor",
    "MAEModel",
    "MAEPreTrainedModel",
    "MAEForPreTraining",
    "MAEForImageClassification",
]
