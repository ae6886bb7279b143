"""Semantic segmentation: transformers' `UperNetForSemanticSegmentation` on a mim_hub backbone,
fine-tuned with `Trainer` (`mim-hub finetune --task semantic-segmentation`).

The recipe follows the MAE/BEiT ADE20K code (mmseg UperNet): AdamW, lr 1e-4, weight decay 0.05,
layer-wise lr decay 0.65 through the backbone (the decode heads and the feature pyramid at the
full lr), linear warm-up then poly decay (power 1), random resized crop + horizontal flip +
photometric jitter drawn once and applied to image and label map together (the label map with
nearest-neighbour resampling), ignore index 255. Plain ViTs feed four blocks (evenly spaced, the
last included: 4/6/8/12 of 12 as BEiT's 3, 5, 7, 11) through BEiT's x4/x2/x1/x0.5 pyramid; Swin
gives its stages; ConvMAE's hybrid its two convolution stages and the last block.

Evaluation (`eval_mode`) is whole-image at the model's input size (the label map resized with
nearest neighbour), or sliding-window as mmseg's `slide` mode: each image at its own resolution,
cut into `crop` x `crop` windows `stride` apart (the last row and column of windows flush with the
far edge), the windows' logits summed into the image's frame and divided by the number of windows
that cover each pixel; an image smaller than the crop is padded (bottom and right, with zeros after
normalisation, i.e. the mean colour) and the padding's logits dropped; scored against the label
map at full resolution. Both report mean IoU (over the classes present in prediction or ground
truth), per-class IoU and pixel accuracy, accumulated as a confusion matrix item by item, so
memory does not grow with the evaluation set. From Python:

    from mim_hub.training.segmentation import finetune_segmentation
    trainer, metrics = finetune_segmentation("my-mae", train, evaluation, output_dir="my-mae-seg")
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .data_segmentation import IGNORE_INDEX, SegmentationDataset
from .optim import layer_decay_groups
from .transforms import Normalize, random_resized_crop_box

logger = logging.getLogger("mim_hub.segmentation")


# ---- data ------------------------------------------------------------------------------------

class JointTransform:
    """One draw of crop box, flip and photometric jitter, applied to image and label alike.
    `size=None` (evaluation only) keeps the image at its own resolution (sliding-window)."""

    def __init__(self, size: int | None, mean, std, *, train: bool, scale=(0.25, 1.0), flip: bool = True, jitter: float = 0.3):
        self.size, self.train, self.scale, self.flip, self.jitter = size, train, scale, flip, jitter
        self.normalize = Normalize(mean, std)
        if size is None and train:
            raise ValueError("JointTransform(size=None) keeps the resolution: evaluation only (train=False)")

    def __call__(self, image: Image.Image, label: np.ndarray, rng: np.random.Generator | None = None):
        if self.size is None:
            return self.normalize(image), np.asarray(label, dtype=np.int64)
        label_image = Image.fromarray(label.astype(np.int32), mode="I")
        box = None
        if self.train:
            box = random_resized_crop_box(image.width, image.height, rng, scale=self.scale)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
        label_image = label_image.resize((self.size, self.size), Image.NEAREST, box=box)
        if self.train:
            if self.flip and rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
                label_image = label_image.transpose(Image.FLIP_LEFT_RIGHT)
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):  # photometric (image only)
                image = enhance(image).enhance(float(rng.uniform(1 - self.jitter, 1 + self.jitter)))
        return self.normalize(image), np.asarray(label_image, dtype=np.int64)


class SegmentationTorchData(torch.utils.data.Dataset):
    """Items of a `SegmentationDataset` as Trainer batches, decoded and augmented on access
    (augmentation from `default_rng([seed, call, index])`)."""

    def __init__(self, source: SegmentationDataset, transform: JointTransform, seed: int = 0):
        self.source, self.transform, self.seed, self.calls = source, transform, seed, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        self.calls += 1
        rng = np.random.default_rng([self.seed, self.calls, index]) if self.transform.train else None
        pixels, label = self.transform(*self.source.item(index), rng)
        return {"pixel_values": torch.from_numpy(pixels), "labels": torch.from_numpy(label)}


# ---- metric ----------------------------------------------------------------------------------

def confusion_matrix(prediction: np.ndarray, label: np.ndarray, num_labels: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """[K, K] counts (row = ground truth, column = prediction) over the pixels not ignored."""
    prediction, label = np.asarray(prediction).reshape(-1), np.asarray(label).reshape(-1)
    valid = (label != ignore_index) & (label >= 0) & (label < num_labels)
    index = label[valid].astype(np.int64) * num_labels + prediction[valid].astype(np.int64)
    return np.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def segmentation_metrics(confusion: np.ndarray, label_names: list[str] | None = None) -> dict:
    """mean IoU (nan-mean over classes with a non-empty union, as mmseg), per-class IoU (NaN
    where a class is absent from both), pixel accuracy, mean class accuracy."""
    confusion = confusion.astype(np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(confusion.sum(1) > 0, true_positive / confusion.sum(1), np.nan)
    total = confusion.sum()
    names = label_names or [str(i) for i in range(len(iou))]
    return {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "pixel_accuracy": float(true_positive.sum() / total) if total else 0.0,
        "mean_accuracy": float(np.nanmean(class_accuracy)) if np.isfinite(class_accuracy).any() else 0.0,
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)},
    }


class StreamingIoU:
    """Trainer's `compute_metrics` with `batch_eval_metrics=True`: a confusion matrix summed
    batch by batch (logits are reduced to predictions on the fly)."""

    def __init__(self, num_labels: int, label_names: list[str] | None = None):
        self.num_labels, self.label_names = num_labels, label_names
        self.confusion = np.zeros((num_labels, num_labels), dtype=np.int64)

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        prediction = logits.argmax(dim=1) if torch.is_tensor(logits) else np.asarray(logits).argmax(1)
        to_numpy = lambda t: t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)  # noqa: E731
        self.confusion += confusion_matrix(to_numpy(prediction), to_numpy(labels), self.num_labels)
        if not compute_result:
            return {}
        metrics = segmentation_metrics(self.confusion, self.label_names)
        self.confusion = np.zeros_like(self.confusion)
        per_class = metrics.pop("per_class_iou")
        metrics.update({f"iou_{name}": (float("nan") if value is None else value) for name, value in per_class.items()})
        return metrics


EVAL_MODES = ("whole", "slide")


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return pair


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """mmseg's windows along one axis: starts 0, stride, 2 * stride, ..., the last one moved back
    to end flush with the far edge; one window at 0 when `length <= crop` (the image is padded)."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride, length - crop), 0) for i in range(count)]


