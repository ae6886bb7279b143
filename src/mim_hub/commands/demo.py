"""`mim-hub demo`: the offline end-to-end demo on digits (`mim_hub.training.demo`)."""

from __future__ import annotations

import argparse
import logging

from .arguments import default_num_workers

# the demo's pre-training recipe (as training/demo.py's DEMO_RECIPE, which the parser does not import)
DEMO_RECIPE = {"batch_size": 32, "steps": 2400, "lr": 5e-4}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="outputs/demo", help="where everything is written")
    parser.add_argument("--pretrain-steps", type=int, default=DEMO_RECIPE["steps"], help="pre-training optimizer steps")
    parser.add_argument("--pretrain-batch-size", type=int, default=DEMO_RECIPE["batch_size"], help="pre-training batch size")
    parser.add_argument("--pretrain-lr", type=float, default=DEMO_RECIPE["lr"], help="pre-training peak learning rate")
    parser.add_argument("--finetune-epochs", type=float, default=8, help="Trainer fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (a smoke run, for tests)")
    parser.add_argument("--overwrite", action="store_true", help="start again even if --output-dir holds a finished pre-training run")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..training.demo import run_demo  # (the run: imported when the command runs)

    run_demo(args.output_dir, pretrain_steps=args.pretrain_steps, pretrain_batch_size=args.pretrain_batch_size,
             pretrain_lr=args.pretrain_lr, finetune_epochs=args.finetune_epochs, seed=args.seed,
             quick=args.quick, overwrite=args.overwrite, num_workers=default_num_workers())
    return 0
