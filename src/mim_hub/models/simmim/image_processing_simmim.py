"""SimMIM's evaluation preprocessing with transformers' PIL backend."""

from __future__ import annotations

from ..image_processing_common import MIMImageProcessor


class SimMIMImageProcessor(MIMImageProcessor):
    """Resize the shorter side to crop / 0.875 (bicubic), centre-crop, rescale to [0, 1] and
    normalise with ImageNet's mean/std: SimMIM's `data/data_finetune.py` evaluation transform
    (`TEST.CROP=True`: 256 -> 224 at the default size). Images are converted to RGB first.
    """

    @staticmethod
    def resized_side(image_size: int, crop_pct: float) -> int:
        """`int((256 / 224) * size)`, truncated, as the original's `data_finetune.py`."""
        return int((1 / crop_pct) * image_size)


__all__ = ["SimMIMImageProcessor"]
