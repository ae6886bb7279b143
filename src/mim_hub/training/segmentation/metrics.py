"""Segmentation metrics: mean IoU (over the classes present in prediction or ground truth),
per-class IoU and pixel accuracy, accumulated as a confusion matrix item by item, so memory
does not grow with the evaluation set."""

from __future__ import annotations

import numpy as np
import torch

from ...data.segmentation import IGNORE_INDEX


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


def trainer_metrics(metrics: dict, prefix: str = "eval") -> dict:
    """`segmentation_metrics` as Trainer names them (`eval_mean_iou`, `eval_iou_<class>`, ...)."""
    flat = {k: v for k, v in metrics.items() if k != "per_class_iou"}
    flat.update({f"iou_{name}": (float("nan") if value is None else value) for name, value in metrics["per_class_iou"].items()})
    return {f"{prefix}_{k}": v for k, v in flat.items()}
