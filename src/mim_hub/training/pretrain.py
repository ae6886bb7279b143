"""Pre-train any method's *ForPreTraining model with Accelerate.

`pretrain(settings)` reads top to bottom, as nanoGPT's train.py does: build the model, the data
and the method's recipe, the optimizer and schedule, resume, loop, save. Everything random about
a sample (crop, flip, mask noise) is drawn from a generator seeded by (seed, epoch, index), so a
run resumed from a checkpoint continues exactly as the uninterrupted run would have. Runs
unchanged under `accelerate launch` with several processes. From Python:

    from mim_hub.training.settings import PretrainSettings
    from mim_hub.training.pretrain import pretrain
    pretrain(PretrainSettings(output_dir="runs/mae", model="mae-tiny-digits", max_steps=100))
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data import count_bad_images, open_stream
from ..data.stream import stream_images_for_statistics
from ..hub.push import push_folder
from ..utils.atomic import OutputLock, remove_stale_temporaries
from .checkpointing import check_resume, latest_checkpoint, read_state, run_record, save_checkpoint
from .compiling import compile_with
from .distributed import cpu_only, fsdp_plugin
from .ema import ModelEma
from .modelio import load_model
from .optim import build_optimizer, cosine_with_warmup, param_groups
from .preprocessing import build_processor, input_statistics, saved_processor
from .pretrain_data import PretrainData, PretrainLoader, dataset_statistics, normalizes_on_device
from .recipes import build_recipe, configure_model
from .saving import save_final
from .settings import MethodOptions, PretrainSettings
from ..utils.test_hooks import pause_if_asked
from ..utils.values import check_finite_loss, check_finite_model
from .throughput import Throughput

logger = logging.getLogger("mim_hub.pretrain")


def pretrain(settings: PretrainSettings) -> int:
    """The whole run (see the module docstring); every process of a launched run calls it."""
    if settings.fsdp and settings.model_ema:
        raise ValueError("--model-ema with --fsdp is not supported (the EMA would hold sharded tensors)")
    if settings.fsdp and settings.optimizer == "lamb":
        raise ValueError("--optimizer lamb with --fsdp is not supported: LAMB's norms would be computed over each rank's shard")
    # cpu=True on a machine without an accelerator: several launched processes are gloo ranks of one run
    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum, mixed_precision=settings.mixed_precision,
                              fsdp_plugin=fsdp_plugin() if settings.fsdp else None, cpu=cpu_only())
    os.makedirs(settings.output_dir, exist_ok=True)
    lock = OutputLock(settings.output_dir).acquire() if accelerator.is_main_process else None
    try:
        start(settings, accelerator)
        method, model = build_model(settings)
        data_started = time.perf_counter()  # the data layer's start-up: spec -> index -> loader (-> first batch, in the log)
        source, mean, std, saved = build_data(settings, method)
        options = MethodOptions(settings.flat())  # every setting by its flag name, the methods' own included
        configure_model(method, model, options, mean=mean, std=std)  # the method's own options, in the model
        config = model.config
        recipe = build_recipe(method, model, options, mean=mean, std=std, device=accelerator.device)
        compiled = compile_with(model, settings.compile)  # per block, in place: parameter names (checkpoints) unchanged
        loader, normalize = build_loader(settings, source, recipe, config, accelerator)
        data_index_s = time.perf_counter() - data_started
        plan = plan_schedule(settings, recipe, loader, accelerator)
        optimizer = build_optimizer(plan.optimizer, param_groups(model, plan.weight_decay), lr=plan.lr, betas=recipe.betas,
                                    max_grad_norm=plan.clip_grad)
        scheduler = cosine_with_warmup(optimizer, plan.warmup_steps, plan.total_steps, settings.min_lr_ratio, plan.weight_decay_end)
        model, optimizer, scheduler = loader.prepare(accelerator, model, optimizer, scheduler)
        # saved as ema.safetensors in each checkpoint (accelerate's custom-state reader would unpickle)
        ema = ModelEma(accelerator.unwrap_model(model), settings.model_ema_decay) if settings.model_ema else None
        # what the recipe keeps over the run besides the model (HPM: the EMA teacher choosing its masks), or None
        recipe_state = recipe.training_state(accelerator.unwrap_model(model), total_epochs=plan.total_steps / plan.steps_per_epoch)
        record = run_record(settings.flat(), config, method=method, **plan.record(), num_processes=accelerator.num_processes,
                            num_images=loader.num_images)
        kept = (ema, recipe_state)
        position = resume(settings, accelerator, loader, optimizer, scheduler, kept, plan, record)
        train(settings, accelerator, model, recipe, loader, normalize, optimizer, scheduler, kept, plan, position, record,
              Throughput(data_index_s, compiled), method)
        save(settings, accelerator, model, kept, method, mean, std, saved, plan)
    finally:
        if lock is not None:
            lock.release()
    return 0


def start(settings: PretrainSettings, accelerator) -> None:
    if accelerator.is_main_process:  # the folder is ours: what killed runs left half-written goes
        for folder in (settings.output_dir, os.path.join(settings.output_dir, "checkpoints")):
            for name in remove_stale_temporaries(folder, everything=True):
                logger.info("removed %s, left by an interrupted run", os.path.join(folder, name))
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_seed(settings.seed)


def build_model(settings: PretrainSettings):
    """(method, model): a preset or a saved folder, with the run's mask ratio and pixel loss."""
    overrides = {}
    if settings.mask_ratio is not None:
        overrides["mask_ratio"] = settings.mask_ratio
    if settings.norm_pix_loss is not None:
        overrides["norm_pix_loss"] = settings.norm_pix_loss == "true"
    return load_model(settings.model, "pretraining", method=settings.method, config_overrides=overrides)


