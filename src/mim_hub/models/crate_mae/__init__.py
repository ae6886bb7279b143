from .configuration_crate_mae import CrateMAEConfig
from .image_processing_crate_mae import CrateMAEImageProcessor
from .modeling_crate_mae import CrateMAEForImageClassification, CrateMAEForPreTraining, CrateMAEModel, CrateMAEPreTrainedModel
from .modeling_crate_mae_backbone import CrateMAEBackbone

AUTO_CLASSES = {
    "config": CrateMAEConfig,
    "model": CrateMAEModel,
    "pretraining": CrateMAEForPreTraining,
    "classification": CrateMAEForImageClassification,
    "backbone": CrateMAEBackbone,
    "image_processor": CrateMAEImageProcessor,
}

__all__ = ["CrateMAEBackbone", "CrateMAEConfig", "CrateMAEImageProcessor", "CrateMAEModel", "CrateMAEPreTrainedModel",
           "CrateMAEForPreTraining", "CrateMAEForImageClassification"]