def default_stride(crop: int) -> int:
    """Two thirds of the crop, as mmseg's ADE20K configs (crop 512, stride 341)."""
    return max(1, (2 * crop) // 3)


@torch.no_grad()
def slide_logits(model, pixels: torch.Tensor, crop_size, stride, *, batch_size: int = 8, return_count: bool = False):
    """Sliding-window logits of one image (mmseg's `slide_inference`): `pixels` [C, H, W] (or
    [1, C, H, W]) is cut into `crop_size` windows `stride` apart (see `window_starts`); windows that
    run past a side shorter than the crop are zero-padded there (bottom / right) and the padding's
    logits dropped; logits not at the window's size are resized to it (bilinear); each window's
    logits are added into the image's frame and the sum divided by the number of windows covering
    each pixel. `model(pixel_values=[N, C, h, w]).logits` is called on `batch_size` windows at a
    time. Returns logits [K, H, W] (and the count [H, W] with `return_count`)."""
    if pixels.dim() == 4:
        if pixels.shape[0] != 1:
            raise ValueError(f"slide_logits takes one image, got a batch of {pixels.shape[0]}")
        pixels = pixels[0]
    if pixels.dim() != 3:
        raise ValueError(f"slide_logits takes pixels [C, H, W], got shape {tuple(pixels.shape)}")
    (crop_h, crop_w), (stride_h, stride_w) = _pair(crop_size, "crop_size"), _pair(stride, "stride")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(f"stride {stride} is larger than the crop {crop_size}: pixels between windows would have no logits")
    _, height, width = pixels.shape
    boxes = [(y, x) for y in window_starts(height, crop_h, stride_h) for x in window_starts(width, crop_w, stride_w)]
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else pixels.device
    total, count = None, torch.zeros(height, width, dtype=torch.float32)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first:first + batch_size]
        windows = []
        for y, x in chunk:
            window = pixels[:, y:y + crop_h, x:x + crop_w]
            windows.append(torch.nn.functional.pad(window, (0, crop_w - window.shape[2], 0, crop_h - window.shape[1])))
        logits = model(pixel_values=torch.stack(windows).to(device)).logits
        if logits.shape[-2:] != (crop_h, crop_w):
            logits = torch.nn.functional.interpolate(logits, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
        logits = logits.float().cpu()
        if total is None:
            total = torch.zeros(logits.shape[1], height, width, dtype=torch.float32)
        for (y, x), window_logits in zip(chunk, logits):
            h, w = min(crop_h, height - y), min(crop_w, width - x)
            total[:, y:y + h, x:x + w] += window_logits[:, :h, :w]
            count[y:y + h, x:x + w] += 1
    averaged = total / count
    return (averaged, count) if return_count else averaged


@torch.no_grad()
def evaluate_segmentation(model, data: SegmentationTorchData, *, batch_size: int = 16, label_names=None, mode: str = "whole",
                          crop_size=None, stride=None) -> dict:
    """The metrics of `segmentation_metrics` over `data`. `mode="whole"`: the items as `data`'s
    transform makes them (resized to its size), `batch_size` at a time; `mode="slide"`: each item
    of `data.source` at its own resolution (normalised as `data`'s transform does) through
    `slide_logits` with `crop_size` (default: the transform's size, else the model's input size)
    and `stride` (default: two thirds of the crop), scored against the full-resolution label map."""
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    was_training = model.training
    model.eval()
    num_labels = model.config.num_labels
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    if mode == "whole":
        device = next(model.parameters()).device
        for start in range(0, len(data), batch_size):
            items = [data[i] for i in range(start, min(len(data), start + batch_size))]
            pixels = torch.stack([i["pixel_values"] for i in items]).to(device)
            labels = torch.stack([i["labels"] for i in items])
            prediction = model(pixel_values=pixels).logits.argmax(1).cpu()
            confusion += confusion_matrix(prediction.numpy(), labels.numpy(), num_labels)
    else:
        crop_size = crop_size or data.transform.size or _input_size(model.config.backbone_config)
        stride = stride or tuple(default_stride(c) for c in _pair(crop_size, "crop_size"))
        for index in range(len(data.source)):
            image, label = data.source.item(index)
            pixels = torch.from_numpy(data.transform.normalize(image))
            prediction = slide_logits(model, pixels, crop_size, stride, batch_size=batch_size).argmax(0)
            confusion += confusion_matrix(prediction.numpy(), np.asarray(label), num_labels)
    model.train(was_training)
    return segmentation_metrics(confusion, label_names)


def trainer_metrics(metrics: dict, prefix: str = "eval") -> dict:
    """`segmentation_metrics` as Trainer names them (`eval_mean_iou`, `eval_iou_<class>`, ...)."""
    flat = {k: v for k, v in metrics.items() if k != "per_class_iou"}
    flat.update({f"iou_{name}": (float("nan") if value is None else value) for name, value in metrics["per_class_iou"].items()})
    return {f"{prefix}_{k}": v for k, v in flat.items()}


def _segmentation_trainer_class():
    from transformers import Trainer

    class SegmentationTrainer(Trainer):
        """Trainer whose `evaluate` is sliding-window (`evaluate_segmentation(mode="slide")`)
        when `slide` is set; whole-image through Trainer's own loop otherwise."""

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

    return SegmentationTrainer


# ---- model -----------------------------------------------------------------------------------

def segmentation_stages(config) -> tuple[list[str], bool]:
    """(out_features, add_fpn) of the recipe for a method config."""
    names = list(config.stage_names)
    kind = getattr(config, "backbone", "vit")
    if kind == "swin":
        return names[1:], False
    if kind == "convvit":
        return ["conv1", "conv2", names[-1]], False
    layers = config.num_hidden_layers
    chosen = sorted({max(1, round(layers * k / 12)) for k in (4, 6, 8, 12)})  # 12 blocks: 4, 6, 8, 12
    if len(chosen) < 4:  # too shallow for four distinct blocks: the last stages, no pyramid
        return names[-3:], False
    return [f"stage{i}" for i in chosen], len(chosen) == 4


def build_upernet(model_dir: str, num_labels: int, *, label_names: list[str] | None = None, channels: int = 512,
                  auxiliary_channels: int = 256, from_scratch: bool = False, drop_path: float | None = None,
                  auxiliary_loss_weight: float = 0.4):
    """UperNet on the backbone of the saved model at `model_dir` (its encoder weights, unless
    `from_scratch`: the same network, randomly initialised)."""
    import mim_hub  # noqa: F401
    from transformers import AutoBackbone, AutoConfig, UperNetConfig, UperNetForSemanticSegmentation

    config = AutoConfig.from_pretrained(model_dir)
    if drop_path is not None and hasattr(config, "drop_path_rate"):
        config.drop_path_rate = drop_path
    out_features, add_fpn = segmentation_stages(config)
    config.add_fpn = add_fpn
    config.out_features = out_features
    names = label_names or [str(i) for i in range(num_labels)]
    upernet_config = UperNetConfig(
        backbone_config=config, num_labels=num_labels, hidden_size=channels, auxiliary_channels=auxiliary_channels,
        auxiliary_in_channels=None, use_auxiliary_head=len(out_features) >= 3, auxiliary_loss_weight=auxiliary_loss_weight,
        loss_ignore_index=IGNORE_INDEX, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    model = UperNetForSemanticSegmentation(upernet_config)
    if not from_scratch:
        backbone_class = type(model.backbone)
        pretrained = backbone_class.from_pretrained(model_dir, config=config)
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("neck.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("neck.")]
        if missing or unexpected:
            raise ValueError(f"{model_dir}: backbone weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    del AutoBackbone
    return model


def param_groups_segmentation(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """Layer-wise lr decay through the backbone (its own `layer_id` / `num_layers_for_decay`,
    the pyramid neck at the full lr) and the full lr for the decode heads; no weight decay on
    biases, norms, tokens and position tables."""
    backbone = model.backbone
    num_layers = backbone.num_layers_for_decay()

    def layer_of(name: str) -> int:
        if name.startswith("backbone.") and not name.startswith("backbone.neck."):
            return backbone.layer_id(name[len("backbone."):])
        return num_layers

    return layer_decay_groups(model.named_parameters(), layer_of, num_layers, {f"backbone.{n}" for n in backbone.no_weight_decay()},
                              weight_decay, layer_decay)


def poly_with_warmup(optimizer, warmup_steps: int, total_steps: int, power: float = 1.0, min_lr_ratio: float = 0.0):
    """mmseg's schedule: linear warm-up, then (1 - progress) ** power; `lr_scale` per group."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, k=k: factor(s) * k for k in scales])


def segmentation_processor(model_dir: str, size: int):
    """The saved model's image processor, making `size` x `size` inputs without a crop (so that
    predictions map back onto the whole image)."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir)
    processor.do_center_crop = False
    processor.size = {"height": size, "width": size}
    return processor


def _input_size(config) -> int:
    size = config.image_size
    return int(size if isinstance(size, int) else size[0])


# ---- pictures --------------------------------------------------------------------------------

def palette(num_labels: int) -> np.ndarray:
    """[K + 1, 3] colours: 0 black, the others spread in hue; the last row (ignored) white."""
    import colorsys

    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, num_labels - 1), 0.8, 1.0))
                             for i in range(num_labels - 1)]
    return np.asarray(colours + [(255, 255, 255)], dtype=np.uint8)


