"""Argument groups shared by several commands, and the one way a Namespace becomes settings."""

from __future__ import annotations

import argparse
import dataclasses
import os

# as in training/compiling.py (which imports torch; the parser does not need to)
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def default_num_workers() -> int:
    """DataLoader workers by default: the CPUs this process may use, less one for the main
    process, at most 8 (and 0 on a single CPU)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


def add_data_arguments(parser, default: str | None = "digits", streaming: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default,
                       help="'digits' (bundled, offline), 'imagefolder:PATH', a save_to_disk folder, a folder or glob of "
                            "parquet/arrow files, 'webdataset:PATH_OR_GLOB' (tar shards), or a Hub dataset name")
    group.add_argument("--dataset-config", default=None, help="configuration name of a Hub dataset")
    group.add_argument("--split", default="train", help="split to train on")
    group.add_argument("--eval-split", default=None,
                       help="split to evaluate on (default: 'test', else 'validation', when the dataset has it; never the training split)")
    group.add_argument("--image-column", default=None, help="image column (datasets) or member extension (webdataset); auto-detected")
    group.add_argument("--label-column", default=None, help="label column (datasets) or member extension (webdataset); auto-detected")
    group.add_argument("--on-bad-image", choices=("skip", "error"), default="skip",
                       help="skip (and count and name) unreadable images, or stop at the first")
    group.add_argument("--max-image-pixels", type=int, default=None,
                       help="pixel budget of one decoded image (default 64 Mpx): JPEGs above it are decoded at 1/2, 1/4 or 1/8 "
                            "scale, other images above it are unreadable (skipped and named)")
    if streaming:
        group.add_argument("--streaming", action="store_true",
                           help="iterate a Hub, parquet or webdataset source without downloading, converting or indexing it first")
        group.add_argument("--shuffle-buffer", type=int, default=10_000, help="--streaming: shuffle buffer size (samples per worker)")


def add_compile_arguments(parser) -> None:
    group = parser.add_argument_group("compilation")
    group.add_argument("--compile", action="store_true", help="torch.compile each transformer block (compile time in the log)")
    group.add_argument("--compile-backend", choices=COMPILE_BACKENDS, default="inductor",
                       help="torch.compile backend (aot_eager: graph capture without code generation, fast to compile)")
    group.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                       help="inductor mode: reduce-overhead / max-autotune use CUDA graphs on a GPU (MAE-family shapes are static)")


def settings_from(cls, args: argparse.Namespace, **given):
    """An instance of the dataclass `cls` from the Namespace's attributes of its fields' names
    (a field the command has no flag for keeps its default); `given` fills or overrides fields."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in given and hasattr(args, f.name)}
    return cls(**values, **given)


def data_settings(args: argparse.Namespace):
    from ..training.settings import DataSettings  # (the settings module imports the data layer: only when a command runs)

    return settings_from(DataSettings, args)


def compile_settings(args: argparse.Namespace):
    from ..training.settings import CompileSettings

    return settings_from(CompileSettings, args)
