"""Writing a trained model's folder: weights, image processor, model card (and metrics), atomically.

The one save path of pre-training (`pretrain.py`), fine-tuning (`finetune.py`) and semantic
segmentation (`segmentation/run.py`)."""

from __future__ import annotations

import json
import os

from huggingface_hub import ModelCard

from ..hub import write_model_card
from ..utils.atomic import atomic_folder


def save_final(model, processor, folder: str, *, method: str | None = None, provenance: str | None = None, state_dict=None,
               card: ModelCard | None = None, metrics_json: dict | None = None, **card_fields) -> None:
    """Write model, processor and card into `folder` atomically (one temporary folder, then each
    file renamed into place), leaving checkpoints and logs beside them untouched. The card is
    `card` when given, else the method's (`hub.write_model_card` with `method`, `provenance` and
    `card_fields`); `metrics_json` is written to `metrics.json`."""
    with atomic_folder(folder, merge=True) as tmp:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        processor.save_pretrained(tmp)
        if card is not None:
            card.save(os.path.join(tmp, "README.md"))
        else:
            write_model_card(tmp, model, method=method, provenance=provenance, **card_fields)
        if metrics_json is not None:
            with open(os.path.join(tmp, "metrics.json"), "w") as handle:
                json.dump(metrics_json, handle, indent=2, default=str)


__all__ = ["save_final"]
