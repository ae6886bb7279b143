"""Pre-train any method's *ForPreTraining model with Accelerate.

Reads top to bottom: arguments, data, model, optimiser, loop, checkpoints. Everything random
about a sample (crop, flip, mask noise) is drawn from a generator seeded by (seed, epoch, index),
so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
Runs unchanged under `accelerate launch` with several processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time

import numpy as np
import torch

from .compiling import add_compile_arguments, compile_from_args
from .crash_points import pause_if_asked
from .data import add_dataset_arguments, dataset_from_args
from .optim import adamw, cosine_with_warmup, param_groups
from .recipes import get_recipe

logger = logging.getLogger("mim_hub.pretrain")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=None, help="method key (mae, simmim, cae, mr_mae, color_mae, crate_mae); default: from --model")
    parser.add_argument("--model", default="mae-tiny-digits", help="a saved model folder to continue from, or a preset name")
    parser.add_argument("--output-dir", required=True, help="where checkpoints, logs and the final model go")
    add_dataset_arguments(parser)
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=float, default=None, help="epochs to train (or use --max-steps)")
    group.add_argument("--max-steps", type=int, default=None, help="optimizer steps to train")
    group.add_argument("--batch-size", type=int, default=64, help="images per device per step")
    group.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    group.add_argument("--base-lr", type=float, default=None, help="lr = base_lr x total batch / 256 (default: the method's)")
    group.add_argument("--lr", type=float, default=None, help="absolute learning rate (overrides --base-lr)")
    group.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: the method's, 0.05)")
    group.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of the run)")
    group.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr as a fraction of the peak")
    group.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    group.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no", help="autocast precision (bf16 is stable for MAE; fp16 is not)")
    group.add_argument("--mask-ratio", type=float, default=None, help="override the model's mask ratio")
    group.add_argument("--norm-pix-loss", choices=("true", "false"), default=None, help="override the model's norm_pix_loss")
    group.add_argument("--normalization", choices=("imagenet", "dataset"), default=None,
                       help="input mean/std: ImageNet's, or measured on the training images (default: dataset for digits)")
    group.add_argument("--crop-min-scale", type=float, default=None, help="RandomResizedCrop's smallest area fraction (default: the method's, 0.2 for MAE)")
    group.add_argument("--no-flip", action="store_true", help="no random horizontal flips (e.g. for digits or text)")
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation, masks and init")
    group.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    group.add_argument("--log-every", type=int, default=10, help="log every N optimizer steps")
    group.add_argument("--save-every", type=int, default=200, help="checkpoint every N optimizer steps (0: only at the end)")
    group.add_argument("--keep-checkpoints", type=int, default=2, help="how many recent checkpoints to keep")
    group.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in --output-dir")
    group.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the final model to this Hub repo")
    add_compile_arguments(parser)
    from ..auto import available_methods

    for method in available_methods():
        get_recipe(method).add_arguments(parser)


class EpochPermutation(torch.utils.data.Sampler):
    """A fresh permutation each epoch, a function of (seed, epoch) only."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class PretrainData(torch.utils.data.Dataset):
    """Augmented images plus the recipe's per-sample inputs, drawn from (seed, epoch, index)."""

    def __init__(self, images, transform, recipe, config, seed: int):
        self.images, self.transform, self.recipe, self.config, self.seed, self.epoch = images, transform, recipe, config, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        views = self.transform(self.images.image(index), rng)  # an array, or named arrays (e.g. CAE's two views)
        views = {name: torch.from_numpy(v) for name, v in views.items()} if isinstance(views, dict) else {"pixel_values": torch.from_numpy(views)}
        return {**views, **self.recipe.sample_inputs(self.config, rng)}


