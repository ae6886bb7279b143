from .configuration_color_mae import ColorMAEConfig
from .image_processing_color_mae import ColorMAEImageProcessor
from .modeling_color_mae import ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEModel
from .modeling_color_mae_backbone import ColorMAEBackbone

AUTO_CLASSES = {
    "config": ColorMAEConfig,
    "model": ColorMAEModel,
    "pretraining": ColorMAEForPreTraining,
    "classification": ColorMAEForImageClassification,
    "backbone": ColorMAEBackbone,
    "image_processor": ColorMAEImageProcessor,
}

__all__ = ["ColorMAEBackbone", "ColorMAEConfig", "ColorMAEImageProcessor", "ColorMAEModel", "ColorMAEForPreTraining", "ColorMAEForImageClassification"]
