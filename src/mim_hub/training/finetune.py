"""Fine-tune a *ForImageClassification model with transformers' Trainer.

Labels come from the dataset (`id2label`/`label2id` are saved with the model); the MAE recipe's
layer-wise lr decay, label smoothing, stochastic depth and the accuracy metric are applied. With
`validation_fraction` (`--validation-fraction`) a seeded, stratified part of the training split is
held out and the best epoch on it is kept; otherwise the last epoch is. The evaluation split is
evaluated once, at the end, and never selects anything. From Python:

    from mim_hub.training.finetune import finetune
    trainer, metrics = finetune("my-mae", train_images, eval_images, output_dir="my-mae-ft", epochs=5)

The keyword options are `FinetuneSettings`' fields (their defaults stated there once); the run
reads top to bottom: check the data, build the model and processor, the data and augmentation,
the optimizer and schedule, the Trainer; train, evaluate, save.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch

from accelerate import PartialState
from transformers import AutoImageProcessor, TrainerCallback, TrainingArguments, set_seed

from ..auto import method_classes
from ..data.labels import check_labelled
from ..hub.push import push_folder
from .augment import FinetuneTransform, Mixup, MixupCollator, RandomErasing
from .augmented_trainer import AugmentedTrainer, soft_target_loss
from .compiling import compile_with
from .distributed import cpu_only, trainer_fsdp_arguments
from .ema import EmaCallback, ModelEma
from .evaluate import check_labels
from .finetune_protocol import check_pooling_applies, classifier_config_overrides, selection_and_evaluation, write_settings
from .finetune_recipes import learning_rate
from .label_splits import validation_split
from .modelio import method_of_folder
from ..utils.values import check_finite_model, check_values
from .optim import adamw, cosine_with_warmup, param_groups_lrd
from .saving import save_final
from .settings import FinetuneSettings
from .transforms import RandomResizedCropFlip

logger = logging.getLogger("mim_hub.finetune")


class ClassificationData(torch.utils.data.Dataset):
    """Labelled images through `transform`. For training (`train`), a sample's augmentation is
    drawn from a generator seeded with (seed, epoch, index), so it depends on nothing else: not
    on the worker that reads it, nor on how many samples a process read before (a resumed run
    draws what the uninterrupted one drew). `set_epoch` is called at each epoch's start
    (`DataEpochCallback`); `with_keys` adds each sample's `sample_key` (epoch, index), from which
    `MixupCollator` seeds the batch's mixing."""

    def __init__(self, images, transform, seed: int, train: bool, *, with_keys: bool = False):
        self.images, self.transform, self.seed, self.train, self.with_keys = images, transform, seed, train, with_keys
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        seed = [self.seed, self.epoch, index]

        def transform(image):  # an unreadable image: the next readable one stands in, with its label
            image = image.convert("RGB") if image.mode != "RGB" else image
            return self.transform(image, np.random.default_rng(seed) if self.train else None)

        pixels, used = self.images.with_image(index, transform)
        sample = {"pixel_values": torch.as_tensor(np.asarray(pixels)), "labels": torch.tensor(int(self.images.labels[used]))}
        if self.with_keys:
            sample["sample_key"] = torch.tensor([self.epoch, index])
        return sample


class DataEpochCallback(TrainerCallback):
    """Tells the training data which epoch begins (the Trainer's own `set_epoch` reaches a
    dataset only when its sampler has none). Called before the epoch's data loader starts its
    workers, which are therefore not persistent: each epoch's copy of the dataset knows its epoch.
    On resume the epoch is the checkpoint's (`state.epoch`, a float, mid-epoch included)."""

    def __init__(self, dataset: ClassificationData):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch + 1e-6))