def dataset_statistics(images, limit: int = 2000) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the training images in [0, 1]."""
    values = np.stack([np.asarray(images.image(i).resize((32, 32)), dtype=np.float64) / 255 for i in range(min(len(images), limit))])
    return tuple(values.mean((0, 1, 2)).round(4).tolist()), tuple(values.std((0, 1, 2)).round(4).tolist())


def build_processor(method: str, config, mean, std):
    from ..auto import method_classes

    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    cls = method_classes(method)["image_processor"]
    if size <= 64:  # small images (digits): no resize margin, no crop
        return cls(size={"height": size, "width": size}, do_center_crop=False, image_mean=list(mean), image_std=list(std))
    short = int(round(size / 0.875))
    return cls(size={"shortest_edge": short}, crop_size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std))


def latest_checkpoint(folder: str) -> str | None:
    root = os.path.join(folder, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root) if d.startswith("step_") and os.path.isfile(os.path.join(root, d, "state.json")))
    return os.path.join(root, done[-1]) if done else None


def save_checkpoint(accelerator, folder: str, state: dict, keep: int) -> None:
    """accelerate state + our counters, written to a temporary folder and renamed into place."""
    root = os.path.join(folder, "checkpoints")
    final = os.path.join(root, f"step_{state['step']:08d}")
    tmp = os.path.join(root, f".tmp-step_{state['step']:08d}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
        pause_if_asked("checkpoint-begin", state["step"])  # test-only crash points: crash_points.py
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pause_if_asked("checkpoint-written", state["step"])
        with open(os.path.join(tmp, "state.json"), "w") as handle:
            json.dump(state, handle)
        pause_if_asked("checkpoint-rename", state["step"])
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pause_if_asked("checkpoint-prune", state["step"])
        old = sorted(d for d in os.listdir(root) if d.startswith("step_"))
        for name in old[:-keep] if keep > 0 else []:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    accelerator.wait_for_everyone()


def main(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .modelio import load_model

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision)
    os.makedirs(args.output_dir, exist_ok=True)
    if accelerator.is_main_process:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_seed(args.seed)

    # model
    overrides = {}
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    if args.norm_pix_loss is not None:
        overrides["norm_pix_loss"] = args.norm_pix_loss == "true"
    method, model = load_model(args.model, "pretraining", method=args.method, config_overrides=overrides)
    recipe = get_recipe(method)
    recipe.configure_model(model, args)
    config = model.config
    compiled = compile_from_args(model, args)  # per block, in place: parameter names (checkpoints) unchanged

    # data
    images = dataset_from_args(args)
    normalization = args.normalization or ("dataset" if args.dataset == "digits" else "imagenet")
    mean, std = dataset_statistics(images) if normalization == "dataset" else (IMAGENET_MEAN, IMAGENET_STD)
    transform = recipe.train_transform(config, mean, std, min_crop_scale=args.crop_min_scale, flip=not args.no_flip)
    data = PretrainData(images, transform, recipe, config, args.seed)
    sampler = EpochPermutation(len(data), args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                                         collate_fn=recipe.collate, num_workers=args.num_workers)
    if len(loader) == 0:
        raise ValueError(f"{len(data)} images are fewer than one batch of {args.batch_size}")

    # optimiser and schedule
    total_batch = args.batch_size * args.grad_accum * accelerator.num_processes
    lr = args.lr if args.lr is not None else (args.base_lr or recipe.base_lr) * total_batch / 256
    weight_decay = recipe.weight_decay if args.weight_decay is None else args.weight_decay
    optimizer = adamw(param_groups(model, weight_decay), lr=lr, betas=recipe.betas)
    steps_per_epoch = max(1, len(loader) // accelerator.num_processes // args.grad_accum)
    total_steps = args.max_steps or int(math.ceil((args.epochs or 1) * steps_per_epoch))
    warmup = args.warmup_steps if args.warmup_steps is not None else int(recipe.warmup_fraction * total_steps)
    scheduler = cosine_with_warmup(optimizer, warmup, total_steps, args.min_lr_ratio)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    # resume
    step, epoch, batch_in_epoch = 0, 0, 0
    if args.resume:
        checkpoint = latest_checkpoint(args.output_dir)
        if checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", args.output_dir)
        else:
            accelerator.load_state(checkpoint)
            state = json.load(open(os.path.join(checkpoint, "state.json")))
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            logger.info("resumed from %s (step %d)", checkpoint, step)

    # loop
    log_path = os.path.join(args.output_dir, "log.jsonl")
    writer = _tensorboard(args.output_dir) if accelerator.is_main_process else None
    progress = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process, desc=f"pre-train {method}")
    model.train()
    started, seen, first_step_s, compile_logged = time.time(), 0, None, False
    while step < total_steps:
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, batch_in_epoch * args.grad_accum) if batch_in_epoch else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.clip_grad:
                    accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            batch_in_epoch += 1
            progress.update(1)
            if first_step_s is None:  # with --compile, the first step holds the compilation
                first_step_s = time.time() - started
                if compiled:
                    logger.info("--compile: %d blocks compiled (%s); the first step, compilation included, took %.1f s",
                                compiled, args.compile_backend, first_step_s)
            if step % args.log_every == 0 or step == total_steps:
                value = accelerator.gather(loss.detach().float().reshape(1)).mean().item()
                record = {"step": step, "epoch": epoch, "loss": value, "lr": scheduler.get_last_lr()[0],
                          "images_per_s": seen / max(1e-9, time.time() - started), "elapsed_s": time.time() - started}
                if compiled and not compile_logged:  # the first record of this process: the step that compiled
                    record["compiled_blocks"], record["first_step_s"], compile_logged = compiled, round(first_step_s, 3), True
                progress.set_postfix(loss=f"{value:.4f}")
                if accelerator.is_main_process:
                    with open(log_path, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    if writer is not None:
                        writer.add_scalar("train/loss", value, step)
                        writer.add_scalar("train/lr", record["lr"], step)
            if accelerator.is_main_process:
                pause_if_asked("step", step)
            if args.save_every and step % args.save_every == 0 and step < total_steps:
                save_checkpoint(accelerator, args.output_dir, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}, args.keep_checkpoints)
            if step >= total_steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    progress.close()

    # final model, processor and card
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        processor = build_processor(method, final.config, mean, std)
        save_final(final, processor, args.output_dir, method=method,
                   provenance=f"Pre-trained with `mim-hub pretrain --method {method}` on `{args.dataset}` for {total_steps} steps "
                   f"(batch {total_batch}, lr {lr:.2e}, seed {args.seed}).", datasets=[args.dataset])
        if writer is not None:
            writer.close()
        if args.push_to_hub:
            from ..hub.push import push_folder

            push_folder(args.output_dir, args.push_to_hub, commit_message=f"Pre-trained {method}")
        logger.info("saved the pre-trained model to %s", args.output_dir)
    accelerator.end_training()
    return 0


def save_final(model, processor, folder: str, *, method: str, provenance: str, **card) -> None:
    """Write model, processor and card into `folder` atomically (a temporary folder, then each
    file renamed into place), leaving checkpoints and logs beside them untouched."""
    from ..hub import write_model_card

    tmp = os.path.join(folder, ".tmp-final")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    write_model_card(tmp, model, method=method, provenance=provenance, **card)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    os.rmdir(tmp)


def _tensorboard(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(folder, "tensorboard"))
