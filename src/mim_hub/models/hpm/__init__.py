from .configuration_hpm import HPMConfig
from .image_processing_hpm import HPMImageProcessor
from .modeling_hpm import HPMForImageClassification, HPMForPreTraining, HPMModel
from .modeling_hpm_backbone import HPMBackbone

AUTO_CLASSES = {
    "config": HPMConfig,
    "model": HPMModel,
    "pretraining": HPMForPreTraining,
    "classification": HPMForImageClassification,
    "backbone": HPMBackbone,
    "image_processor": HPMImageProcessor,
}

__all__ = ["HPMBackbone", "HPMConfig", "HPMImageProcessor", "HPMModel", "HPMForPreTraining", "HPMForImageClassification"]
