from .configuration_mae import MAEConfig
from .image_processing_mae import MAEImageProcessor
from .modeling_mae import MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .modeling_mae_backbone import MAEBackbone

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": MAEConfig,
    "model": MAEModel,
    "pretraining": MAEForPreTraining,
    "classification": MAEForImageClassification,
    "backbone": MAEBackbone,
    "image_processor": MAEImageProcessor,
}

__all__ = [
    "MAEBackbone",
    "MAEConfig",
    "MAEImageProcessor",
    "MAEModel",
    "MAEPreTrainedModel",
    "MAEForPreTraining",
    "MAEForImageClassification",
]
