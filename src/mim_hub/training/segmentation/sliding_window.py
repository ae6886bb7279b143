"""Evaluation, whole-image or sliding-window as mmseg's `slide` mode: each image at its own
resolution, cut into `crop` x `crop` windows `stride` apart (the last row and column of windows
flush with the far edge), the windows' logits summed into the image's frame and divided by the
number of windows that cover each pixel; an image smaller than the crop is padded (bottom and
right, with zeros after normalisation, i.e. the mean colour) and the padding's logits dropped;
scored against the label map at full resolution."""

from __future__ import annotations

import numpy as np
import torch

from .data import SegmentationTorchData
from .metrics import confusion_matrix, segmentation_metrics
from .model import input_size

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
        crop_size = crop_size or data.transform.size or input_size(model.config.backbone_config)
        stride = stride or tuple(default_stride(c) for c in _pair(crop_size, "crop_size"))
        for index in range(len(data.source)):
            image, label = data.source.item(index)
            pixels = torch.from_numpy(data.transform.normalize(image))
            prediction = slide_logits(model, pixels, crop_size, stride, batch_size=batch_size).argmax(0)
            confusion += confusion_matrix(prediction.numpy(), np.asarray(label), num_labels)
    model.train(was_training)
    return segmentation_metrics(confusion, label_names)