def build_data(settings: PretrainSettings, method: str):
    """(the images: an indexed `ImageDataset` or a `StreamSource`, mean, std, the continued
    folder's saved image processor or None)."""
    saved = saved_processor(method, settings.model)
    if settings.data.streaming:
        data = settings.data
        source = open_stream(data.dataset, split=data.split, config=data.dataset_config, image_column=data.image_column,
                             label_column=data.label_column)
        mean, std = input_statistics(settings, saved, source, lambda: dataset_statistics(stream_images_for_statistics(source)))
    else:
        source = settings.data.images()
        source.bad_image_log = bad_image_log(settings)
        mean, std = input_statistics(settings, saved, source, lambda: dataset_statistics(source))
    return source, mean, std, saved


def bad_image_log(settings: PretrainSettings) -> str:
    return os.path.join(settings.output_dir, "bad_images.tsv")


def build_loader(settings: PretrainSettings, source, recipe, config, accelerator):
    """(the `PretrainLoader`, the on-device normalisation or None)."""
    transform = recipe.train_transform(min_crop_scale=settings.crop_min_scale, flip=not settings.no_flip)
    normalize = None
    if normalizes_on_device(recipe, transform, accelerator.device):
        logger.info("the data workers hand over uint8 crops, normalised on %s (the same values)", accelerator.device)
        normalize = transform.normalize
    data = PretrainData(None if settings.data.streaming else source, transform, recipe, config, settings.seed)
    loader = PretrainLoader(source, data, recipe.collate, settings=settings, accelerator=accelerator,
                            bad_image_log=bad_image_log(settings))
    return loader, normalize


@dataclass(frozen=True)
class Plan:
    """The run's length and learning rate, derived from the settings, the recipe and the data."""

    total_batch: int
    lr: float
    weight_decay: float
    warmup_steps: int
    total_steps: int
    steps_per_epoch: int
    optimizer: str = "adamw"
    weight_decay_end: float | None = None  # None: constant
    clip_grad: float | None = None  # the gradient norm's bound (LAMB applies it itself)

    def record(self) -> dict:  # what a checkpoint records of it
        return {"total_batch": self.total_batch, "lr": self.lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch}


