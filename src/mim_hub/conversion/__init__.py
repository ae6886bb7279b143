"""Converters of the original authors' checkpoints, one module per method, and `convert`, the
function behind `mim-hub convert`."""

from __future__ import annotations

import importlib
import logging

from .common import parse_overrides, save_atomically
from .loading import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["convert", "convert_checkpoint", "companion_models", "CheckpointError", "load_checkpoint"]


def convert_checkpoint(method: str, checkpoint: str, config=None):
    """(model, image processor) converted from an original checkpoint of `method`, in memory."""
    from ..auto import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    module = importlib.import_module(f"mim_hub.conversion.{method}")
    model, processor = module.convert_checkpoint(checkpoint, parse_overrides(config))
    model.config.architectures = [type(model).__name__]
    return model, processor


def companion_models(method: str, checkpoint: str, config=None) -> dict:
    """Models a checkpoint holds besides the one `convert_checkpoint` gives, by the subfolder of the
    output they are written to (HPM's EMA teacher: `ema`): `{name: (model, image processor)}`, from
    the method module's `convert_companions(path, overrides)` where it has one."""
    module = importlib.import_module(f"mim_hub.conversion.{method}")
    if not hasattr(module, "convert_companions"):
        return {}
    found = module.convert_companions(checkpoint, parse_overrides(config))
    for model, _ in found.values():
        model.config.architectures = [type(model).__name__]
    return found


def convert(method: str, checkpoint: str, output: str, *, config=None, overwrite: bool = False, push_to_hub: str | None = None, with_code: bool = False):
    """Convert `checkpoint` and write a `save_pretrained` folder at `output` (atomically: nothing is
    written there unless every step succeeds). Returns the model."""
    import os

    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (pass --overwrite to replace it)")
    model, processor = convert_checkpoint(method, checkpoint, config)
    companions = companion_models(method, checkpoint, config)  # written as subfolders (HPM: ema/)

    def write(folder: str) -> None:
        from ..hub import write_model_card

        for name, (part, part_processor) in [("", (model, processor)), *companions.items()]:
            target = os.path.join(folder, name) if name else folder
            if with_code:
                from ..hub.remote_code import save_with_code

                save_with_code(part, part_processor, target)
            else:
                part.save_pretrained(target)
                part_processor.save_pretrained(target)
            what = f"the original checkpoint `{os.path.basename(checkpoint)}`" + (f" (its `{name}` weights)" if name else "")
            write_model_card(
                target, part, method=method,
                provenance=f"Converted by `mim-hub convert --method {method}` from {what}. Outputs of the converted model "
                "equal the original code's to rtol 1e-4 / atol 1e-5 in float32 (checked on the project's golden fixtures).",
            )

    save_atomically(output, write, overwrite=overwrite)
    if push_to_hub:
        from ..hub.push import push_folder

        push_folder(output, push_to_hub, commit_message=f"Add {method} converted from {os.path.basename(checkpoint)}")
    return model
