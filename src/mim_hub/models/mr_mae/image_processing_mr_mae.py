"""MR-MAE's preprocessing: ConvMAE's evaluation transform, the same as MAE's (shorter side to 256
bicubic, centre crop 224, ImageNet mean/std)."""

from ..mae.image_processing_mae import MAEImageProcessor


class MRMAEImageProcessor(MAEImageProcessor):
    """Resize (bicubic) + centre crop + ImageNet normalisation, on the PIL backend."""


__all__ = ["MRMAEImageProcessor"]
