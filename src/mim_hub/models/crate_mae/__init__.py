from .configuration_crate_mae import CrateMAEConfig
from .image_processing_crate_mae import CrateMAEImageProcessor
from .modeling_crate_mae import CrateMAEForImageClassification, CrateMAEForPreTraining, CrateMAEModel, CrateMAEPreTrainedModel

AUTO_CLASSES = {
    "config": CrateMAEConfig,
    "model": CrateMAEModel,
    "pretraining": CrateMAEForPreTraining,
    "classification": CrateMAEForImageClassification,
    "image_processor": CrateMAEImageProcessor,
}

__all__ = ["CrateMAEConfig", "CrateMAEImageProcessor", "CrateMAEModel", "CrateMAEPreTrainedModel",
           "CrateMAEForPreTraining", "CrateMAEForImageClassification"]
