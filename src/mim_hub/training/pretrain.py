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
import time

import numpy as np
import torch

from ..utils.atomic import OutputLock, remove_stale_temporaries
from .checkpointing import check_resume, latest_checkpoint, read_state, run_record, save_checkpoint
from .compiling import add_compile_arguments, compile_from_args
from .crash_points import pause_if_asked
from .data import add_dataset_arguments, count_bad_images, dataset_from_args, default_num_workers
from .optim import adamw, cosine_with_warmup, param_groups
from .preprocessing import build_processor, input_statistics, saved_processor
from .recipes import build_recipe, get_recipe
from .saving import save_final
from .validation import check_finite_loss, check_finite_model

logger = logging.getLogger("mim_hub.pretrain")
SAMPLE_LOG_ENV = "MIM_HUB_SAMPLE_LOG"
NORMALIZE_ON_DEVICE_ENV = "MIM_HUB_NORMALIZE_ON_DEVICE"  # "1": also on CPU (where it only moves the work; for tests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default=None, help="method key (mae, simmim, cae, mr_mae, color_mae, crate_mae, hpm); default: from --model")
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
    from ..auto import available_methods

    for method in available_methods():
        get_recipe(method).add_arguments(parser)


def normalizes_on_device(recipe, transform, device) -> bool:
    """Whether the workers hand over uint8 crops, normalised on the device (the same values, bit for
    bit; see `RandomResizedCropFlip(uint8=True)`): on a GPU, for the plain crop-and-flip
    augmentation and collation (a recipe with its own transform or collate keeps its float
    pixels: it may compute from them). Sets the transform so."""
    from .recipes import PretrainRecipe
    from .transforms import RandomResizedCropFlip

    plain = type(transform) is RandomResizedCropFlip and type(recipe).collate is PretrainRecipe.collate
    wanted = plain and (device.type != "cpu" or os.environ.get(NORMALIZE_ON_DEVICE_ENV) == "1")
    if wanted:
        transform.uint8 = True
    return wanted


