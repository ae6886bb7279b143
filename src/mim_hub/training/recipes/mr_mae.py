"""MR-MAE's pre-training recipe: MAE's (crop + flip, uniform masking noise, AdamW), plus frozen
teachers to mimic. `--teacher PATH` (repeatable: CLIP and DINO in the paper) attaches
transformers vision models by folder or Hub id; `--mimic-weight W` (repeatable, one per teacher)
weighs their terms. The input normalisation of the run is recorded in the model's config
(`image_mean` / `image_std`) so that each teacher can undo it before its own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

from .base import PretrainRecipe


@dataclass(frozen=True)
class MRMAERecipe(PretrainRecipe):
    method = "mr_mae"

    @classmethod
    def configure_model(cls, model, options, *, mean=None, std=None) -> None:
        teachers = getattr(options, "teacher", None)
        weights = getattr(options, "mimic_weight", None)
        if weights and not teachers:
            raise ValueError("--mimic-weight needs --teacher")
        if teachers:
            if weights and len(weights) != len(teachers):
                raise ValueError(f"{len(weights)} --mimic-weight values for {len(teachers)} --teacher paths")
            model.set_teachers(teachers, weights=weights)
        if mean is not None and std is not None:  # the teachers undo the student's normalisation before applying their own
            model.config.image_mean, model.config.image_std = [float(m) for m in mean], [float(s) for s in std]


RECIPE = MRMAERecipe
