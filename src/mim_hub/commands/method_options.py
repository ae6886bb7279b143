"""Each method's own `mim-hub pretrain` flags, as data: `mim-hub pretrain --help` lists them
without importing any method's recipe (which imports torch and the method's model), and a run
parses them before it knows its method (`--model PRESET` tells it).

The run hands the values to the method's recipe by name (`PretrainSettings.method_options`; a
flag `--num-mask-patches` is read as `options.num_mask_patches` in the recipe's `configure_model`
or `recipe_options`). A method with flags of its own: one entry here, beside its recipe in
`training/recipes/<method>.py`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

# ColorMAE's noise colours, as layers/mask_color_noise.py's COLORS (which imports torch; the
# parser does not need to; tests/commands/test_method_options.py keeps the two the same)
NOISE_COLORS = ("red", "blue", "green", "purple")


@dataclass(frozen=True)
class Flag:
    """One flag: its name and `argparse`'s keywords of `add_argument`."""

    name: str
    options: dict = field(default_factory=dict)


METHOD_FLAGS: dict[str, tuple[Flag, ...]] = {
    "cae": (
        Flag("--tokenizer", {"default": None, "help": "CAE: the DALL-E dVAE encoder.pkl (or a state-dict file of it) giving the target "
                                                      "ids; default 'color', a weightless colour quantiser for offline demos"}),
        Flag("--num-mask-patches", {"type": int, "default": None, "help": "CAE: patches masked per image (default: the model's, 98 of 196)"}),
    ),
    "mr_mae": (
        Flag("--teacher", {"action": "append", "default": None, "metavar": "PATH",
                           "help": "MR-MAE: a frozen teacher to mimic (a transformers CLIP/ViT/DINOv2 model folder or Hub id); repeat for several"}),
        Flag("--mimic-weight", {"action": "append", "type": float, "default": None, "metavar": "W",
                                "help": "MR-MAE: weight of each --teacher's mimic loss, in the same order (default 1 each)"}),
    ),
    "color_mae": (
        Flag("--noise-color", {"choices": NOISE_COLORS, "default": None, "help": "ColorMAE: colour of the masking noise (default: the model's, green)"}),
        Flag("--noise-patterns", {"default": None, "help": "ColorMAE: the authors' <color>_noise_data_3072.npz (default: generated offline)"}),
    ),
}


def add_method_arguments(parser: argparse.ArgumentParser, methods) -> None:
    """Each of `methods`' own flags, in an argument group named as the method."""
    for method in methods:
        flags = METHOD_FLAGS.get(method, ())
        if flags:
            group = parser.add_argument_group(method)
            for flag in flags:
                group.add_argument(flag.name, **flag.options)


__all__ = ["Flag", "METHOD_FLAGS", "NOISE_COLORS", "add_method_arguments"]
