"""SimMIM's evaluation preprocessing with transformers' PIL backend."""

from __future__ import annotations

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from ..image_processing_common import MIMImageProcessor


class SimMIMImageProcessor(MIMImageProcessor):
    """Resize the shorter side to crop / 0.875 (bicubic), centre-crop, rescale to [0, 1] and
    normalise with ImageNet's mean/std: SimMIM's `data/data_finetune.py` evaluation transform
    (`TEST.CROP=True`: 256 -> 224 at the default size). Images are converted to RGB first.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True

    @classmethod
    def for_image_size(cls, image_size: int, **kwargs) -> "SimMIMImageProcessor":
        """The processor matching a model input of `image_size` (shorter side int(256 / 224 * size), as the original)."""
        shortest = int((256 / 224) * image_size) if image_size > 32 else image_size
        return cls(size={"shortest_edge": shortest}, crop_size={"height": image_size, "width": image_size}, **kwargs)


__all__ = ["SimMIMImageProcessor"]
