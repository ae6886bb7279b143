"""Fine-tuning UperNet for semantic segmentation with transformers' `Trainer`, top to bottom:
build the model and processor, the data, the optimizer and schedule, the Trainer; train,
evaluate, save (through the shared save path, with the card and `metrics.json`), draw."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import Trainer, TrainingArguments, set_seed

from ...data.segmentation import SegmentationDataset
from ..distributed import cpu_only
from ..optim import adamw, cosine_with_warmup
from ..saving import save_final
from ..settings import SegmentationSettings
from .data import JointTransform, SegmentationTorchData
from .metrics import StreamingIoU, trainer_metrics
from .model import build_upernet, input_size, param_groups_segmentation, poly_with_warmup, segmentation_processor
from .pictures import segmentation_picture
from .sliding_window import EVAL_MODES, default_stride, evaluate_segmentation
from ..finetune_protocol import DEFAULT_DROP_PATH

logger = logging.getLogger("mim_hub.segmentation")


class SegmentationTrainer(Trainer):
    """Trainer whose `evaluate` is sliding-window (`evaluate_segmentation(mode="slide")`) when
    `slide` is set; whole-image through Trainer's own loop otherwise."""

    slide: dict | None = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if self.slide is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        data = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = trainer_metrics(evaluate_segmentation(self.model, data, batch_size=self.args.per_device_eval_batch_size,
                                                        label_names=self.slide.get("label_names"), mode="slide",
                                                        crop_size=self.slide["crop_size"], stride=self.slide["stride"]),
                                  metric_key_prefix)
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def finetune_segmentation(model_dir: str, train: SegmentationDataset, evaluation: SegmentationDataset | None = None, *, output_dir: str,
                          settings: SegmentationSettings | None = None, **options):
    """Fine-tune UperNet on the backbone of `model_dir`; returns (trainer, evaluation metrics).

    `settings` (default `SegmentationSettings()`: the fine-tuning defaults shared with
    classification, and the UperNet recipe's), with `options` (its fields by name) replacing
    some. The result (model, processor, model card with the metrics, `metrics.json`, and a
    picture of `pictures` evaluation items) is written to `output_dir`. `eval_mode="slide"`
    evaluates with `eval_crop_size` windows (default: the fine-tuning size) `eval_stride` apart
    (default: two thirds of the crop) on each evaluation image at its own resolution."""
    s = dataclasses.replace(settings, **options) if settings is not None else SegmentationSettings.of(**options)
    check_settings(train, s)
    set_seed(s.seed)
    model = build_upernet(model_dir, train.num_labels, label_names=train.label_names, channels=s.channels,
                          auxiliary_channels=s.auxiliary_channels or max(8, s.channels // 2), from_scratch=s.from_scratch,
                          drop_path=DEFAULT_DROP_PATH if s.drop_path is None else s.drop_path)
    size = s.image_size or input_size(model.config.backbone_config)
    processor = segmentation_processor(model_dir, size)
    slide = sliding_window(size, s)
    train_data, eval_data = build_data(train, evaluation, processor, size, slide, s)
    steps = s.max_steps if s.max_steps > 0 else int(np.ceil(len(train_data) / s.batch_size) * s.epochs)
    warmup = int(s.warmup_ratio * steps)
    trainer = build_trainer(model, train_data, eval_data, train, steps, warmup, slide, output_dir, s)
    trainer.train()
    metrics = trainer.evaluate() if eval_data is not None else {}
    recipe = (f"{steps} steps, batch {s.batch_size}, lr {s.lr:g}, layer decay {s.layer_decay}, weight decay {s.weight_decay}, "
              f"{s.schedule} schedule with {warmup} warm-up steps, {size} px")
    mode = f"sliding window, crop {slide[0]}, stride {slide[1]}, each image at its own resolution" if slide else f"whole image at {size} px"
    save(trainer.model, processor, output_dir, model_dir=model_dir, train=train, evaluation=evaluation, metrics=metrics, recipe=recipe,
         evaluation_mode=mode)
    if evaluation is not None and s.pictures:
        segmentation_picture(trainer.model, evaluation, eval_data.transform, range(min(s.pictures, len(evaluation))),
                             os.path.join(output_dir, "segmentation.png"), slide=slide)
    return trainer, metrics


def check_settings(train: SegmentationDataset, s: SegmentationSettings) -> None:
    if s.schedule not in ("poly", "cosine"):
        raise ValueError(f"schedule must be 'poly' or 'cosine', got {s.schedule!r}")
    if len(train) == 0:
        raise ValueError(f"{train.name} is empty")
    if s.eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {s.eval_mode!r}")
    for name, value in (("eval_crop_size", s.eval_crop_size), ("eval_stride", s.eval_stride)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")


def sliding_window(size: int, s: SegmentationSettings) -> tuple[int, int] | None:
    """(crop, stride) of sliding-window evaluation, or None (whole images)."""
    if s.eval_mode != "slide":
        return None
    crop = s.eval_crop_size or size
    stride = s.eval_stride or default_stride(crop)
    if stride > crop:
        raise ValueError(f"eval_stride {stride} is larger than eval_crop_size {crop}: pixels between windows would have no logits")
    return crop, stride


def build_data(train, evaluation, processor, size: int, slide, s: SegmentationSettings):
    mean, std = processor.image_mean, processor.image_std
    augment = JointTransform(size, mean, std, train=True, scale=(s.crop_min_scale, 1.0), flip=s.flip, jitter=s.jitter)
    train_data = SegmentationTorchData(train, augment, s.seed)
    eval_transform = JointTransform(None if slide else size, mean, std, train=False)
    eval_data = SegmentationTorchData(evaluation, eval_transform, s.seed) if evaluation is not None else None
    return train_data, eval_data


def build_trainer(model, train_data, eval_data, train, steps: int, warmup: int, slide, output_dir: str, s: SegmentationSettings):
    optimizer = adamw(param_groups_segmentation(model, s.weight_decay, s.layer_decay), lr=s.lr)
    scheduler = poly_with_warmup(optimizer, warmup, steps) if s.schedule == "poly" else cosine_with_warmup(optimizer, warmup, steps)
    arguments = TrainingArguments(
        output_dir=output_dir, num_train_epochs=s.epochs, max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.batch_size, eval_strategy="epoch" if eval_data is not None and s.max_steps <= 0 else "no",
        save_strategy="no", seed=s.seed, report_to="none", remove_unused_columns=False, batch_eval_metrics=True,
        logging_steps=max(1, steps // 20), dataloader_num_workers=s.num_workers, dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not s.log_to_console,
        use_cpu=cpu_only(),  # on CPU, launched processes join as gloo ranks (see distributed.cpu_only)
    )
    trainer = SegmentationTrainer(model=model, args=arguments, train_dataset=train_data, eval_dataset=eval_data,
                                  compute_metrics=StreamingIoU(train.num_labels, train.label_names), optimizers=(optimizer, scheduler))
    if slide is not None:
        trainer.slide = {"crop_size": slide[0], "stride": slide[1], "label_names": train.label_names}
    return trainer


def segmentation_card(model, *, model_dir: str, train, evaluation, metrics: dict, recipe: str, evaluation_mode: str) -> ModelCard:
    method = model.config.backbone_config.model_type
    results = []
    if metrics:
        for key, name in (("eval_mean_iou", "mIoU"), ("eval_pixel_accuracy", "pixel accuracy")):
            results.append(EvalResult(task_type="image-segmentation", dataset_type=evaluation.name, dataset_name=evaluation.name,
                                      metric_type=key[len("eval_"):], metric_value=round(float(metrics[key]), 4), metric_name=name))
    data = ModelCardData(library_name="transformers", tags=["mim_hub", method, "semantic-segmentation", "upernet", "vision"],
                         pipeline_tag="image-segmentation", datasets=[train.name], eval_results=results or None,
                         model_name=f"upernet-{method}")
    per_class = [(k[len("eval_iou_"):], v) for k, v in metrics.items() if k.startswith("eval_iou_")]
    table = "\n".join(f"| {name} | {'-' if v != v else f'{100 * v:.2f}'} |" for name, v in per_class)
    body = (f"# UperNet on a {method} backbone\n\n`UperNetForSemanticSegmentation` (transformers) on the `{method}` encoder of "
            f"`{model_dir}`, fine-tuned with `mim-hub finetune --task semantic-segmentation` on `{train.name}`: {recipe}.\n\n"
            "Load it after `import mim_hub` (which registers the backbone): `AutoModelForSemanticSegmentation.from_pretrained(dir)` "
            "or `pipeline(\"image-segmentation\", model=dir)`.\n")
    if metrics:
        body += (f"\n## Evaluation on `{evaluation.name}` ({evaluation_mode})\n\n| metric | value |\n|---|---|\n"
                 f"| mIoU | {100 * metrics['eval_mean_iou']:.2f} |\n| pixel accuracy | {100 * metrics['eval_pixel_accuracy']:.2f} |\n"
                 f"\n### Per-class IoU\n\n| class | IoU |\n|---|---|\n{table}\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def save(model, processor, output_dir: str, *, model_dir: str, train, evaluation, metrics: dict, recipe: str,
         evaluation_mode: str = "whole image") -> None:
    """Model, processor, card and `metrics.json`, through the shared save path (atomically)."""
    card = segmentation_card(model, model_dir=model_dir, train=train, evaluation=evaluation, metrics=metrics, recipe=recipe,
                             evaluation_mode=evaluation_mode)
    save_final(model, processor, output_dir, card=card, metrics_json=dict(metrics))
