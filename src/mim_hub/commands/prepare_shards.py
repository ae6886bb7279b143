"""`mim-hub prepare-shards`: write any `--dataset` source as webdataset tar shards of bounded image
size (`mim_hub.data.shard_writing`)."""

from __future__ import annotations

import argparse
import sys
import time

from .arguments import add_data_arguments, default_num_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder to write the shards and manifest.json into")
    add_data_arguments(parser, streaming=False)
    parser.add_argument("--max-side", type=int, default=320, help="longer image side at most this (0: keep the size)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--num-workers", type=int, default=None, help="processes writing shards (default: from the CPU count)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards and manifest of another run (other settings or source) in --output")


def main(args: argparse.Namespace) -> int:
    from ..data import available_splits
    from ..data.shard_writing import prepare_shards  # (the command's imports, when it runs)

    splits = [args.split]
    if args.eval_split:
        splits.append(args.eval_split)
    elif args.split == "train":  # every split the source has, when that is cheap to tell
        splits = available_splits(args.dataset) or splits
    started = time.time()
    manifest = prepare_shards(args.dataset, args.output, splits=splits, image_column=args.image_column, label_column=args.label_column,
                              max_side=args.max_side, quality=args.quality, shard_size=args.shard_size,
                              num_workers=args.num_workers if args.num_workers is not None else max(1, default_num_workers()),
                              on_bad_image=args.on_bad_image, command="mim-hub " + " ".join(sys.argv[1:]), overwrite=args.overwrite)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['samples']} samples in {len(info['shards'])} shards ({info['skipped']} unreadable skipped)")
    print(f"wrote {args.output} in {time.time() - started:.1f} s")
    return 0
