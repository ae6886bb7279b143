"""MAE's evaluation preprocessing with transformers' PIL backend."""

from __future__ import annotations

from ..image_processing_common import MIMImageProcessor


class MAEImageProcessor(MIMImageProcessor):
    """Resize the shorter side to crop / 0.875 (bicubic), centre-crop, rescale to [0, 1] and
    normalise with ImageNet's mean/std: MAE's `main_finetune.py` evaluation transform
    (256 -> 224 at the default size). Images are converted to RGB first. `for_image_size(n)`
    gives the processor for an `n`-pixel model input (the same crop ratio, 0.875).
    """


__all__ = ["MAEImageProcessor"]
