"""Writing a trained model's folder: weights, image processor and model card, atomically.

Shared by pre-training (`pretrain.py`) and fine-tuning (`finetune.py`)."""

from __future__ import annotations

from ..utils.atomic import atomic_folder


def save_final(model, processor, folder: str, *, method: str, provenance: str, state_dict=None, **card) -> None:
    """Write model, processor and card into `folder` atomically (one temporary folder, then each
    file renamed into place), leaving checkpoints and logs beside them untouched."""
    from ..hub import write_model_card

    with atomic_folder(folder, merge=True) as tmp:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        processor.save_pretrained(tmp)
        write_model_card(tmp, model, method=method, provenance=provenance, **card)


__all__ = ["save_final"]
