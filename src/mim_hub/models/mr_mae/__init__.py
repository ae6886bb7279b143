from .configuration_mr_mae import MRMAEConfig
from .image_processing_mr_mae import MRMAEImageProcessor
from .modeling_mr_mae import MRMAEForImageClassification, MRMAEForPreTraining, MRMAEModel, MRMAEPreTrainedModel
from .teachers import Teacher as MRMAETeacher

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": MRMAEConfig,
    "model": MRMAEModel,
    "pretraining": MRMAEForPreTraining,
    "classification": MRMAEForImageClassification,
    "image_processor": MRMAEImageProcessor,
}

__all__ = [
    "MRMAEConfig",
    "MRMAEImageProcessor",
    "MRMAEModel",
    "MRMAEPreTrainedModel",
    "MRMAEForPreTraining",
    "MRMAEForImageClassification",
    "MRMAETeacher",
]
