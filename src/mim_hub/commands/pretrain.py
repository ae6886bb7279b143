"""`mim-hub pretrain`: pre-train any method's *ForPreTraining model with Accelerate.

Reads top to bottom: the flags, the settings they make (`PretrainSettings`), the run
(`mim_hub.training.pretrain.pretrain`).
"""

from __future__ import annotations

import argparse
import dataclasses

from ..models.catalogue import METHODS
from .arguments import add_compile_arguments, add_data_arguments, compile_settings, data_settings, default_num_workers, settings_from
from .method_options import add_method_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=None, help="method key (mae, simmim, cae, mr_mae, color_mae, crate_mae); default: from --model")
    parser.add_argument("--model", default="mae-tiny-digits", help="a saved model folder to continue from, or a preset name")
    parser.add_argument("--output-dir", required=True, help="where checkpoints, logs and the final model go")
    add_data_arguments(parser)
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=float, default=None, help="epochs to train (or use --max-steps)")
    group.add_argument("--max-steps", type=int, default=None, help="optimizer steps to train")
    group.add_argument("--batch-size", type=int, default=64, help="images per device per step")
    group.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    group.add_argument("--base-lr", type=float, default=None, help="lr = base_lr x total batch / 256 (default: the method's)")
    group.add_argument("--lr", type=float, default=None, help="absolute learning rate (overrides --base-lr)")
    group.add_argument("--optimizer", choices=("adamw", "lamb"), default=None,
                       help="adamw, or lamb (LAMB, which clips the global gradient norm itself to --clip-grad); default: the method's "
                            "(lamb for spark, adamw for the others)")
    group.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: the method's, 0.05)")
    group.add_argument("--weight-decay-end", type=float, default=None,
                       help="anneal the weight decay along a cosine to this value at the last step (default: the method's: "
                            "0.2 for spark, constant for the others)")
    group.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of the run)")
    group.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr as a fraction of the peak")
    group.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value (default: the method's: 5 for spark)")
    group.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no", help="autocast precision (bf16 is stable for MAE; fp16 is not)")
    group.add_argument("--mask-ratio", type=float, default=None, help="override the model's mask ratio")
    group.add_argument("--norm-pix-loss", choices=("true", "false"), default=None, help="override the model's norm_pix_loss")
    group.add_argument("--normalization", choices=("imagenet", "dataset"), default=None,
                       help="input mean/std: ImageNet's, or measured on the training images (default: the preset's, else the "
                            "data's own (dataset for digits), else a continued folder's saved processor's, else imagenet)")
    group.add_argument("--crop-min-scale", type=float, default=None, help="RandomResizedCrop's smallest area fraction (default: the method's, 0.2 for MAE)")
    group.add_argument("--no-flip", action="store_true", help="no random horizontal flips (e.g. for digits or text)")
    group.add_argument("--fsdp", action="store_true",
                       help="shard with FSDP2 (Accelerate's plugin, fsdp_version=2; sharded checkpoints); GPUs: on CPU Accelerate runs DDP")
    group.add_argument("--model-ema", action="store_true", help="keep an EMA of the weights (timm ModelEmaV2), saved in checkpoints and to OUTPUT/ema")
    group.add_argument("--model-ema-decay", type=float, default=0.9999, help="EMA decay")
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation, masks and init")
    group.add_argument("--num-workers", type=int, default=default_num_workers(),
                       help="data loader worker processes (default: the CPUs less one, at most 8)")
    group.add_argument("--log-every", type=int, default=10, help="log every N optimizer steps")
    group.add_argument("--save-every", type=int, default=200, help="checkpoint every N optimizer steps (0: only at the end)")
    group.add_argument("--keep-checkpoints", type=int, default=2, help="how many recent checkpoints to keep")
    group.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in --output-dir "
                       "(refused when the checkpoint was written with other arguments)")
    group.add_argument("--resume-with-changes", action="store_true",
                       help="with --resume: continue a checkpoint written with other arguments, following the new ones (lr, "
                       "schedule and data position rescaled)")
    group.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the final model to this Hub repo")
    add_compile_arguments(parser)
    add_method_arguments(parser, METHODS)  # each method's own flags (a table: no recipe is imported)


def settings(args: argparse.Namespace):
    """The run's `PretrainSettings`: every flag once; the methods' own flags as `method_options`."""
    from ..training.settings import DataSettings, PretrainSettings  # (imports the data layer)

    core = {f.name for f in dataclasses.fields(PretrainSettings)}
    core |= {f.name for f in dataclasses.fields(DataSettings)} | {"compile", "compile_backend", "compile_mode"}
    neutral = {"func", "command", "verbose"}
    options = {k: v for k, v in vars(args).items() if k not in core and k not in neutral}
    return settings_from(PretrainSettings, args, data=data_settings(args), compile=compile_settings(args), method_options=options)


def main(args: argparse.Namespace) -> int:
    from ..training.pretrain import pretrain  # the run itself (accelerate, the data layer): imported when the command runs

    return pretrain(settings(args))
