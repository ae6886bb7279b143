from .configuration_color_mae import ColorMAEConfig
from .image_processing_color_mae import ColorMAEImageProcessor
from .modeling_color_mae import ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEModel

AUTO_CLASSES = {
    "config": ColorMAEConfig,
    "model": ColorMAEModel,
    "pretraining": ColorMAEForPreTraining,
    "classification": ColorMAEForImageClassification,
    "image_processor": ColorMAEImageProcessor,
}

__all__ = ["ColorMAEConfig", "ColorMAEImageProcessor", "ColorMAEModel", "ColorMAEForPreTraining", "ColorMAEForImageClassification"]