def _eval_transform(processor):
    return lambda image, rng=None: processor(image, return_tensors="np").pixel_values[0]


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def finetune(model_dir: str, train_images, eval_images=None, *, output_dir: str, settings: FinetuneSettings | None = None,
             **options):
    """Fine-tune with transformers' Trainer; returns (trainer, final evaluation metrics).

    `settings` (default `FinetuneSettings()`), with `options` (its fields by name) replacing
    some. `image_size` / `window_size` fine-tune at another geometry than the model's: it is
    loaded with `load_at_geometry` (position tables resized, one model's memory) and the image
    processor follows the new size. The timm-style augmentations (`rand_augment`,
    `reprob`/`remode`, `mixup`/`cutmix`) and `model_ema` are off by default; `--recipe` turns on
    what the paper's recipe has. The lr is `lr_rule` applied to `base_lr` and the effective batch
    (batch x grad_accum x processes); it is logged, returned as `metrics["learning_rate"]` and
    written to `finetune_settings.json`.

    `pooling` and `drop_path` reach every method's config, or raise ValueError where they cannot
    apply (see `finetune_protocol`); None: mean pooling, drop path 0.1 where the method has it.
    `validation_fraction` > 0: that part of `train_images` (stratified, seeded) is held out and the
    best epoch on it kept (`metrics["validation_accuracy"]`); `eval_images` is evaluated once at
    the end (`metrics["eval_accuracy"]`) and never selects."""
    s = dataclasses.replace(settings, **options) if settings is not None else FinetuneSettings.of(**options)
    check_values(s, "finetune")  # the settings in their ranges, as the CLI's options are
    names = check_datasets(train_images, eval_images)
    method = method_of_folder(model_dir)
    set_seed(s.seed)  # the new head's init: the seed's, not whatever this process drew before
    model, processor, pooling = build_classifier(model_dir, method, names, s)
    validation_images = None
    if s.validation_fraction:  # held out of the training split: the only split that selects
        train_images, validation_images = validation_split(train_images, s.validation_fraction, s.seed)
    train_data, eval_data, collator = build_data(train_images, eval_images, processor, model.config, len(names), s)
    validation_data = ClassificationData(validation_images, _eval_transform(processor), s.seed, False) if validation_images is not None else None
    state = PartialState(cpu=cpu_only())  # on CPU, launched processes are gloo ranks (see distributed.cpu_only)
    schedule = plan_schedule(len(train_data), state.num_processes, s)
    trainer, ema = build_trainer(model, train_data, validation_data, collator, schedule, output_dir, s, keep_checkpoints=eval_data is not None)
    write_settings(output_dir, used_settings(method, model_dir, model, pooling, train_data, validation_images, eval_images, schedule, s))
    trainer.train(resume_from_checkpoint=s.resume_from_checkpoint)
    if not s.fsdp:
        check_finite_model(trainer.model, f"fine-tuning {model_dir}")
    metrics = selection_and_evaluation(trainer, validation_data, eval_data)
    save(trainer, ema, processor, metrics, method, model_dir, train_images, eval_images, eval_data, schedule, output_dir, s)
    metrics.update(learning_rate=schedule.lr, effective_batch=schedule.effective_batch)
    return trainer, metrics


def used_settings(method, model_dir, model, pooling, train_data, validation_images, eval_images, schedule, s) -> dict:
    """What `finetune_settings.json` records: the settings a fine-tune actually used."""
    return {"method": method, "model": model_dir, "train_images": len(train_data), "epochs": s.epochs, "steps": schedule.steps,
            "effective_batch": schedule.effective_batch, "lr": schedule.lr, "lr_rule": s.lr_rule, "base_lr": s.base_lr,
            "min_lr": schedule.min_lr, "layer_decay": s.layer_decay, "weight_decay": s.weight_decay,
            "label_smoothing": s.label_smoothing, "warmup_steps": min(schedule.warmup_steps, schedule.steps), "pooling": pooling,
            **({"drop_path_rate": model.config.drop_path_rate} if hasattr(model.config, "drop_path_rate") else {}),
            "crop_min_scale": s.crop_min_scale, "flip": s.flip, "seed": s.seed,
            "model_selection": f"best epoch on {validation_images.name}" if validation_images is not None else "last epoch",
            "evaluation": eval_images.name if eval_images is not None else None}


def check_datasets(train_images, eval_images) -> list[str]:
    """The class names; an error for unlabelled data, ids out of range or a single class."""
    num_classes = check_labelled(train_images, eval_images, "fine-tuning")  # every id in [0, classes) (data/labels.py)
    check_labels(train_images.labels, f"the training split of {train_images.name}")  # one class: a num_labels 1 regression
    return train_images.label_names or [str(i) for i in range(num_classes)]


