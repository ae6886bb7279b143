"""The base of every mim_hub image processor: transformers' PIL backend, plus input checks and
mode handling that turn any image into RGB or a clear error."""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend


def to_rgb_image(image) -> Image.Image | np.ndarray:
    """Bring a PIL image of any mode to 8-bit RGB (alpha composited on white, as transformers'
    `convert_to_rgb`); 16-bit and float grey images are rescaled from their real range rather
    than clipped at 255. Arrays and tensors are checked and returned as they are."""
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"image has no pixels: size {image.size}")
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            values = np.asarray(image, dtype=np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"image of mode {image.mode} contains NaN or infinite values")
            top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
            if image.mode == "F" and values.max() <= 1.0:
                top = 1.0
            grey = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
            return Image.fromarray(grey, mode="L").convert("RGB")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB") if image.mode != "RGB" else image
    array = np.asarray(image)
    if array.dtype == object or array.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W), (H, W, C) or (C, H, W), got an array of shape {array.shape}")
    if array.ndim == 3 and 1 not in (array.shape[0], array.shape[-1]) and 3 not in (array.shape[0], array.shape[-1]) and 4 not in (array.shape[0], array.shape[-1]):
        raise ValueError(f"cannot tell the channels of an image of shape {array.shape}: expected 1, 3 or 4 channels first or last")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    if array.size == 0:
        raise ValueError(f"image has no pixels: shape {array.shape}")
    return image


def _grey_array_to_image(array: np.ndarray) -> Image.Image:
    """A 2-D array as a grey PIL image: uint8 as is, 16-bit and float rescaled from their range."""
    if array.size == 0:
        raise ValueError(f"image has no pixels: shape {array.shape}")
    if array.dtype == np.uint8:
        return Image.fromarray(array, mode="L")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values")
    top = 1.0 if values.max() <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")


class MIMImageProcessor(PilBackend):
    """PIL/NumPy preprocessing (no torchvision needed) that first brings every input to RGB with
    `to_rgb_image`. Subclasses set sizes, resampling, mean and std."""

    model_input_names = ["pixel_values"]
    do_convert_rgb = True

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        # a single 2-D (grey) array or tensor is one image, not a batch of rows
        if hasattr(images, "ndim") and images.ndim == 2:
            images = [_grey_array_to_image(np.asarray(images))]
        elif isinstance(images, (list, tuple)):
            images = [_grey_array_to_image(np.asarray(i)) if hasattr(i, "ndim") and i.ndim == 2 else i for i in images]
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs):
        image = to_rgb_image(image)
        return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, **kwargs)
