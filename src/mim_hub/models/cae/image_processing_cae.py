"""CAE's evaluation preprocessing with transformers' PIL backend."""

from __future__ import annotations

from ..mae.image_processing_mae import MAEImageProcessor


class CAEImageProcessor(MAEImageProcessor):
    """Resize the shorter side to crop / 0.875 (bicubic), centre-crop, rescale to [0, 1] and
    normalise with ImageNet's mean/std: the evaluation transform of CAE's
    `run_class_finetuning.py` with `--imagenet_default_mean_and_std` (as every released CAE
    script passes), 256 -> 224 at the default size, which is MAE's. Images are converted to RGB
    first. `for_image_size(n)` gives the processor for an `n`-pixel model input.
    """


__all__ = ["CAEImageProcessor"]
