"""Loading a model for training or evaluation from a saved folder or a preset, with clear errors."""

from __future__ import annotations

import json
import os

from ..auto import METHODS, method_classes
from .presets import PRESETS, preset_config


class ModelDirError(ValueError):
    """A --model that is neither a preset nor a mim_hub model folder."""


def method_of_folder(path: str) -> str:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ModelDirError(f"{path} is not a model folder: it has no config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            fields = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelDirError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise ModelDirError(f"{config_path}: a config must be a JSON object of fields, got a JSON {type(fields).__name__}")
    model_type = fields.get("model_type")
    if model_type not in METHODS:
        raise ModelDirError(f"{path} holds a {model_type!r} model, not a mim_hub model (one of {list(METHODS)})")
    method_classes(model_type)["config"].from_pretrained(path)  # every field checked: a ValueError naming the file and field
    return model_type


def load_model(spec: str, role: str, *, method: str | None = None, config_overrides: dict | None = None, **kwargs):
    """(method, model) for `spec` (a folder or preset name); `role` is pretraining, model or
    classification. A folder's weights are loaded; a preset is initialised at random."""
    overrides = dict(config_overrides or {})
    if os.path.isdir(spec):
        found = method_of_folder(spec)
        if method and method != found:
            raise ModelDirError(f"{spec} holds a {found} model but --method is {method}")
        cls = method_classes(found)[role]
        return found, cls.from_pretrained(spec, **overrides, **kwargs)
    if spec in PRESETS:
        found, config = preset_config(spec, **overrides)
        if method and method != found:
            raise ModelDirError(f"preset {spec} is a {found} model but --method is {method}")
        return found, method_classes(found)[role](config)
    raise ModelDirError(f"--model {spec!r} is neither a saved model folder nor a known preset ({sorted(PRESETS)})")
