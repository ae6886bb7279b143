"""`mim-hub` (also `python -m mim_hub`): convert, pretrain, finetune, eval, reconstruct, prepare-shards, demo, zoo.

Building the parser imports the command layer only (`commands/`: argument tables, no torch); in
this process `import mim_hub` left the registration with the Auto classes to `main`, which does it
once the arguments are read and a command is to run (`utils/entry_point.py`). So `--help` and a
refused argument cost the interpreter's start, not torch's and transformers'.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import _import_everything
from .commands import COMMANDS
from .models.catalogue import METHODS
from .utils.values import check_values


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an ORIGINAL checkpoint of a method into a save_pretrained folder",
        description=(
            "Convert an original-format checkpoint (as released by the method's authors, or a training "
            "checkpoint of their code) into a folder with config.json, model.safetensors, "
            "preprocessor_config.json and a README.md model card. Sizes are inferred from tensor shapes and "
            "the kind (pre-training with decoder / encoder only / fine-tuned classifier) from the keys. "
            "Nothing is written at --output unless conversion succeeds."
        ),
    )
    parser.add_argument("--method", required=True, choices=METHODS, help="which method's checkpoint format to read")
    parser.add_argument("--checkpoint", required=True, help="path of the original checkpoint file (.pth/.pt/.bin/.pth.tar/.safetensors)")
    parser.add_argument("--output", required=True, help="folder to write (created; must not exist or be empty unless --overwrite)")
    parser.add_argument(
        "--config", default=None,
        help="JSON object (inline or a file path) of config fields that shapes cannot tell or that override "
        "what is inferred, e.g. '{\"num_attention_heads\": 16, \"norm_pix_loss\": true}'",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="also upload the converted folder to this Hub repo")
    parser.add_argument("--with-code", action="store_true", help="save the modeling code with the model (trust_remote_code loading)")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    convert(
        args.method, args.checkpoint, args.output, config=args.config, overwrite=args.overwrite,
        push_to_hub=args.push_to_hub, with_code=args.with_code,
    )
    print(f"converted {args.checkpoint} -> {args.output}")
    return 0


def _add_zoo(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="list the methods, presets and the original checkpoints they convert from")
    parser.add_argument("--format", choices=("table", "json", "markdown"), default="table", help="output format")
    parser.set_defaults(func=run_zoo)


def run_zoo(args: argparse.Namespace) -> int:
    from .zoo import print_zoo

    print_zoo(args.format)
    return 0


def _add_commands(subparsers, built) -> None:
    """Every command, with the arguments of those in `built` only: building a command's arguments
    imports its module, which `mim-hub --help` and other commands need not."""
    for name, (module_name, help_text) in COMMANDS.items():
        if name not in built:
            subparsers.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(f"mim_hub.commands.{module_name}")
        parser = subparsers.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(parser)
        parser.set_defaults(func=module.main)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `mim-hub`; given the command line `argv`, only its command's arguments are
    built (the others are listed by name and help)."""
    parser = argparse.ArgumentParser(prog="mim-hub", description="Masked-image-modeling model zoo on transformers.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_commands(subparsers, COMMANDS if argv is None else [next((a for a in argv if not a.startswith("-")), None)])
    try:
        importlib.import_module("mim_hub.zoo")
        _add_zoo(subparsers)
    except ModuleNotFoundError:
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        _check_values(args)
        _import_everything()  # what `import mim_hub` does elsewhere: every model registered before the command runs
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, OSError) as error:
        if args.verbose:
            raise
        print(f"mim-hub {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    """The error's own message: a DataLoader worker's error arrives as "Caught X in DataLoader
    worker process N. Original Traceback ...": the message is its last line."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _check_values(args: argparse.Namespace) -> None:
    """Every numeric option in its range before anything runs (utils/values.py)."""
    check_values(args, args.command)
    if getattr(args, "max_image_pixels", None) is not None:  # read by every process that decodes (data/decode.py)
        from .data.decode import set_max_image_pixels  # (the data layer: imported when a command runs)

        set_max_image_pixels(args.max_image_pixels)


if __name__ == "__main__":
    raise SystemExit(main())
