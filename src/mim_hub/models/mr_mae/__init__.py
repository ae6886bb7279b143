from .configuration_mr_mae import MRMAEConfig
from .image_processing_mr_mae import MRMAEImageProcessor
from .modeling_mr_mae import MRMAEForImageClassification, MRMAEForPreTraining, MRMAEModel, MRMAEPreTrainedModel
from .teachers import Teacher as MRMAETeacher
from .modeling_mr_mae_backbone import MRMAEBackbone

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": MRMAEConfig,
    "model": MRMAEModel,
    "pretraining": MRMAEForPreTraining,
    "classification": MRMAEForImageClassification,
    "backbone": MRMAEBackbone,
    "image_processor": MRMAEImageProcessor,
}

__all__ = [
    "MRMAEBackbone",
    "MRMAEConfig",
    "MRMAEImageProcessor",
    "MRMAEModel",
    "MRMAEPreTrainedModel",
    "MRMAEForPreTraining",
    "MRMAEForImageClassification",
    "MRMAETeacher",
]
