"""Decoding images as `datasets` and transformers do, within a pixel budget, and telling bad data
from bad code.

`prepared(image)` takes an image as `Image.open` gives it (opened, not decoded) and returns the
one to use:
- **A pixel budget.** An image of more than `max_image_pixels()` pixels (default 64 Mpx, 8192 x
  8192; `--max-image-pixels` or the environment variable `MIM_HUB_MAX_IMAGE_PIXELS`) is not
  decoded at full size: a JPEG is decoded at the largest of 1/2, 1/4 or 1/8 scale that fits
  (libjpeg's DCT scaling, `Image.draft`: no full-size buffer is ever allocated); any other
  format is an unreadable image (`PixelBudgetError`, skipped and named like a truncated file).
  PIL's own limit (`Image.MAX_IMAGE_PIXELS`, 89 Mpx warned, 179 Mpx refused) stays below it as a
  second line: the budget is what bounds a worker's memory (a 12000 x 12000 PNG of 140 KB would
  cost 2 GB a decode).
- **EXIF orientation** applied (`ImageOps.exif_transpose`), as `datasets.Image` and the
  transformers image processors do: a photo taken sideways is seen upright. Only images whose
  EXIF says they are rotated or mirrored are transposed (and so decoded here); the others stay
  lazy, so the pre-training crop can still decode a JPEG at reduced size.
- **High bit depth scaled, not clipped.** A 16-bit grey image (`I;16`, `I`) is scaled to 8 bits
  (65535 -> 255) instead of being clipped at 255 by `convert("RGB")` (which would turn nearly
  every pixel white).

`decodes(open_again)`: whether an image decodes in full, used when something failed *after* the
image was opened: if the image decodes, the failure was in a transform or an option (a bug or a
bad setting, raised as it is); only if it does not is the image a bad one.
"""

from __future__ import annotations

import os

from PIL import Image, ImageOps

PIXEL_BUDGET_ENV = "MIM_HUB_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
ORIENTATION = 0x0112
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class PixelBudgetError(OSError):
    """An image larger than the pixel budget that cannot be decoded at a reduced size."""


def max_image_pixels() -> int:
    """The pixel budget: `MIM_HUB_MAX_IMAGE_PIXELS` (set by `--max-image-pixels`), else 64 Mpx."""
    value = os.environ.get(PIXEL_BUDGET_ENV)
    if value:
        try:
            budget = int(value)
        except ValueError:
            raise ValueError(f"{PIXEL_BUDGET_ENV}={value!r} is not a number of pixels") from None
        if budget < 1:
            raise ValueError(f"{PIXEL_BUDGET_ENV}={value!r}: the pixel budget must be at least 1")
        return budget
    return DEFAULT_MAX_IMAGE_PIXELS


def set_max_image_pixels(pixels: int | None) -> None:
    """Set the budget for this process and the worker processes it starts."""
    if pixels is not None:
        os.environ[PIXEL_BUDGET_ENV] = str(int(pixels))


def _within_budget(image: Image.Image) -> Image.Image:
    budget = max_image_pixels()
    width, height = image.size
    if width * height <= budget:
        return image
    if image.format == "JPEG" and not getattr(image, "decoderconfig", None):
        for scale in (2, 4, 8):
            if (width // scale) * (height // scale) <= budget:
                break
        image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", (-(-width // scale), -(-height // scale)))
        if image.width * image.height <= budget:
            return image
    raise PixelBudgetError(f"{width} x {height} = {width * height} pixels, over the budget of {budget} "
                           f"(--max-image-pixels or {PIXEL_BUDGET_ENV}){' even at 1/8 scale' if image.format == 'JPEG' else ''}")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, read without decoding (the EXIF block the header parse found)."""
    if image.format == "TIFF":
        return int(getattr(image, "tag_v2", {}).get(274, 1) or 1)
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # noqa: BLE001 - an unparsable EXIF block is treated as absent, as PIL does
        return 1
    return int(exif.get(ORIENTATION, 1) or 1)


def _eight_bit(image: Image.Image) -> Image.Image:
    import numpy as np

    array = np.asarray(image)
    if image.mode == "I":  # 32-bit container of a 16-bit image (PNG), clipped to 16 bits
        array = np.clip(array, 0, 65535)
    scaled = (array.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    return Image.fromarray(scaled, "L")


def prepared(image: Image.Image) -> Image.Image:
    """`image` within the pixel budget, upright, in 8 bits (see the module docstring)."""
    image = _within_budget(image)
    if _orientation(image) not in (1, 0):
        image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_MODES:
        image = _eight_bit(image)
    return image


def decodes(open_again) -> bool:
    """Whether the image `open_again()` opens decodes in full (within the budget)."""
    try:
        with open_again() as image:
            prepared(image).load()
        return True
    except Exception:  # noqa: BLE001 - any failure to decode is the image's
        return False
