"""Fine-tune a *ForImageClassification model with transformers' Trainer.

Labels come from the dataset (`id2label`/`label2id` are saved with the model); the MAE recipe's
layer-wise lr decay, label smoothing, stochastic depth and the accuracy metric are applied; the
best checkpoint (by accuracy on the evaluation split) is kept. From Python:

    from mim_hub.training.finetune import finetune
    trainer, metrics = finetune("my-mae", train_images, eval_images, output_dir="my-mae-ft", epochs=5)
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from .data import add_dataset_arguments, dataset_from_args
from .evaluate import check_labels
from .optim import adamw, cosine_with_warmup, param_groups_lrd
from .transforms import RandomResizedCropFlip

logger = logging.getLogger("mim_hub.finetune")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved model folder (a pre-trained or converted mim_hub model)")
    parser.add_argument("--output-dir", required=True, help="where checkpoints and the fine-tuned model go")
    add_dataset_arguments(parser)
    parser.add_argument("--epochs", type=float, default=10, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=64, help="images per device per step")
    parser.add_argument("--base-lr", type=float, default=5e-4, help="lr = base_lr x batch / 256 (MAE: 5e-4 for ViT-B)")
    parser.add_argument("--layer-decay", type=float, default=0.65, help="layer-wise lr decay (MAE: 0.65 ViT-B, 0.75 ViT-L/H)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing factor")
    parser.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="fraction of steps for linear warm-up")
    parser.add_argument("--crop-min-scale", type=float, default=0.08, help="RandomResizedCrop's smallest area fraction")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--image-size", type=int, default=None,
                        help="fine-tune at this resolution (default: the model's); position tables are resized, as SimMIM/MAE do")
    parser.add_argument("--window-size", type=int, default=None, help="Swin: fine-tune with this attention window (SimMIM: 6 -> 7 at 224 px)")
    parser.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="classifier head input: mean of patch tokens + fc_norm (MAE recipe) or cls token")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the fine-tuned model to this Hub repo")


class ClassificationData(torch.utils.data.Dataset):
    def __init__(self, images, transform, seed: int, train: bool):
        self.images, self.transform, self.seed, self.train = images, transform, seed, train
        self.calls = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.calls += 1
        rng = np.random.default_rng([self.seed, self.calls, index]) if self.train else None
        pixels = self.transform(self.images.image(index), rng)
        return {"pixel_values": torch.as_tensor(np.asarray(pixels)), "labels": torch.tensor(self.images.labels[index])}


def _eval_transform(processor):
    return lambda image, rng=None: processor(image, return_tensors="np").pixel_values[0]


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def finetune(model_dir: str, train_images, eval_images=None, *, output_dir: str, epochs: float = 10, batch_size: int = 64,
             base_lr: float = 5e-4, layer_decay: float = 0.65, weight_decay: float = 0.05, label_smoothing: float = 0.1,
             drop_path: float = 0.1, warmup_ratio: float = 0.1, crop_min_scale: float = 0.08, flip: bool = True,
             pooling: str = "mean", image_size: int | None = None, window_size: int | None = None, seed: int = 0, num_workers: int = 0, push_to_hub: str | None = None, log_to_console: bool = True):
    """Fine-tune with transformers' Trainer; returns (trainer, final evaluation metrics).

    `image_size` / `window_size` fine-tune at another geometry than the model's: its position
    tables are resized on loading (see `MIMPreTrainedModel.from_pretrained`) and the image
    processor follows the new size."""
    import mim_hub  # noqa: F401
    from transformers import AutoImageProcessor, Trainer, TrainingArguments

    from ..auto import method_classes
    from .modelio import method_of_folder

    method = method_of_folder(model_dir)
    if min(train_images.labels) < 0:
        raise ValueError(f"{train_images.name} has no labels: fine-tuning needs a labelled dataset")
    check_labels(train_images.labels, f"the training split of {train_images.name}")  # one class: a num_labels 1 regression
    names = train_images.label_names or [str(i) for i in range(max(train_images.labels) + 1)]
    id2label, label2id = {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}
    extra = {"drop_path_rate": drop_path}
    config_class = method_classes(method)["config"]
    if "use_mean_pooling" in config_class.__dataclass_fields__:
        extra["use_mean_pooling"] = pooling == "mean"
    geometry = {k: v for k, v in (("image_size", image_size), ("window_size", window_size)) if v is not None}
    if "window_size" in geometry and "window_size" not in config_class.__dataclass_fields__:
        raise ValueError(f"{method} models have no attention window: --window-size applies to Swin backbones")
    model = method_classes(method)["classification"].from_pretrained(
        model_dir, num_labels=len(names), id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True, **extra, **geometry)
    base = getattr(model, model.base_model_prefix, None)
    if getattr(model.config, "use_shared_relative_position_bias", False) and getattr(base, "relative_position_bias", None) is not None \
            and hasattr(base, "expand_relative_position_bias"):  # (a Swin has a table per block already)
        base.expand_relative_position_bias()  # SimMIM's ViT fine-tunes with a relative position table per block
    processor = AutoImageProcessor.from_pretrained(model_dir)
    size = model.config.image_size if isinstance(model.config.image_size, int) else model.config.image_size[0]
    if image_size is not None and hasattr(processor, "with_image_size"):  # evaluation inputs of the new size, the rest as saved
        processor = processor.with_image_size(size)
    train_transform = RandomResizedCropFlip(size, processor.image_mean, processor.image_std, scale=(crop_min_scale, 1.0), flip=flip)
    train_data = ClassificationData(train_images, train_transform, seed, True)
    eval_data = ClassificationData(eval_images, _eval_transform(processor), seed, False) if eval_images is not None else None

    lr = base_lr * batch_size / 256
    steps = int(np.ceil(len(train_data) / batch_size) * epochs)
    optimizer = adamw(param_groups_lrd(model, weight_decay, layer_decay), lr=lr)
    scheduler = cosine_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    arguments = TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        eval_strategy="epoch" if eval_data is not None else "no", save_strategy="epoch" if eval_data is not None else "no",
        load_best_model_at_end=eval_data is not None, metric_for_best_model="accuracy", greater_is_better=True,
        save_total_limit=2, label_smoothing_factor=label_smoothing, seed=seed, report_to="none", remove_unused_columns=False,
        logging_steps=max(1, steps // 20), dataloader_num_workers=num_workers, disable_tqdm=not log_to_console,
        push_to_hub=bool(push_to_hub), hub_model_id=push_to_hub,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train_data, eval_dataset=eval_data,
                      compute_metrics=accuracy, optimizers=(optimizer, scheduler))
    trainer.train()
    metrics = trainer.evaluate() if eval_data is not None else {}
    from .pretrain import save_final

    card_metrics = [{"dataset": eval_images.name, "type": "accuracy", "value": round(metrics["eval_accuracy"], 4), "name": "top-1"}] if metrics else None
    save_final(trainer.model, processor, output_dir, method=method, datasets=[train_images.name], metrics=card_metrics,
               provenance=f"Fine-tuned from `{model_dir}` with `mim-hub finetune` (transformers Trainer) on `{train_images.name}`: "
               f"{epochs} epochs, batch {batch_size}, lr {lr:.2e}, layer decay {layer_decay}, label smoothing {label_smoothing}.")
    if push_to_hub:
        from ..hub.push import push_folder

        push_folder(output_dir, push_to_hub, commit_message=f"Fine-tuned {method}")
    return trainer, metrics


def main(args: argparse.Namespace) -> int:
    train = dataset_from_args(args)
    eval_split = args.eval_split or ("test" if args.dataset == "digits" else None)
    evaluation = dataset_from_args(args, split=eval_split) if eval_split else None
    _, metrics = finetune(args.model, train, evaluation, output_dir=args.output_dir, epochs=args.epochs, batch_size=args.batch_size,
                          base_lr=args.base_lr, layer_decay=args.layer_decay, weight_decay=args.weight_decay,
                          label_smoothing=args.label_smoothing, drop_path=args.drop_path, warmup_ratio=args.warmup_ratio,
                          crop_min_scale=args.crop_min_scale, flip=not args.no_flip, pooling=args.pooling, image_size=args.image_size,
                          window_size=args.window_size, seed=args.seed,
                          num_workers=args.num_workers, push_to_hub=args.push_to_hub)
    if metrics:
        print(f"eval accuracy: {100 * metrics['eval_accuracy']:.2f}%")
    return 0
