from .configuration_spark import SparKConfig
from .image_processing_spark import SparKImageProcessor
from .modeling_spark import SparKForImageClassification, SparKForPreTraining, SparKModel, SparKPreTrainedModel
from .modeling_spark_backbone import SparKBackbone

# What `mim_hub.auto` registers with the Auto classes for this method.
AUTO_CLASSES = {
    "config": SparKConfig,
    "model": SparKModel,
    "pretraining": SparKForPreTraining,
    "classification": SparKForImageClassification,
    "backbone": SparKBackbone,
    "image_processor": SparKImageProcessor,
}

__all__ = [
    "SparKBackbone",
    "SparKConfig",
    "SparKImageProcessor",
    "SparKModel",
    "SparKPreTrainedModel",
    "SparKForPreTraining",
    "SparKForImageClassification",
]