class EpochPermutation(torch.utils.data.Sampler):
    """A fresh permutation each epoch, a function of (seed, epoch) only. Yields (epoch, index)
    pairs, so that persistent workers know the epoch without being told."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order, epoch = torch.randperm(self.length, generator=generator).numpy(), self.epoch
        return ((epoch, int(i)) for i in order)  # not a list of N tuples (1.28M of them: ~100 MB)

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

    def __getitem__(self, item) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        views, rng = self.images.with_image(index, lambda image: self.augment(image, np.random.default_rng([self.seed, epoch, index]))
                                            )[0]  # an unreadable image: the next readable one, same draws
        return {**views, **self.recipe.sample_inputs(rng)}

    def augment(self, image, rng, label=None):
        if not getattr(self.transform, "accepts_lazy_images", False):
            image = image.convert("RGB") if image.mode != "RGB" else image
        views = self.transform(image, rng)  # an array, or named arrays (e.g. CAE's two views)
        views = {name: torch.from_numpy(v) for name, v in views.items()} if isinstance(views, dict) else {"pixel_values": torch.from_numpy(views)}
        return views, rng

    def stream_sample(self, image, rng, label=None) -> dict:
        """A sample of a streamed image (`streaming.ShardedStream`'s `sample_fn`)."""
        views, rng = self.augment(image, rng)
        return {**views, **self.recipe.sample_inputs(rng)}


def check_stream_resume(state: dict, args, num_processes: int, world: dict | None = None) -> None:
    """A streamed run resumes exactly only with the stream it was interrupted in."""
    saved = state.get("stream")
    if saved is None:
        raise ValueError("--resume --streaming: the checkpoint was written by a run without --streaming")
    now = {"num_workers": args.num_workers, "num_processes": num_processes, "batch_size": args.batch_size, "seed": args.seed,
           "shuffle_buffer": args.shuffle_buffer}
    changed = {k: (saved[k], v) for k, v in now.items() if saved.get(k) != v}
    if changed:
        raise ValueError("--resume --streaming needs the interrupted run's stream settings; changed: "
                         + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    if world is not None:
        from .streaming import world_differences

        differences = world_differences(saved.get("world"), world)
        if differences and getattr(args, "resume_with_changes", False):
            logger.warning("--resume-with-changes: the stream's data changed since the checkpoint (%s): the resumed stream is "
                           "not the interrupted one's (some samples are seen twice, others never)", "; ".join(differences))
        elif differences:
            raise ValueError(f"--resume --streaming: {args.dataset} is not the data the interrupted run streamed; "
                             + "; ".join(differences) + " (resuming would see some samples twice and others never; "
                             "--resume-with-changes continues anyway)")


def dataset_statistics(images, limit: int = 2000) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the training images in [0, 1] (an `ImageDataset`, or a list of
    PIL images)."""
    pick = (lambda i: images[i]) if isinstance(images, list) else images.image
    values = np.stack([np.asarray(pick(i).convert("RGB").resize((32, 32)), dtype=np.float64) / 255
                       for i in range(min(len(images), limit))])
    return tuple(values.mean((0, 1, 2)).round(4).tolist()), tuple(values.std((0, 1, 2)).round(4).tolist())


def main(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    plugin = None
    if args.fsdp:
        if args.model_ema:
            raise ValueError("--model-ema with --fsdp is not supported (the EMA would hold sharded tensors)")
        from .distributed import fsdp_plugin

        plugin = fsdp_plugin()
    from .distributed import cpu_only

    # cpu=True on a machine without an accelerator: several launched processes are gloo ranks of one run
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision, fsdp_plugin=plugin,
                              cpu=cpu_only())
    os.makedirs(args.output_dir, exist_ok=True)
    lock = OutputLock(args.output_dir).acquire() if accelerator.is_main_process else None
    try:
        return _run(args, accelerator)
    finally:
        if lock is not None:
            lock.release()


def _run(args: argparse.Namespace, accelerator) -> int:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .modelio import load_model

    if accelerator.is_main_process:  # the folder is ours: what killed runs left half-written goes
        for folder in (args.output_dir, os.path.join(args.output_dir, "checkpoints")):
            for name in remove_stale_temporaries(folder, everything=True):
                logger.info("removed %s, left by an interrupted run", os.path.join(folder, name))
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
    config = model.config

    # data: indexed and decoded per item in the workers (or streamed, see streaming.py)
    data_started = time.perf_counter()  # the data layer's own start-up: spec -> index -> loader -> first batch
    bad_image_log = os.path.join(args.output_dir, "bad_images.tsv")
    loader_options = dict(batch_size=args.batch_size, num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
                          pin_memory=accelerator.device.type == "cuda")
    saved_preprocessing = saved_processor(method, args.model)  # a continued folder's image processor, or None
    if args.streaming:
        from .streaming import (ShardedStream, StreamState, collate_with_positions, open_stream, stream_images_for_statistics,
                                stream_world)

        source = open_stream(args.dataset, split=args.split, config=args.dataset_config, image_column=args.image_column,
                             label_column=args.label_column)
        images = None
        mean, std = input_statistics(args, saved_preprocessing, source, lambda: dataset_statistics(stream_images_for_statistics(source)))
    else:
        images = dataset_from_args(args)
        images.bad_image_log = bad_image_log
        mean, std = input_statistics(args, saved_preprocessing, images, lambda: dataset_statistics(images))
    recipe = build_recipe(method, model, args, mean=mean, std=std, device=accelerator.device)  # the run's options applied to the model
    compiled = compile_from_args(model, args)  # per block, in place: parameter names (checkpoints) unchanged
    transform = recipe.train_transform(min_crop_scale=args.crop_min_scale, flip=not args.no_flip)
    normalize_on_device = normalizes_on_device(recipe, transform, accelerator.device)
    if normalize_on_device:
        logger.info("the data workers hand over uint8 crops, normalised on %s (the same values)", accelerator.device)
    data = PretrainData(images, transform, recipe, config, args.seed)
    if args.streaming:
        stream = ShardedStream(source, data.stream_sample, seed=args.seed, shuffle_buffer=args.shuffle_buffer,
                               rank=accelerator.process_index, world_size=accelerator.num_processes, on_bad_image=args.on_bad_image,
                               bad_image_log=bad_image_log)
        stream_state, slots_per_rank = StreamState(), max(1, args.num_workers)
        loader = torch.utils.data.DataLoader(stream, collate_fn=collate_with_positions(recipe.collate), **loader_options)
        per_step = args.batch_size * args.grad_accum * accelerator.num_processes
        if source.total is None and args.max_steps is None:
            raise ValueError(f"--streaming: the size of {args.dataset} is not known without reading it; give --max-steps")
        batches_per_epoch = max(1, (source.total or per_step) // (args.batch_size * accelerator.num_processes))
    else:
        sampler = EpochPermutation(len(data), args.seed)
        loader = torch.utils.data.DataLoader(data, sampler=sampler, drop_last=True, collate_fn=recipe.collate, **loader_options)
        if len(loader) == 0:
            raise ValueError(f"{len(data)} images are fewer than one batch of {args.batch_size}")
        batches_per_epoch = len(loader) // accelerator.num_processes
    data_index_s = time.perf_counter() - data_started

    # optimiser and schedule
    total_batch = args.batch_size * args.grad_accum * accelerator.num_processes
    lr = args.lr if args.lr is not None else (args.base_lr or recipe.base_lr) * total_batch / 256
    weight_decay = recipe.weight_decay if args.weight_decay is None else args.weight_decay
    optimizer = adamw(param_groups(model, weight_decay), lr=lr, betas=recipe.betas)
    steps_per_epoch = max(1, batches_per_epoch // args.grad_accum)
    total_steps = args.max_steps or int(math.ceil((args.epochs or 1) * steps_per_epoch))
    warmup = args.warmup_steps if args.warmup_steps is not None else int(recipe.warmup_fraction * total_steps)
    scheduler = cosine_with_warmup(optimizer, warmup, total_steps, args.min_lr_ratio)
    if args.streaming:  # each rank reads its own shards: the loader is not sharded by accelerate
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    else:
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema = None
    if args.model_ema:  # saved as ema.safetensors in each checkpoint (accelerate's custom-state reader would unpickle)
        from .ema import ModelEma

        ema = ModelEma(accelerator.unwrap_model(model), args.model_ema_decay)
    # what the recipe keeps over the run besides the model (HPM: the EMA teacher choosing its masks), or None
    recipe_state = recipe.training_state(accelerator.unwrap_model(model), total_epochs=total_steps / steps_per_epoch)

    # resume
    step, epoch, batch_in_epoch = 0, 0, 0
    run = run_record(args, config, method=method, total_batch=total_batch, lr=lr, warmup_steps=warmup, total_steps=total_steps,
                     steps_per_epoch=steps_per_epoch, num_processes=accelerator.num_processes,
                     num_images=len(data) if images is not None else source.total)
    resumed_with_changes = False
    if args.resume:
        checkpoint = latest_checkpoint(args.output_dir)
        if checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", args.output_dir)
        else:
            state = read_state(checkpoint, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
            changed = check_resume(state, run, checkpoint, with_changes=args.resume_with_changes,
                                   exact_epochs=args.grad_accum == 1 and accelerator.num_processes == 1)
            try:
                accelerator.load_state(checkpoint)
            except (RuntimeError, KeyError, ValueError, OSError) as error:
                raise ValueError(f"--resume: {checkpoint} does not fit this model and optimiser: {str(error).splitlines()[0][:300]}") from None
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            resumed_with_changes = bool(changed) or bool(state.get("resumed_with_changes"))
            if changed:
                saved = state.get("run") or {}
                old_batch = saved.get("total_batch", total_batch)
                if isinstance(old_batch, int) and old_batch != total_batch:  # keep the position in images, not batches
                    batch_in_epoch = min(batch_in_epoch * old_batch // total_batch, steps_per_epoch)
                inner = getattr(scheduler, "scheduler", scheduler)
                inner.base_lrs = [lr for _ in optimizer.param_groups]
                for group, factor in zip(optimizer.param_groups, [f(step) for f in inner.lr_lambdas]):
                    group["initial_lr"], group["lr"] = lr, lr * factor
                logger.warning("--resume-with-changes: continuing %s with %s", checkpoint, "; ".join(changed))
            if args.streaming:
                check_stream_resume(state, args, accelerator.num_processes, stream_world(source))
                stream.resume(state["stream"]["positions"], state["stream"]["batches"])
                stream_state = StreamState(state["stream"]["positions"], state["stream"]["batches"])
            if ema is not None:
                ema.load(checkpoint)
            if recipe_state is not None:
                recipe_state.load(checkpoint)
            logger.info("resumed from %s (step %d)", checkpoint, step)

    # loop
    log_path = os.path.join(args.output_dir, "log.jsonl")
    writer = _tensorboard(args.output_dir) if accelerator.is_main_process else None
    progress = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process, desc=f"pre-train {method}")
    model.train()
    started, seen, data_wait, first_step_s, compile_logged, first_batch_s = time.time(), 0, 0.0, None, False, None
    data_logged = False
    stream_batches = iter(loader) if args.streaming else None  # one endless stream for the whole run
    sample_log = None  # MIM_HUB_SAMPLE_LOG=FOLDER: each rank writes the keys of the samples it trains on (an audit)
    if args.streaming and os.environ.get(SAMPLE_LOG_ENV):
        os.makedirs(os.environ[SAMPLE_LOG_ENV], exist_ok=True)
        sample_log = open(os.path.join(os.environ[SAMPLE_LOG_ENV], f"samples.rank{accelerator.process_index}.tsv"), "a", buffering=1)
    while step < total_steps:
        if args.streaming:
            import itertools

            batches = itertools.islice(stream_batches, (steps_per_epoch - batch_in_epoch) * args.grad_accum)
        else:
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, batch_in_epoch * args.grad_accum) if batch_in_epoch else loader
        waiting = time.perf_counter()
        for batch in batches:
            data_wait += time.perf_counter() - waiting
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - waiting
            if args.streaming:
                stream_state.update(batch.pop("stream_position"))
                keys = batch.pop("stream_keys")
                if sample_log is not None:
                    sample_log.write("".join(f"{step + 1}\t{key}\n" for key in keys))
                batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            if normalize_on_device:  # uint8 from the workers, the same table's values here
                batch["pixel_values"] = transform.normalize.batch(batch["pixel_values"])
            with accelerator.accumulate(model):
                inputs = recipe.model_inputs(batch)
                if recipe_state is not None:
                    inputs = recipe_state.model_inputs(inputs, epoch=epoch)
                loss = model(**inputs).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.clip_grad:
                    accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            seen += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                waiting = time.perf_counter()
                continue
            step += 1
            batch_in_epoch += 1
            if ema is not None:
                ema.update(model)
            if recipe_state is not None:
                recipe_state.step_end(model, epoch=epoch)
            progress.update(1)
            if first_step_s is None:  # with --compile, the first step holds the compilation
                first_step_s = time.time() - started
                if compiled:
                    logger.info("--compile: %d blocks compiled (%s); the first step, compilation included, took %.1f s",
                                compiled, args.compile_backend, first_step_s)
            if step % args.log_every == 0 or step == total_steps:
                value = accelerator.gather(loss.detach().float().reshape(1)).mean().item()
                check_finite_loss(value, step)  # every rank sees the same value: every rank stops
                record = {"step": step, "epoch": epoch, "loss": value, "lr": scheduler.get_last_lr()[0],
                          "images_per_s": seen / max(1e-9, time.time() - started), "elapsed_s": time.time() - started,
                          "data_wait_fraction": round(data_wait / max(1e-9, time.time() - started), 4),
                          "bad_images": count_bad_images(bad_image_log)}
                if not data_logged:  # the first record: what the data layer's start-up took (index + loader, first batch)
                    record["data_index_s"], record["data_first_batch_s"], data_logged = round(data_index_s, 3), round(first_batch_s, 3), True
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
                state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "run": run,
                         "resumed_with_changes": resumed_with_changes}
                if args.streaming:
                    state["stream"] = {"positions": stream_state.gathered(accelerator, slots_per_rank), "batches": stream_state.batches,
                                       "num_workers": args.num_workers,
                                       "num_processes": accelerator.num_processes, "batch_size": args.batch_size, "seed": args.seed,
                                       "shuffle_buffer": args.shuffle_buffer, "world": stream_world(source)}
                save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints, ema=ema, recipe_state=recipe_state)
            if step >= total_steps:
                break
            waiting = time.perf_counter()
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    progress.close()
    if sample_log is not None:
        sample_log.close()

    # final model, processor and card
    accelerator.wait_for_everyone()
    full_state = accelerator.get_state_dict(model) if args.fsdp else None  # gathered from the shards (every process takes part)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        check_finite_model(final, f"pre-training {method} for {total_steps} steps", full_state)
        processor = build_processor(method, final.config, mean, std, args.model, saved_preprocessing)
        save_final(final, processor, args.output_dir, method=method, state_dict=full_state,
                   provenance=f"Pre-trained with `mim-hub pretrain --method {method}` on `{args.dataset}` for {total_steps} steps "
                   f"(batch {total_batch}, lr {lr:.2e}, seed {args.seed}).", datasets=[args.dataset])
        if ema is not None:
            save_final(ema.module, processor, os.path.join(args.output_dir, "ema"), method=method, datasets=[args.dataset],
                       provenance=f"Exponential moving average (decay {args.model_ema_decay}) of the weights of `mim-hub pretrain "
                       f"--method {method}` on `{args.dataset}` for {total_steps} steps.")
        for name, part in (recipe_state.final_models() if recipe_state is not None else {}).items():  # (HPM: its teacher, at ema/)
            save_final(part, processor, os.path.join(args.output_dir, name), method=method, datasets=[args.dataset],
                       provenance=f"The `{name}` model kept by `mim-hub pretrain --method {method}` on `{args.dataset}` for {total_steps} steps.")
        if writer is not None:
            writer.close()
        if args.push_to_hub:
            from ..hub.push import push_folder

            push_folder(args.output_dir, args.push_to_hub, commit_message=f"Pre-trained {method}")
        logger.info("saved the pre-trained model to %s", args.output_dir)
    accelerator.end_training()
    return 0


def _tensorboard(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(folder, "tensorboard"))
