"""What exists, as data: the types of each method's catalogue (`models/<method>/catalogue.py`)
and the one list of methods.

A method's catalogue says, in one table next to the method (timm's `default_cfgs`): its name,
paper, repository and licence; its presets, the paper's sizes that `--model PRESET` builds, each
with how its images are prepared; and the checkpoint files the authors released, with the class
each converts to. The zoo (`mim-hub zoo`), the model cards, the presets and the CLI read it; this
module imports nothing of mim_hub, so any floor may read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

# every method, in the order `mim-hub zoo` lists them; each is the package mim_hub.models.<method>
METHODS = ("mae", "simmim", "cae", "mr_mae", "color_mae", "crate_mae", "hpm", "spark")


@dataclass(frozen=True)
class Release:
    """One checkpoint file the authors released."""

    file: str
    converts_to: str
    config: dict = field(default_factory=dict)  # the --config it needs beyond what shapes tell
    note: str = ""


@dataclass(frozen=True)
class Preset:
    """A named model configuration (`--model NAME`): config fields over the config class's
    defaults, and how the images it is trained on are prepared.

    `crop_pct` is the centre crop's share of the resized image (timm's name; 0.875 = 224/256, the
    papers' evaluation transform); `crop_mode` is "center" (shorter side to size / crop_pct, then a
    centre crop) or "squash" (both sides to size / crop_pct, then the crop: with crop_pct 1.0 a
    plain resize). None keeps the method's processor default. `normalization` is "imagenet"
    (ImageNet's mean/std), "dataset" (the training images' own statistics) or None (the data's or
    the run's choice, see training/preprocessing.py)."""

    name: str
    config: dict = field(default_factory=dict)
    crop_pct: float | None = None
    crop_mode: str = "center"
    normalization: str | None = None
    note: str = ""

    def processor_options(self) -> dict:
        """The keywords of `ImageProcessor.for_image_size` this preset asks for."""
        return {"crop_mode": self.crop_mode, **({} if self.crop_pct is None else {"crop_pct": self.crop_pct})}


@dataclass(frozen=True)
class MethodCatalogue:
    """Everything a method's catalogue states."""

    method: str  # the config's model_type and the package name under mim_hub.models
    name: str
    paper: str
    repo: str
    license: str  # a Hub licence identifier
    presets: tuple[Preset, ...] = ()
    releases: tuple[Release, ...] = ()

    def info(self) -> dict[str, str]:
        """The facts a model card states (name, paper, repo, license)."""
        return {"name": self.name, "paper": self.paper, "repo": self.repo, "license": self.license}


def method_catalogue(method: str) -> MethodCatalogue:
    """The catalogue of `method` (mim_hub.models.<method>.catalogue.CATALOGUE)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return importlib.import_module(f"mim_hub.models.{method}.catalogue").CATALOGUE


def catalogues() -> list[MethodCatalogue]:
    """Every method's catalogue, in METHODS order."""
    return [method_catalogue(method) for method in METHODS]


def all_presets() -> dict[str, tuple[str, Preset]]:
    """Preset name -> (method, preset), over every method."""
    found: dict[str, tuple[str, Preset]] = {}
    for entry in catalogues():
        for preset in entry.presets:
            if preset.name in found:
                raise ValueError(f"preset {preset.name!r} is in both {found[preset.name][0]} and {entry.method}")
            found[preset.name] = (entry.method, preset)
    return found
