"""HPM's preprocessing: MAE's evaluation transform (`main_finetune.py`: shorter side to 256
bicubic, centre crop 224, ImageNet mean/std), which HPM keeps unchanged."""

from ..mae.image_processing_mae import MAEImageProcessor


class HPMImageProcessor(MAEImageProcessor):
    """Resize (bicubic) + centre crop + ImageNet normalisation, on the PIL backend."""


__all__ = ["HPMImageProcessor"]
