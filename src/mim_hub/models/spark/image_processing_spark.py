"""SparK's evaluation preprocessing with transformers' PIL backend."""

from __future__ import annotations

import math

from ..image_processing_common import MIMImageProcessor


class SparKImageProcessor(MIMImageProcessor):
    """Resize the shorter side to `floor(224 / 0.95)` = 235 (bicubic), centre-crop 224, rescale to
    [0, 1] and normalise with ImageNet's mean/std: SparK's fine-tuning evaluation transform
    (`downstream_imagenet/data.py`: timm's `transforms_imagenet_eval(crop_pct=0.95)`). Images are
    converted to RGB first. `for_image_size(n)` keeps the 0.95 crop.
    """

    crop_pct = 0.95
    size = {"shortest_edge": 235}

    @staticmethod
    def resized_side(image_size: int, crop_pct: float) -> int:
        """timm's `scale_size = floor(img_size / crop_pct)`."""
        return int(math.floor(image_size / crop_pct))


__all__ = ["SparKImageProcessor"]
