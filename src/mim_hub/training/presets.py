"""Named model configurations for `--model PRESET`: the presets of every method's catalogue
(models/<method>/catalogue.py), the papers' sizes and the demo's tiny protocol model."""

from __future__ import annotations

from ..auto import method_classes
from ..models.catalogue import Preset, all_presets

# name -> (method, config fields over the config class's defaults)
PRESETS: dict[str, tuple[str, dict]] = {name: (method, preset.config) for name, (method, preset) in all_presets().items()}


def preset(name: str) -> tuple[str, Preset]:
    """(method, Preset) of a preset name, or a ValueError listing the known ones."""
    found = all_presets()
    if name not in found:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(found)} (or pass a saved model folder)")
    return found[name]


def preset_config(name: str, **overrides):
    """(method, config) of a preset, with `overrides` applied."""
    method, entry = preset(name)
    return method, method_classes(method)["config"](**{**entry.config, **overrides})