def plan_schedule(settings: PretrainSettings, recipe, loader: PretrainLoader, accelerator) -> Plan:
    total_batch = settings.batch_size * settings.grad_accum * accelerator.num_processes
    lr = settings.lr if settings.lr is not None else (settings.base_lr or recipe.base_lr) * total_batch / 256
    weight_decay = recipe.weight_decay if settings.weight_decay is None else settings.weight_decay
    steps_per_epoch = max(1, loader.batches_per_epoch // settings.grad_accum)
    total_steps = settings.max_steps or int(math.ceil((settings.epochs or 1) * steps_per_epoch))
    warmup = settings.warmup_steps if settings.warmup_steps is not None else int(recipe.warmup_fraction * total_steps)
    optimizer = settings.optimizer or recipe.optimizer
    if optimizer == "lamb" and settings.fsdp:  # its global and per-tensor norms would be a shard's
        raise ValueError("--optimizer lamb with --fsdp is not supported: LAMB's norms would be computed over each rank's shard")
    weight_decay_end = settings.weight_decay_end if settings.weight_decay_end is not None else recipe.weight_decay_end
    clip_grad = settings.clip_grad if settings.clip_grad is not None else recipe.clip_grad
    return Plan(total_batch, lr, weight_decay, warmup, total_steps, steps_per_epoch, optimizer, weight_decay_end, clip_grad)


@dataclass
class Position:
    """Where the run is: optimizer steps done, the epoch, its steps done."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    resumed_with_changes: bool = False


def resume(settings: PretrainSettings, accelerator, loader, optimizer, scheduler, kept, plan: Plan, record: dict) -> Position:
    """The latest checkpoint's position (checked against this run), or the start; `kept`: the
    weight EMA and the recipe's state over the run (each or None), loaded with it."""
    checkpoint = latest_checkpoint(settings.output_dir) if settings.resume else None
    if checkpoint is None:
        if settings.resume:
            logger.info("--resume: no checkpoint in %s, starting from scratch", settings.output_dir)
        return Position()
    state = read_state(checkpoint, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    changed = check_resume(state, record, checkpoint, with_changes=settings.resume_with_changes,
                           exact_epochs=settings.grad_accum == 1 and accelerator.num_processes == 1)
    try:
        accelerator.load_state(checkpoint)
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise ValueError(f"--resume: {checkpoint} does not fit this model and optimiser: {str(error).splitlines()[0][:300]}") from None
    position = Position(state["step"], state["epoch"], state["batch_in_epoch"], bool(changed) or bool(state.get("resumed_with_changes")))
    if changed:
        old_batch = (state.get("run") or {}).get("total_batch", plan.total_batch)
        if isinstance(old_batch, int) and old_batch != plan.total_batch:  # keep the position in images, not batches
            position.batch_in_epoch = min(position.batch_in_epoch * old_batch // plan.total_batch, plan.steps_per_epoch)
        restart_schedule(scheduler, optimizer, plan.lr, position.step)
        logger.warning("--resume-with-changes: continuing %s with %s", checkpoint, "; ".join(changed))
    loader.resume(state, with_changes=settings.resume_with_changes)
    for part in kept:
        if part is not None:
            part.load(checkpoint)
    logger.info("resumed from %s (step %d)", checkpoint, position.step)
    return position


def restart_schedule(scheduler, optimizer, lr: float, step: int) -> None:
    """The loaded schedule continued at step `step` with this run's peak `lr` (--resume-with-changes)."""
    inner = getattr(scheduler, "scheduler", scheduler)
    inner.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, [f(step) for f in inner.lr_lambdas]):
        group["initial_lr"], group["lr"] = lr, lr * factor


def train(settings, accelerator, model, recipe, loader, normalize, optimizer, scheduler, kept, plan: Plan, position: Position,
          record: dict, throughput: Throughput, method: str) -> None:
    """The loop: batches of each epoch until `plan.total_steps` optimizer steps are done; `kept`:
    the weight EMA and the recipe's state over the run (each or None)."""
    ema, recipe_state = kept
    log = RunLog(settings, accelerator, throughput)
    progress = tqdm(total=plan.total_steps, initial=position.step, disable=not accelerator.is_local_main_process, desc=f"pre-train {method}")
    model.train()
    while position.step < plan.total_steps:
        throughput.waiting()
        for batch in loader.epoch(accelerator, position.epoch, position.batch_in_epoch, plan.steps_per_epoch):
            throughput.got_batch()
            batch = loader.take(batch, position.step)
            if normalize is not None:  # uint8 from the workers, the same table's values here
                batch["pixel_values"] = normalize.batch(batch["pixel_values"])
            inputs = recipe.model_inputs(batch)
            if recipe_state is not None:
                inputs = recipe_state.model_inputs(inputs, epoch=position.epoch)
            loss = train_step(accelerator, model, inputs, optimizer, scheduler, None if plan.optimizer == "lamb" else plan.clip_grad)
            throughput.count(batch["pixel_values"].shape[0] * accelerator.num_processes)
            if not accelerator.sync_gradients:
                throughput.waiting()
                continue
            position.step, position.batch_in_epoch = position.step + 1, position.batch_in_epoch + 1
            if ema is not None:
                ema.update(model)
            if recipe_state is not None:
                recipe_state.step_end(model, epoch=position.epoch)
            progress.update(1)
            log.step(position, loss, scheduler, plan.total_steps, progress)
            if settings.save_every and position.step % settings.save_every == 0 and position.step < plan.total_steps:
                state = {"step": position.step, "epoch": position.epoch, "batch_in_epoch": position.batch_in_epoch, "run": record,
                         "resumed_with_changes": position.resumed_with_changes}
                stream = loader.checkpoint_state(accelerator)
                save_checkpoint(accelerator, settings.output_dir, state if stream is None else {**state, "stream": stream},
                                settings.keep_checkpoints, ema=ema, recipe_state=recipe_state)
            if position.step >= plan.total_steps:
                break
            throughput.waiting()
        else:
            position.epoch, position.batch_in_epoch = position.epoch + 1, 0
    progress.close()
    loader.close()
    log.close()


def train_step(accelerator, model, inputs: dict, optimizer, scheduler, clip_grad: float | None) -> torch.Tensor:
    """One forward and backward (and, at the end of an accumulation, the optimizer step)."""
    with accelerator.accumulate(model):
        loss = model(**inputs).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and clip_grad:
            accelerator.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


class RunLog:
    """`log.jsonl` (and TensorBoard when installed) every `--log-every` steps, with throughput."""

    def __init__(self, settings: PretrainSettings, accelerator, throughput: Throughput):
        self.settings, self.accelerator, self.throughput = settings, accelerator, throughput
        self.path = os.path.join(settings.output_dir, "log.jsonl")
        self.writer = _tensorboard(settings.output_dir) if accelerator.is_main_process else None

    def step(self, position: Position, loss, scheduler, total_steps: int, progress) -> None:
        first_step_s = self.throughput.stepped()
        if first_step_s is not None and self.throughput.compiled_blocks:  # with --compile, the first step holds the compilation
            logger.info("--compile: %d blocks compiled (%s); the first step, compilation included, took %.1f s",
                        self.throughput.compiled_blocks, self.settings.compile.compile_backend, first_step_s)
        step = position.step
        if step % self.settings.log_every == 0 or step == total_steps:
            value = self.accelerator.gather(loss.detach().float().reshape(1)).mean().item()
            check_finite_loss(value, step)  # every rank sees the same value: every rank stops
            record = {"step": step, "epoch": position.epoch, "loss": value, "lr": scheduler.get_last_lr()[0], **self.throughput.record(),
                      "bad_images": count_bad_images(bad_image_log(self.settings))}
            progress.set_postfix(loss=f"{value:.4f}")
            if self.accelerator.is_main_process:
                with open(self.path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", value, step)
                    self.writer.add_scalar("train/lr", record["lr"], step)
        if self.accelerator.is_main_process:
            pause_if_asked("step", step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save(settings: PretrainSettings, accelerator, model, kept, method: str, mean, std, saved, plan: Plan) -> None:
    """The final model, its image processor and card (and the EMA's, and what the recipe keeps:
    HPM's teacher), pushed if asked."""
    ema, recipe_state = kept
    accelerator.wait_for_everyone()
    full_state = accelerator.get_state_dict(model) if settings.fsdp else None  # gathered from the shards (every process takes part)
    if accelerator.is_main_process:
        dataset = settings.data.dataset
        final = accelerator.unwrap_model(model)
        check_finite_model(final, f"pre-training {method} for {plan.total_steps} steps", full_state)
        processor = build_processor(method, final.config, mean, std, settings.model, saved)
        save_final(final, processor, settings.output_dir, method=method, state_dict=full_state,
                   provenance=f"Pre-trained with `mim-hub pretrain --method {method}` on `{dataset}` for {plan.total_steps} steps "
                   f"(batch {plan.total_batch}, lr {plan.lr:.2e}, seed {settings.seed}).", datasets=[dataset])
        if ema is not None:
            save_final(ema.module, processor, os.path.join(settings.output_dir, "ema"), method=method, datasets=[dataset],
                       provenance=f"Exponential moving average (decay {settings.model_ema_decay}) of the weights of `mim-hub pretrain "
                       f"--method {method}` on `{dataset}` for {plan.total_steps} steps.")
        for name, part in (recipe_state.final_models() if recipe_state is not None else {}).items():  # (HPM: its teacher, at ema/)
            save_final(part, processor, os.path.join(settings.output_dir, name), method=method, datasets=[dataset],
                       provenance=f"The `{name}` model kept by `mim-hub pretrain --method {method}` on `{dataset}` for "
                       f"{plan.total_steps} steps.")
        if settings.push_to_hub:
            push_folder(settings.output_dir, settings.push_to_hub, commit_message=f"Pre-trained {method}")
        logger.info("saved the pre-trained model to %s", settings.output_dir)
    accelerator.end_training()


def _tensorboard(folder: str):
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is not a dependency
    except ImportError:
        return None
    return SummaryWriter(os.path.join(folder, "tensorboard"))