def _colour(label: np.ndarray, colours: np.ndarray) -> np.ndarray:
    index = np.where((label >= 0) & (label < len(colours) - 1), label, len(colours) - 1)
    return colours[index]


@torch.no_grad()
def segmentation_picture(model, source: SegmentationDataset, transform: JointTransform, indices, path: str, scale: int = 3,
                         slide: tuple | None = None) -> str:
    """A PNG with one row per item: input, truth, prediction (side by side, titled above). With
    `slide` (crop_size, stride) the prediction is sliding-window at the image's own resolution
    (`transform` then has `size=None`)."""
    model.eval()
    colours = palette(model.config.num_labels)
    rows = []
    for index in indices:
        image, label = source.item(index)
        pixels, resized_label = transform(image, label, None)
        if slide is not None:
            prediction = slide_logits(model, torch.from_numpy(pixels), *slide).argmax(0).numpy()
        else:
            logits = model(pixel_values=torch.from_numpy(pixels)[None].to(next(model.parameters()).device)).logits
            prediction = logits.argmax(1)[0].cpu().numpy()
        shown = np.asarray(image.convert("RGB") if transform.size is None else image.resize((transform.size, transform.size), Image.BILINEAR))
        rows.append(np.concatenate([shown, _colour(resized_label, colours), _colour(prediction, colours)], axis=1))
    grid = np.concatenate(rows, axis=0)
    picture = titled_columns(Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST),
                             ["input", "truth", "prediction"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture.save(path)
    return path


def titled_columns(picture: Image.Image, titles: list[str], height: int = 16) -> Image.Image:
    """`picture` (equal-width columns side by side) below a white band with each column's title."""
    from PIL import ImageDraw

    canvas = Image.new("RGB", (picture.width, picture.height + height), "white")
    canvas.paste(picture, (0, height))
    draw = ImageDraw.Draw(canvas)
    width = picture.width // len(titles)
    for i, title in enumerate(titles):
        left, _, right, _ = draw.textbbox((0, 0), title)
        draw.text((i * width + max(0, (width - (right - left)) // 2), 2), title, fill="black")
    return canvas


# ---- fine-tuning -----------------------------------------------------------------------------

def finetune_segmentation(model_dir: str, train: SegmentationDataset, evaluation: SegmentationDataset | None = None, *, output_dir: str,
                          epochs: float = 10, batch_size: int = 8, lr: float = 1e-4, layer_decay: float = 0.65,
                          weight_decay: float = 0.05, warmup_ratio: float = 0.1, schedule: str = "poly", drop_path: float = 0.1,
                          crop_min_scale: float = 0.25, flip: bool = True, jitter: float = 0.3, image_size: int | None = None,
                          channels: int = 512, auxiliary_channels: int = 256, from_scratch: bool = False, seed: int = 0,
                          num_workers: int = 0, max_steps: int = -1, pictures: int = 4, log_to_console: bool = True,
                          eval_mode: str = "whole", eval_crop_size: int | None = None, eval_stride: int | None = None):
    """Fine-tune UperNet on the backbone of `model_dir`; returns (trainer, evaluation metrics).
    The result (model, processor, model card with the metrics, `metrics.json`, and a picture of
    `pictures` evaluation items) is written to `output_dir`. `eval_mode="slide"` evaluates with
    `eval_crop_size` windows (default: the fine-tuning size) `eval_stride` apart (default: two
    thirds of the crop) on each evaluation image at its own resolution (see `slide_logits`)."""
    from transformers import TrainingArguments, set_seed

    from .distributed import cpu_only
    from .optim import adamw, cosine_with_warmup

    if schedule not in ("poly", "cosine"):
        raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")
    if len(train) == 0:
        raise ValueError(f"{train.name} is empty")
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
    for name, value in (("eval_crop_size", eval_crop_size), ("eval_stride", eval_stride)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
    set_seed(seed)
    num_labels = train.num_labels
    model = build_upernet(model_dir, num_labels, label_names=train.label_names, channels=channels, auxiliary_channels=auxiliary_channels,
                          from_scratch=from_scratch, drop_path=drop_path)
    size = image_size or _input_size(model.config.backbone_config)
    processor = segmentation_processor(model_dir, size)
    mean, std = processor.image_mean, processor.image_std
    train_data = SegmentationTorchData(train, JointTransform(size, mean, std, train=True, scale=(crop_min_scale, 1.0), flip=flip, jitter=jitter), seed)
    slide = None
    if eval_mode == "slide":
        crop = eval_crop_size or size
        stride = eval_stride or default_stride(crop)
        if stride > crop:
            raise ValueError(f"eval_stride {stride} is larger than eval_crop_size {crop}: pixels between windows would have no logits")
        slide = (crop, stride)
    eval_transform = JointTransform(None if slide else size, mean, std, train=False)
    eval_data = SegmentationTorchData(evaluation, eval_transform, seed) if evaluation is not None else None

    steps = max_steps if max_steps > 0 else int(np.ceil(len(train_data) / batch_size) * epochs)
    optimizer = adamw(param_groups_segmentation(model, weight_decay, layer_decay), lr=lr)
    warmup = int(warmup_ratio * steps)
    scheduler = poly_with_warmup(optimizer, warmup, steps) if schedule == "poly" else cosine_with_warmup(optimizer, warmup, steps)
    metric = StreamingIoU(num_labels, train.label_names)
    arguments = TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, eval_strategy="epoch" if eval_data is not None and max_steps <= 0 else "no",
        save_strategy="no", seed=seed, report_to="none", remove_unused_columns=False, batch_eval_metrics=True,
        logging_steps=max(1, steps // 20), dataloader_num_workers=num_workers, dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=not log_to_console,
        use_cpu=cpu_only(),  # on CPU, launched processes join as gloo ranks (see distributed.cpu_only)
    )
    trainer = _segmentation_trainer_class()(model=model, args=arguments, train_dataset=train_data, eval_dataset=eval_data,
                                            compute_metrics=metric, optimizers=(optimizer, scheduler))
    if slide is not None:
        trainer.slide = {"crop_size": slide[0], "stride": slide[1], "label_names": train.label_names}
    trainer.train()
    metrics = trainer.evaluate() if eval_data is not None else {}
    _save(trainer.model, processor, output_dir, model_dir=model_dir, train=train, evaluation=evaluation, metrics=metrics,
          recipe=f"{steps} steps, batch {batch_size}, lr {lr:g}, layer decay {layer_decay}, weight decay {weight_decay}, "
                 f"{schedule} schedule with {warmup} warm-up steps, {size} px",
          evaluation_mode=f"sliding window, crop {slide[0]}, stride {slide[1]}, each image at its own resolution" if slide
          else f"whole image at {size} px")
    if evaluation is not None and pictures:
        segmentation_picture(trainer.model, evaluation, eval_transform, range(min(pictures, len(evaluation))),
                             os.path.join(output_dir, "segmentation.png"), slide=slide)
    return trainer, metrics


def _save(model, processor, output_dir: str, *, model_dir: str, train, evaluation, metrics: dict, recipe: str,
          evaluation_mode: str = "whole image") -> None:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
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
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(os.path.join(output_dir, "README.md"))
    with open(os.path.join(output_dir, "metrics.json"), "w") as handle:
        json.dump({k: v for k, v in metrics.items()}, handle, indent=2, default=str)


def add_arguments(parser) -> None:
    """The options of `mim-hub finetune --task semantic-segmentation` (beside finetune's own)."""
    group = parser.add_argument_group("semantic segmentation (--task semantic-segmentation)")
    group.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (MAE/BEiT UperNet recipe: 1e-4)")
    group.add_argument("--schedule", choices=("poly", "cosine"), default="poly", help="lr schedule after the linear warm-up")
    group.add_argument("--decoder-channels", type=int, default=512, help="UperNet head width (mmseg: 512)")
    group.add_argument("--jitter", type=float, default=0.3, help="photometric jitter strength (brightness, contrast, saturation)")
    group.add_argument("--reduce-labels", action="store_true", help="label 0 -> ignored (255), c -> c - 1 (ADE20K / scene_parse_150)")
    group.add_argument("--from-scratch", action="store_true", help="the same UperNet with a randomly initialised backbone (a baseline)")
    group.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    group.add_argument("--pictures", type=int, default=4, help="evaluation items drawn into OUTPUT_DIR/segmentation.png (0: none)")
    group.add_argument("--eval-mode", choices=EVAL_MODES, default="whole",
                       help="whole: each evaluation image resized to the input size; slide: each at its own resolution in "
                            "overlapping windows whose logits are averaged (mmseg's slide mode)")
    group.add_argument("--eval-crop-size", type=int, default=None, metavar="PX",
                       help="--eval-mode slide: window side in pixels (default: the fine-tuning --image-size)")
    group.add_argument("--eval-stride", type=int, default=None, metavar="PX",
                       help="--eval-mode slide: pixels between window starts, at most the crop (default: 2/3 of the crop, as mmseg's 512/341)")


def main(args) -> int:
    """`mim-hub finetune --task semantic-segmentation`."""
    from .data_segmentation import load_segmentation

    common = dict(image_column=args.image_column, label_column=args.label_column, reduce_labels=args.reduce_labels, seed=args.seed,
                  config=args.dataset_config)
    train = load_segmentation(args.dataset, split=args.split, **common)
    eval_split = args.eval_split or ("test" if args.dataset == "digits-seg" else None)
    evaluation = load_segmentation(args.dataset, split=eval_split, **common) if eval_split else None
    if evaluation is not None and evaluation.num_labels != train.num_labels:
        evaluation.label_names = train.label_names
    # the classification flags default to None (a --recipe fills them); here the MAE/BEiT UperNet recipe's values
    def given(value, default):
        return default if value is None else value

    _, metrics = finetune_segmentation(
        args.model, train, evaluation, output_dir=args.output_dir, epochs=given(args.epochs, 10), batch_size=given(args.batch_size, 64),
        lr=args.lr, layer_decay=given(args.layer_decay, 0.65), weight_decay=given(args.weight_decay, 0.05),
        warmup_ratio=given(args.warmup_ratio, 0.1), schedule=args.schedule, drop_path=given(args.drop_path, 0.1), flip=not args.no_flip, jitter=args.jitter, image_size=args.image_size, channels=args.decoder_channels,
        auxiliary_channels=max(8, args.decoder_channels // 2), from_scratch=args.from_scratch, seed=args.seed,
        num_workers=args.num_workers, max_steps=args.max_steps, pictures=args.pictures,
        eval_mode=args.eval_mode, eval_crop_size=args.eval_crop_size, eval_stride=args.eval_stride,
    )
    if metrics:
        print(f"eval mIoU: {100 * metrics['eval_mean_iou']:.2f}%  pixel accuracy: {100 * metrics['eval_pixel_accuracy']:.2f}%")
    print(f"saved to {args.output_dir}")
    return 0


__all__ = ["finetune_segmentation", "build_upernet", "segmentation_metrics", "confusion_matrix", "StreamingIoU", "JointTransform",
           "SegmentationTorchData", "evaluate_segmentation", "segmentation_picture", "param_groups_segmentation", "poly_with_warmup",
           "segmentation_stages", "slide_logits", "window_starts", "EVAL_MODES"]
