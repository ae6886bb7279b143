"""Fine-tune a *ForImageClassification model with transformers' Trainer.

Labels come from the dataset (`id2label`/`label2id` are saved with the model); the MAE recipe's
layer-wise lr decay, label smoothing, stochastic depth and the accuracy metric are applied. With
`validation_fraction` (`--validation-fraction`) a seeded, stratified part of the training split is
held out and the best epoch on it is kept; otherwise the last epoch is. The evaluation split is
evaluated once, at the end, and never selects anything. From Python:

    from mim_hub.training.finetune import finetune
    trainer, metrics = finetune("my-mae", train_images, eval_images, output_dir="my-mae-ft", epochs=5)
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import torch

from .compiling import add_compile_arguments, compile_blocks
from .data import add_dataset_arguments, dataset_from_args, default_num_workers, evaluation_split
from .evaluate import check_labels
from .optim import adamw, cosine_with_warmup, param_groups_lrd
from .transforms import RandomResizedCropFlip

logger = logging.getLogger("mim_hub.finetune")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("image-classification", "semantic-segmentation"), default="image-classification",
                        help="image-classification (the method's classifier) or semantic-segmentation (UperNet on the "
                             "model's backbone; see training/segmentation.py)")
    parser.add_argument("--model", required=True, help="saved model folder (a pre-trained or converted mim_hub model)")
    parser.add_argument("--output-dir", required=True, help="where checkpoints and the fine-tuned model go")
    add_dataset_arguments(parser, streaming=False)
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="a paper's fine-tuning recipe (mim-hub zoo lists them, with sources): its values fill every flag not given")
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per device per step (default 64)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="gradient accumulation steps (default 1; with --recipe: enough to reach the recipe's effective batch)")
    parser.add_argument("--base-lr", type=float, default=None,
                        help="base lr, scaled by the effective batch as the recipe's original does (default: lr = base_lr x batch / 256, 5e-4)")
    parser.add_argument("--min-lr", type=float, default=None, help="lr at the end of the cosine schedule (default 0)")
    parser.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay (MAE: 0.65 ViT-B, 0.75 ViT-L/H; default 0.65)")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--label-smoothing", type=float, default=None, help="label smoothing factor (default 0.1; folded into MixUp targets)")
    parser.add_argument("--drop-path", type=float, default=None,
                        help="stochastic depth rate (default 0.1; refused for a method without stochastic depth, e.g. CRATE-MAE)")
    parser.add_argument("--warmup-ratio", type=float, default=None, help="fraction of steps for linear warm-up (default 0.1)")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="epochs of linear warm-up (overrides --warmup-ratio)")
    parser.add_argument("--crop-min-scale", type=float, default=None, help="RandomResizedCrop's smallest area fraction (default 0.08)")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--rand-augment", default=None, metavar="CONFIG",
                        help="timm RandAugment config, e.g. rand-m9-mstd0.5-inc1; 'none' for none (default none)")
    parser.add_argument("--reprob", type=float, default=None, help="random erasing probability (default 0)")
    parser.add_argument("--remode", choices=("pixel", "rand", "const"), default=None, help="random erasing fill (default pixel)")
    parser.add_argument("--mixup", type=float, default=None, help="MixUp alpha, on if > 0 (default 0)")
    parser.add_argument("--cutmix", type=float, default=None, help="CutMix alpha, on if > 0 (default 0)")
    parser.add_argument("--mixup-prob", type=float, default=None, help="probability of mixing a batch (default 1)")
    parser.add_argument("--mixup-switch-prob", type=float, default=None, help="probability of CutMix when both are on (default 0.5)")
    parser.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=None, help="keep an EMA of the weights (timm ModelEmaV2)")
    parser.add_argument("--model-ema-decay", type=float, default=None, help="EMA decay (default 0.9999)")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (GPUs; see docs/training.md for the accelerate config)")
    parser.add_argument("--resume-from-checkpoint", default=None, metavar="DIR", help="resume from a checkpoint-N folder of --output-dir")
    parser.add_argument("--image-size", type=int, default=None,
                        help="fine-tune at this resolution (default: the model's); position tables are resized, as SimMIM/MAE do")
    parser.add_argument("--window-size", type=int, default=None, help="Swin: fine-tune with this attention window (SimMIM: 6 -> 7 at 224 px)")
    parser.add_argument("--pooling", choices=("mean", "cls"), default=None,
                        help="classifier head input: mean of patch tokens (MAE recipe, the default) or the cls token (refused "
                             "for a model without one); reaches every method's config (use_mean_pooling, or CRATE's pooling)")
    parser.add_argument("--validation-fraction", type=float, default=0.0,
                        help="hold out this fraction of the training split (stratified, seeded by --seed) and keep the best "
                             "epoch on it (default 0: no selection, the last epoch is kept); the evaluation split never selects")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--num-workers", type=int, default=default_num_workers(),
                        help="data loader worker processes (default: the CPUs less one, at most 8)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the fine-tuned model to this Hub repo")
    from .segmentation import add_arguments as add_segmentation_arguments

    add_segmentation_arguments(parser)
    add_compile_arguments(parser)


class ClassificationData(torch.utils.data.Dataset):
    def __init__(self, images, transform, seed: int, train: bool):
        self.images, self.transform, self.seed, self.train = images, transform, seed, train
        self.calls = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.calls += 1
        seed = [self.seed, self.calls, index]

        def transform(image):  # an unreadable image: the next readable one stands in, with its label
            image = image.convert("RGB") if image.mode != "RGB" else image
            return self.transform(image, np.random.default_rng(seed) if self.train else None)

        pixels, used = self.images.with_image(index, transform)
        return {"pixel_values": torch.as_tensor(np.asarray(pixels)), "labels": torch.tensor(int(self.images.labels[used]))}


def _eval_transform(processor):
    return lambda image, rng=None: processor(image, return_tensors="np").pixel_values[0]


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def finetune(model_dir: str, train_images, eval_images=None, *, output_dir: str, epochs: float = 10, batch_size: int = 64,
             base_lr: float = 5e-4, layer_decay: float = 0.65, weight_decay: float = 0.05, label_smoothing: float = 0.1,
             drop_path: float | None = None, warmup_ratio: float = 0.1, crop_min_scale: float = 0.08, flip: bool = True,
             pooling: str | None = None, image_size: int | None = None, window_size: int | None = None, seed: int = 0, num_workers: int = 0, push_to_hub: str | None = None, log_to_console: bool = True,
             grad_accum: int = 1, lr_rule: str = "blr/256", min_lr: float = 0.0, warmup_epochs: float | None = None,
             rand_augment: str | None = None, reprob: float = 0.0, remode: str = "pixel", mixup: float = 0.0, cutmix: float = 0.0,
             mixup_prob: float = 1.0, mixup_switch_prob: float = 0.5, model_ema: bool = False, model_ema_decay: float = 0.9999,
             resume_from_checkpoint: str | None = None, recipe: str | None = None, fsdp: bool = False,
             compile: bool = False, compile_backend: str = "inductor", compile_mode: str = "default",
             validation_fraction: float = 0.0, save_checkpoints: bool = True):
    """Fine-tune with transformers' Trainer; returns (trainer, final evaluation metrics).

    `image_size` / `window_size` fine-tune at another geometry than the model's: it is loaded
    with `load_at_geometry` (position tables resized, one model's memory) and the image
    processor follows the new size.

    The timm-style augmentations (`rand_augment`, `reprob`/`remode`, `mixup`/`cutmix`) and
    `model_ema` are off by default; `--recipe` turns on what the paper's recipe has. The lr is
    `lr_rule` applied to `base_lr` and the effective batch (batch x grad_accum x processes); it is
    logged, returned as `metrics["learning_rate"]` and written to `finetune_settings.json`.

    `pooling` and `drop_path` reach every method's config, or raise ValueError where they cannot
    apply (see `finetune_protocol`); None: mean pooling, drop path 0.1 where the method has it.
    `validation_fraction` > 0: that part of `train_images` (stratified, seeded) is held out and the
    best epoch on it kept (`metrics["validation_accuracy"]`); `eval_images` is evaluated once at
    the end (`metrics["eval_accuracy"]`) and never selects."""
    import mim_hub  # noqa: F401
    from transformers import AutoImageProcessor, Trainer, TrainingArguments

    from ..auto import method_classes
    from .modelio import method_of_folder

    method = method_of_folder(model_dir)
    for images in (train_images, eval_images):
        if images is not None and not images.has_labels:
            raise ValueError(f"{images.name} has no labels (or not for every image): fine-tuning needs a labelled dataset; "
                             "pass --label-column if the labels are in another column")
    check_labels(train_images.labels, f"the training split of {train_images.name}")  # one class: a num_labels 1 regression
    names = train_images.label_names or [str(i) for i in range(max(train_images.labels) + 1)]
    id2label, label2id = {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}
    config_class = method_classes(method)["config"]
    from .finetune_protocol import check_pooling_applies, classifier_config_overrides, selection_and_evaluation, write_settings
    from .label_splits import validation_split

    extra = classifier_config_overrides(method, config_class, pooling=pooling, drop_path=drop_path)
    validation_images = None
    if validation_fraction:
        train_images, validation_images = validation_split(train_images, validation_fraction, seed)
    geometry = {k: v for k, v in (("image_size", image_size), ("window_size", window_size)) if v is not None}
    if "window_size" in geometry and "window_size" not in config_class.__dataclass_fields__:
        raise ValueError(f"{method} models have no attention window: --window-size applies to Swin backbones")
    classifier = method_classes(method)["classification"]
    load = classifier.load_at_geometry if geometry else classifier.from_pretrained  # (another geometry: position tables resized)
    model = load(model_dir, num_labels=len(names), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True, **extra, **geometry)
    pooling_used = check_pooling_applies(model, pooling)
    model.prepare_for_finetuning()  # the method's fine-tuning layout (SimMIM's ViT: a relative position table per block)
    if compile:  # per block, in place: parameter names (Trainer checkpoints, resume) unchanged
        compiled = compile_blocks(model, backend=compile_backend, mode=compile_mode)
        logger.info("--compile: %d blocks compiled (%s)", compiled, compile_backend)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]
    if image_size is not None and hasattr(processor, "with_image_size"):  # evaluation inputs of the new size, the rest as saved
        processor = processor.with_image_size(size)
    from accelerate import PartialState

    from .augment import FinetuneTransform, Mixup, MixupCollator, RandomErasing
    from .augmented_trainer import AugmentedTrainer, soft_target_loss
    from .finetune_recipes import learning_rate

    rand_augment = None if rand_augment in (None, "", "none") else rand_augment
    if rand_augment or reprob > 0:
        erasing = RandomErasing(reprob, remode) if reprob > 0 else None
        train_transform = FinetuneTransform(size, processor.image_mean, processor.image_std, scale=(crop_min_scale, 1.0), flip=flip,
                                            rand_augment=rand_augment, erasing=erasing)
    else:
        train_transform = RandomResizedCropFlip(size, processor.image_mean, processor.image_std, scale=(crop_min_scale, 1.0), flip=flip)
    train_data = ClassificationData(train_images, train_transform, seed, True)
    eval_data = ClassificationData(eval_images, _eval_transform(processor), seed, False) if eval_images is not None else None
    validation_data = ClassificationData(validation_images, _eval_transform(processor), seed, False) if validation_images is not None else None

    from .distributed import cpu_only

    state = PartialState(cpu=cpu_only())  # on CPU, launched processes are gloo ranks (see distributed.cpu_only)
    if grad_accum < 1:
        raise ValueError(f"--grad-accum must be at least 1, got {grad_accum}")
    effective_batch = batch_size * grad_accum * state.num_processes
    lr = learning_rate(lr_rule, base_lr, effective_batch)
    if lr_rule == "blr/512":  # SimMIM scales its minimum lr with the batch too
        min_lr = learning_rate(lr_rule, min_lr, effective_batch)
    steps_per_epoch = max(1, int(np.ceil(np.ceil(len(train_data) / (batch_size * state.num_processes)) / grad_accum)))
    steps = max(1, int(np.ceil(steps_per_epoch * epochs)))
    warmup = int(round(warmup_epochs * steps_per_epoch)) if warmup_epochs is not None else int(warmup_ratio * steps)
    def make_optimizer(m):
        return adamw(param_groups_lrd(m, weight_decay, layer_decay), lr=lr)

    def make_scheduler(opt):
        return cosine_with_warmup(opt, min(warmup, steps), steps, min_lr_ratio=min(1.0, min_lr / lr) if lr > 0 else 0.0)

    fsdp_arguments = {}
    if fsdp:
        if model_ema:
            raise ValueError("--model-ema with --fsdp is not supported (the EMA would hold sharded tensors)")
        if not torch.cuda.is_available():
            raise ValueError("--fsdp fine-tuning needs CUDA devices (transformers' Trainer runs FSDP only in distributed GPU training); "
                             "on CPU fine-tune without --fsdp")
        from .distributed import trainer_fsdp_arguments

        fsdp_arguments = trainer_fsdp_arguments(model)  # the Trainer wraps the model, then builds the optimizer from the factories
        optimizer = scheduler = None
    else:
        optimizer = make_optimizer(model)
        scheduler = make_scheduler(optimizer)
    logger.info("effective batch %d (%d per device x %d accumulation x %d processes), lr %.3g (%s of base lr %.3g)",
                effective_batch, batch_size, grad_accum, state.num_processes, lr, lr_rule, base_lr)
    collator = None
    if mixup > 0 or cutmix > 0:
        collator = MixupCollator(Mixup(num_classes=len(names), mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob,
                                       switch_prob=mixup_switch_prob, label_smoothing=label_smoothing), seed=seed, rank=state.process_index)
    arguments = TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        eval_strategy="epoch" if validation_data is not None else "no",
        save_strategy="epoch" if save_checkpoints and (validation_data is not None or eval_data is not None or model_ema) else "no",
        load_best_model_at_end=validation_data is not None, metric_for_best_model="accuracy", greater_is_better=True,
        save_total_limit=2, seed=seed, report_to="none", remove_unused_columns=False,
        logging_steps=max(1, steps // 20), dataloader_num_workers=num_workers, disable_tqdm=not log_to_console,
        dataloader_persistent_workers=num_workers > 0, dataloader_pin_memory=torch.cuda.is_available(),
        push_to_hub=bool(push_to_hub), hub_model_id=push_to_hub, use_cpu=cpu_only(), **fsdp_arguments,
    )
    ema = None
    callbacks = []
    if model_ema:
        from .ema import EmaCallback, ModelEma

        ema = ModelEma(model, model_ema_decay)
        callbacks.append(EmaCallback(ema, resume_from=resume_from_checkpoint))
    trainer = AugmentedTrainer(model=model, args=arguments, train_dataset=train_data, eval_dataset=validation_data, data_collator=collator,
                               compute_metrics=accuracy, optimizers=(optimizer, scheduler), callbacks=callbacks,
                               compute_loss_func=soft_target_loss(label_smoothing),
                               optimizer_factory=make_optimizer if fsdp else None, scheduler_factory=make_scheduler if fsdp else None)
    settings = {"method": method, "model": model_dir, "train_images": len(train_data), "epochs": epochs, "steps": steps,
                "effective_batch": effective_batch, "lr": lr, "lr_rule": lr_rule, "base_lr": base_lr, "min_lr": min_lr,
                "layer_decay": layer_decay, "weight_decay": weight_decay, "label_smoothing": label_smoothing, "warmup_steps": min(warmup, steps),
                "pooling": pooling_used, **{k: v for k, v in extra.items() if k == "drop_path_rate"},
                "crop_min_scale": crop_min_scale, "flip": flip, "seed": seed,
                "model_selection": (f"best epoch on {validation_images.name}" if validation_images is not None else "last epoch"),
                "evaluation": eval_images.name if eval_images is not None else None}
    write_settings(output_dir, settings)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = selection_and_evaluation(trainer, validation_data, eval_data)
    from .saving import save_final

    card_metrics = [{"dataset": eval_images.name, "type": "accuracy", "value": round(metrics["eval_accuracy"], 4), "name": "top-1"}] \
        if "eval_accuracy" in metrics else None
    augment = ", ".join(a for a in (f"RandAugment {rand_augment}" if rand_augment else "", f"random erasing {reprob}" if reprob else "",
                                    f"MixUp {mixup}" if mixup else "", f"CutMix {cutmix}" if cutmix else "") if a)
    provenance = (f"Fine-tuned from `{model_dir}` with `mim-hub finetune`{f' --recipe {recipe}' if recipe else ''} (transformers Trainer) on "
                  f"`{train_images.name}`: {epochs} epochs, effective batch {effective_batch}, lr {lr:.2e}, layer decay {layer_decay}, "
                  f"label smoothing {label_smoothing}{', ' + augment if augment else ''}.")
    save_final(trainer.model, processor, output_dir, method=method, datasets=[train_images.name], metrics=card_metrics, provenance=provenance)
    if ema is not None:
        if eval_data is not None:
            weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            trainer.model.load_state_dict(ema.module.state_dict())
            metrics.update(trainer.evaluate(eval_dataset=eval_data, metric_key_prefix="eval_ema"))
            trainer.model.load_state_dict(weights)
        ema_metrics = [{"dataset": eval_images.name, "type": "accuracy", "value": round(metrics["eval_ema_accuracy"], 4),
                        "name": "top-1 (EMA)"}] if "eval_ema_accuracy" in metrics else None
        save_final(ema.module, processor, os.path.join(output_dir, "ema"), method=method, datasets=[train_images.name], metrics=ema_metrics,
                   provenance=provenance + f" Exponential moving average of the weights, decay {model_ema_decay}.")
    metrics.update(learning_rate=lr, effective_batch=effective_batch)
    if push_to_hub:
        from ..hub.push import push_folder

        push_folder(output_dir, push_to_hub, commit_message=f"Fine-tuned {method}")
    return trainer, metrics


# finetune() keyword -> (argparse name, default without a recipe)
DEFAULTS = {
    "epochs": ("epochs", 10), "batch_size": ("batch_size", 64), "base_lr": ("base_lr", 5e-4), "min_lr": ("min_lr", 0.0),
    "layer_decay": ("layer_decay", 0.65), "weight_decay": ("weight_decay", 0.05), "label_smoothing": ("label_smoothing", 0.1),
    "drop_path": ("drop_path", None), "warmup_ratio": ("warmup_ratio", 0.1), "warmup_epochs": ("warmup_epochs", None),
    "crop_min_scale": ("crop_min_scale", 0.08), "pooling": ("pooling", None), "image_size": ("image_size", None),
    "window_size": ("window_size", None), "rand_augment": ("rand_augment", None), "reprob": ("reprob", 0.0), "remode": ("remode", "pixel"),
    "mixup": ("mixup", 0.0), "cutmix": ("cutmix", 0.0), "mixup_prob": ("mixup_prob", 1.0), "mixup_switch_prob": ("mixup_switch_prob", 0.5),
    "model_ema": ("model_ema", False), "model_ema_decay": ("model_ema_decay", 0.9999), "grad_accum": ("grad_accum", 1),
}
# recipe field -> finetune() keyword where the names differ
RECIPE_KEYS = {"per_device_batch": "batch_size"}


def resolve_settings(args: argparse.Namespace) -> dict:
    """finetune() keywords from the flags: a flag given wins, then the recipe's value, then the
    default. With a recipe and no --grad-accum, the accumulation reaches the recipe's effective batch."""
    from .finetune_recipes import get_recipe

    recipe = get_recipe(args.recipe) if args.recipe else None
    from_recipe = {RECIPE_KEYS.get(k, k): v.value for k, v in recipe.values.items()} if recipe else {}
    settings = {}
    for key, (flag, default) in DEFAULTS.items():
        given = getattr(args, flag, None)
        settings[key] = given if given is not None else from_recipe.get(key, default)
    settings["lr_rule"] = from_recipe.get("lr_rule", "blr/256")
    if recipe is not None and args.grad_accum is None and "effective_batch" in from_recipe:
        from accelerate import PartialState

        from .distributed import cpu_only

        per_step = settings["batch_size"] * PartialState(cpu=cpu_only()).num_processes
        settings["grad_accum"] = max(1, int(round(from_recipe["effective_batch"] / per_step)))
    if recipe is not None:
        settings["recipe"] = recipe.name
    return settings


def main(args: argparse.Namespace) -> int:
    if args.task == "semantic-segmentation":
        from .segmentation import main as segmentation_main

        return segmentation_main(args)
    settings = resolve_settings(args)  # an unknown recipe fails here, before any data is read
    if args.recipe:
        from .modelio import method_of_folder

        method = method_of_folder(args.model)
        from .finetune_recipes import get_recipe

        if get_recipe(args.recipe).method != method:
            logger.warning("recipe %s is %s's; %s is a %s model", args.recipe, get_recipe(args.recipe).method, args.model, method)
    train = dataset_from_args(args)
    eval_split = evaluation_split(args)
    evaluation = dataset_from_args(args, split=eval_split) if eval_split else None
    _, metrics = finetune(args.model, train, evaluation, output_dir=args.output_dir, flip=not args.no_flip, seed=args.seed,
                          num_workers=args.num_workers, push_to_hub=args.push_to_hub,
                          resume_from_checkpoint=args.resume_from_checkpoint, fsdp=args.fsdp,
                          compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode,
                          validation_fraction=args.validation_fraction, **settings)
    print(f"lr used: {metrics['learning_rate']:.3g} ({settings['lr_rule']} of base lr {settings['base_lr']:g}, effective batch "
          f"{metrics['effective_batch']})")
    if "validation_accuracy" in metrics:
        print(f"validation accuracy (the kept epoch): {100 * metrics['validation_accuracy']:.2f}%")
    if "eval_accuracy" in metrics:
        print(f"eval accuracy: {100 * metrics['eval_accuracy']:.2f}%")
        if "eval_ema_accuracy" in metrics:
            print(f"eval accuracy (EMA): {100 * metrics['eval_ema_accuracy']:.2f}%")
    return 0