def build_classifier(model_dir: str, method: str, names: list[str], s: FinetuneSettings):
    """(the method's classifier with a fresh head of `names`, its image processor, the pooling it uses)."""
    config_class = method_classes(method)["config"]
    extra = classifier_config_overrides(method, config_class, pooling=s.pooling, drop_path=s.drop_path)  # or refused, naming the method
    geometry = {k: v for k, v in (("image_size", s.image_size), ("window_size", s.window_size)) if v is not None}
    if "window_size" in geometry and "window_size" not in config_class.__dataclass_fields__:
        raise ValueError(f"{method} models have no attention window: --window-size applies to Swin backbones")
    classifier = method_classes(method)["classification"]
    load = classifier.load_at_geometry if geometry else classifier.from_pretrained  # (another geometry: position tables resized)
    model = load(model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                 ignore_mismatched_sizes=True, **extra, **geometry)
    pooling = check_pooling_applies(model, s.pooling)
    model.prepare_for_finetuning()  # the method's fine-tuning layout (SimMIM's ViT: a relative position table per block)
    compiled = compile_with(model, s.compile)  # per block, in place: parameter names (Trainer checkpoints, resume) unchanged
    if compiled:
        logger.info("--compile: %d blocks compiled (%s)", compiled, s.compile.compile_backend)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    if s.image_size is not None and hasattr(processor, "with_image_size"):  # evaluation inputs of the new size, the rest as saved
        processor = processor.with_image_size(_side(model.config))
    return model, processor, pooling


def _side(config) -> int:
    return config.image_size if isinstance(config.image_size, int) else config.image_size[0]


def build_data(train_images, eval_images, processor, config, num_labels: int, s: FinetuneSettings):
    """(training data, evaluation data or None, the MixUp/CutMix collator or None)."""
    size, rand_augment = _side(config), None if s.rand_augment in (None, "", "none") else s.rand_augment
    if rand_augment or s.reprob > 0:
        erasing = RandomErasing(s.reprob, s.remode) if s.reprob > 0 else None
        transform = FinetuneTransform(size, processor.image_mean, processor.image_std, scale=(s.crop_min_scale, 1.0), flip=s.flip,
                                      rand_augment=rand_augment, erasing=erasing)
    else:
        transform = RandomResizedCropFlip(size, processor.image_mean, processor.image_std, scale=(s.crop_min_scale, 1.0), flip=s.flip)
    mixing = s.mixup > 0 or s.cutmix > 0
    train_data = ClassificationData(train_images, transform, s.seed, True, with_keys=mixing)
    eval_data = ClassificationData(eval_images, _eval_transform(processor), s.seed, False) if eval_images is not None else None
    collator = None
    if mixing:
        collator = MixupCollator(Mixup(num_classes=num_labels, mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, prob=s.mixup_prob,
                                       switch_prob=s.mixup_switch_prob, label_smoothing=s.label_smoothing),
                                 seed=s.seed, rank=PartialState(cpu=cpu_only()).process_index)
    return train_data, eval_data, collator


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The run's effective batch, learning rate and length."""

    effective_batch: int
    lr: float
    min_lr: float
    steps: int
    warmup_steps: int


def plan_schedule(num_images: int, num_processes: int, s: FinetuneSettings) -> Schedule:
    if s.grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {s.grad_accum}")
    effective_batch = s.batch_size * s.grad_accum * num_processes
    lr = learning_rate(s.lr_rule, s.base_lr, effective_batch)
    min_lr = learning_rate(s.lr_rule, s.min_lr, effective_batch) if s.lr_rule == "blr/512" else s.min_lr  # SimMIM scales it too
    steps_per_epoch = max(1, int(np.ceil(np.ceil(num_images / (s.batch_size * num_processes)) / s.grad_accum)))
    steps = max(1, int(np.ceil(steps_per_epoch * s.epochs)))
    warmup = int(round(s.warmup_epochs * steps_per_epoch)) if s.warmup_epochs is not None else int(s.warmup_ratio * steps)
    logger.info("effective batch %d (%d per device x %d accumulation x %d processes), lr %.3g (%s of base lr %.3g)",
                effective_batch, s.batch_size, s.grad_accum, num_processes, lr, s.lr_rule, s.base_lr)
    return Schedule(effective_batch, lr, min_lr, steps, warmup)


