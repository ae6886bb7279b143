"""Registration of every method's classes with transformers' Auto classes (done on import)."""

from __future__ import annotations

import importlib

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
)

# method key -> package under mim_hub.models; each package defines AUTO_CLASSES. The one list of
# methods is models/catalogue.py's.
from .models.catalogue import METHODS


def method_classes(method: str) -> dict:
    """The AUTO_CLASSES table of a method (config, model, pretraining, classification,
    image_processor, backbone, and optionally masked_image_modeling)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return importlib.import_module(f"mim_hub.models.{method}").AUTO_CLASSES


def available_methods() -> list[str]:
    """Methods whose package is present and defines its classes."""
    found = []
    for method in METHODS:
        try:
            method_classes(method)
        except (ImportError, AttributeError):
            continue
        found.append(method)
    return found


def register_all() -> None:
    for method in available_methods():
        classes = method_classes(method)
        config = classes["config"]
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoModel.register(config, classes["model"], exist_ok=True)
        AutoModelForPreTraining.register(config, classes["pretraining"], exist_ok=True)
        AutoModelForImageClassification.register(config, classes["classification"], exist_ok=True)
        if classes.get("backbone") is not None:  # AutoBackbone.from_config, load_backbone (UperNet, DPT, Mask2Former)
            AutoBackbone.register(config, classes["backbone"], exist_ok=True)
        if classes.get("masked_image_modeling") is not None:
            AutoModelForMaskedImageModeling.register(config, classes["masked_image_modeling"], exist_ok=True)
        processors = {"pil": classes["image_processor"]}
        if classes.get("image_processor_torchvision") is not None:
            processors["torchvision"] = classes["image_processor_torchvision"]
        AutoImageProcessor.register(config, image_processor_classes=processors, exist_ok=True)
