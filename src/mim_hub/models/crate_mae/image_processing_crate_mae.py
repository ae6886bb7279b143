"""CRATE-MAE's preprocessing: MAE's evaluation transform (CRATE-MAE is trained with MAE's code)."""

from ..mae.image_processing_mae import MAEImageProcessor


class CrateMAEImageProcessor(MAEImageProcessor):
    """Resize the shorter side (bicubic), centre crop, ImageNet mean/std, on the PIL backend."""


__all__ = ["CrateMAEImageProcessor"]