def build_trainer(model, train_data, validation_data, collator, schedule: Schedule, output_dir: str, s: FinetuneSettings, *,
                  keep_checkpoints: bool = False):
    """(the `AugmentedTrainer`, the weight EMA or None). The Trainer evaluates the validation
    split each epoch and keeps the best (when there is one); checkpoints are saved per epoch when
    `s.save_checkpoints` and something is evaluated or averaged (`keep_checkpoints`: an
    evaluation split at the end)."""
    def make_optimizer(m):
        return adamw(param_groups_lrd(m, s.weight_decay, s.layer_decay), lr=schedule.lr)

    def make_scheduler(opt):
        ratio = min(1.0, schedule.min_lr / schedule.lr) if schedule.lr > 0 else 0.0
        return cosine_with_warmup(opt, min(schedule.warmup_steps, schedule.steps), schedule.steps, min_lr_ratio=ratio)

    if s.fsdp and s.model_ema:
        raise ValueError("--model-ema with --fsdp is not supported (the EMA would hold sharded tensors)")
    if s.fsdp and not torch.cuda.is_available():
        raise ValueError("--fsdp fine-tuning needs CUDA devices (transformers' Trainer runs FSDP only in distributed GPU training); "
                         "on CPU fine-tune without --fsdp")
    # with FSDP the Trainer wraps the model, then builds the optimizer from the factories
    optimizer = None if s.fsdp else make_optimizer(model)
    scheduler = None if s.fsdp else make_scheduler(optimizer)
    arguments = TrainingArguments(
        output_dir=output_dir, num_train_epochs=s.epochs, per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        eval_strategy="epoch" if validation_data is not None else "no",
        save_strategy="epoch" if s.save_checkpoints and (validation_data is not None or keep_checkpoints or s.model_ema) else "no",
        load_best_model_at_end=validation_data is not None, metric_for_best_model="accuracy", greater_is_better=True,
        save_total_limit=2, seed=s.seed, report_to="none", remove_unused_columns=False,
        logging_steps=max(1, schedule.steps // 20), dataloader_num_workers=s.num_workers, disable_tqdm=not s.log_to_console,
        dataloader_persistent_workers=False, dataloader_pin_memory=torch.cuda.is_available(),
        push_to_hub=bool(s.push_to_hub), hub_model_id=s.push_to_hub, use_cpu=cpu_only(),
        **(trainer_fsdp_arguments(model) if s.fsdp else {}),
    )
    ema = ModelEma(model, s.model_ema_decay) if s.model_ema else None
    callbacks = [DataEpochCallback(train_data)] + ([EmaCallback(ema, resume_from=s.resume_from_checkpoint)] if ema is not None else [])
    trainer = AugmentedTrainer(model=model, args=arguments, train_dataset=train_data, eval_dataset=validation_data, data_collator=collator,
                               compute_metrics=accuracy, optimizers=(optimizer, scheduler), callbacks=callbacks,
                               compute_loss_func=soft_target_loss(s.label_smoothing),
                               optimizer_factory=make_optimizer if s.fsdp else None, scheduler_factory=make_scheduler if s.fsdp else None)
    return trainer, ema


def save(trainer, ema, processor, metrics: dict, method: str, model_dir: str, train_images, eval_images, eval_data, schedule: Schedule,
         output_dir: str, s: FinetuneSettings) -> None:
    """The fine-tuned model, its processor and card (with the accuracy); the EMA's beside it."""
    card_metrics = [{"dataset": eval_images.name, "type": "accuracy", "value": round(metrics["eval_accuracy"], 4), "name": "top-1"}] \
        if "eval_accuracy" in metrics else None
    augment = ", ".join(a for a in (f"RandAugment {s.rand_augment}" if s.rand_augment not in (None, "", "none") else "",
                                    f"random erasing {s.reprob}" if s.reprob else "", f"MixUp {s.mixup}" if s.mixup else "",
                                    f"CutMix {s.cutmix}" if s.cutmix else "") if a)
    provenance = (f"Fine-tuned from `{model_dir}` with `mim-hub finetune`{f' --recipe {s.recipe}' if s.recipe else ''} (transformers Trainer) on "
                  f"`{train_images.name}`: {s.epochs} epochs, effective batch {schedule.effective_batch}, lr {schedule.lr:.2e}, layer decay "
                  f"{s.layer_decay}, label smoothing {s.label_smoothing}{', ' + augment if augment else ''}.")
    save_final(trainer.model, processor, output_dir, method=method, datasets=[train_images.name], metrics=card_metrics, provenance=provenance)
    if ema is not None:
        if eval_images is not None:
            weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            trainer.model.load_state_dict(ema.module.state_dict())
            metrics.update(trainer.evaluate(eval_dataset=eval_data, metric_key_prefix="eval_ema"))
            trainer.model.load_state_dict(weights)
        ema_metrics = [{"dataset": eval_images.name, "type": "accuracy", "value": round(metrics["eval_ema_accuracy"], 4),
                        "name": "top-1 (EMA)"}] if "eval_ema_accuracy" in metrics else None
        save_final(ema.module, processor, os.path.join(output_dir, "ema"), method=method, datasets=[train_images.name], metrics=ema_metrics,
                   provenance=provenance + f" Exponential moving average of the weights, decay {s.model_ema_decay}.")
    if s.push_to_hub:
        push_folder(output_dir, s.push_to_hub, commit_message=f"Fine-tuned {method}")
