"""Data augmentation in PIL and NumPy (no torchvision): each transform takes an explicit
`numpy.random.Generator`, so a sample's augmentation depends only on (seed, epoch, index) and
training resumes bit for bit."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..models.image_processing_common import RESIZE_BACKENDS, resize_uint8


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop box sampling (10 tries, then a centre crop)."""
    area = width * height
    low, high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        # `low + (high - low) * rng.random()` is what `rng.uniform(low, high)` computes (the same draws, bit for bit),
        # without its argument handling: ~25x cheaper per call
        target = area * (scale[0] + (scale[1] - scale[0]) * rng.random())
        aspect = math.exp(low + (high - low) * rng.random())
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def draft_for_crop(image: Image.Image, box, size: int):
    """Decode a not-yet-decoded JPEG at a reduced scale (1/2, 1/4, 1/8: PIL's `Image.draft`, the
    DCT scaling of libjpeg) when the crop `box` will be downscaled by at least that factor to
    `size`; returns the image and the box in its new coordinates. Anything else is returned as
    it is. The crop then covers the same region to within a pixel of the reduced image."""
    left, top, right, bottom = box
    factor = min(right - left, bottom - top) / size
    if factor < 2 or getattr(image, "format", None) != "JPEG" or len(getattr(image, "tile", ())) != 1:
        return image, box
    width, height = image.size
    scale = min(8, 2 ** int(math.log2(factor)))
    if image.draft("RGB", (math.ceil(width / scale), math.ceil(height / scale))) is None:
        return image, box
    sx, sy = image.width / width, image.height / height
    new_left, new_top = int(left * sx), int(top * sy)
    new_right = min(image.width, max(new_left + 1, int(round(right * sx))))
    new_bottom = min(image.height, max(new_top + 1, int(round(bottom * sy))))
    return image, (new_left, new_top, new_right, new_bottom)


class Normalize:
    """uint8 HWC -> float32 CHW, (x / 255 - mean) / std, via a lookup table."""

    def __init__(self, mean, std):
        rescaled = np.arange(256, dtype=np.float64) / 255.0
        self.table = ((rescaled[None, :] - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]).astype(np.float32)

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        array = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        chw = np.ascontiguousarray(array.transpose(2, 0, 1))
        out = np.empty(chw.shape, dtype=np.float32)
        for c in range(3):  # straight into the output (no stacking copy)
            self.table[c].take(chw[c], out=out[c])
        return out

    def _device_table(self, device):
        """The table as a tensor on `device`, copied there once (not on every batch)."""
        cache = self.__dict__.setdefault("_device_tables", {})
        key = str(torch.device(device))
        if key not in cache:
            cache[key] = torch.from_numpy(self.table).to(device)
        return cache[key]

    def __getstate__(self):  # workers get the numpy table only, not device copies
        return {k: v for k, v in self.__dict__.items() if k != "_device_tables"}

    def batch(self, pixels):
        """A batch of uint8 [B, 3, H, W] tensors (on any device) normalised by the same table: the
        same float32 values `__call__` gives per image, bit for bit."""
        table = self._device_table(pixels.device)
        out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
        for c in range(3):
            out[:, c] = table[c][pixels[:, c].long()]
        return out


class RandomResizedCropFlip:
    """MAE's pre-training augmentation: RandomResizedCrop(size, scale) with bicubic resampling of
    the crop box straight to the output size, then a horizontal flip with probability 0.5.

    `backend="torch"` (the default) resamples with torch's antialiased uint8 kernels, several
    times faster than PIL on one core (benchmarks/run.py, data path); `"pil"` is PIL's resize
    (torchvision's on PIL images). The random draws are the same either way.

    Given a JPEG opened but not yet decoded (as the data layer hands them over), it decodes it
    at 1/2, 1/4 or 1/8 scale when the crop is downscaled by that much anyway (`draft_for_crop`;
    `draft=False` turns that off). The box and flip are drawn from the full-size image either way.

    `uint8=True`: return the crop as uint8 CHW, not normalised; `normalize.batch` then normalises a
    batch of them to exactly the same values (the trainer does that on the GPU, so that workers
    decode more images per second and hand over a quarter of the bytes)."""

    accepts_lazy_images = True  # the data layer may pass an opened, not yet decoded, image

    def __init__(self, size: int, mean, std, scale=(0.2, 1.0), flip: bool = True, resample=Image.BICUBIC, backend: str = "torch",
                 draft: bool = True, uint8: bool = False):
        if backend not in RESIZE_BACKENDS:
            raise ValueError(f"backend must be one of {RESIZE_BACKENDS}, got {backend!r}")
        self.size, self.scale, self.flip, self.resample, self.backend, self.draft = size, scale, flip, resample, backend, draft
        self.uint8 = uint8
        self.normalize = Normalize(mean, std)

    def draw(self, image: Image.Image, rng: np.random.Generator):
        """The random part: the crop box (left, top, right, bottom) and whether to flip."""
        box = random_resized_crop_box(image.width, image.height, rng, self.scale)
        return box, self.flip and rng.random() < 0.5

    def crop_resize(self, image: Image.Image, box, flip: bool):
        """The crop `box` resampled to `size`, flipped when asked (uint8: an array or a PIL image)."""
        if self.backend == "torch":
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            # cut out in PIL, then one copy into NumPy (not the whole image, then the crop again to make it contiguous)
            array = np.asarray(rgb.crop(box) if tuple(box) != (0, 0, *rgb.size) else rgb)
            out = resize_uint8(array, self.size, self.size, self.resample, "torch")
            return out[:, ::-1] if flip else out
        out = image.resize((self.size, self.size), self.resample, box=box)
        return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        box, flip = self.draw(image, rng)
        if self.draft:
            image, box = draft_for_crop(image, box, self.size)
        crop = self.crop_resize(image.convert("RGB") if image.mode != "RGB" else image, box, flip)
        if self.uint8:
            return np.ascontiguousarray(np.asarray(crop).transpose(2, 0, 1))
        return self.normalize(crop)


class RandomResizedCropTwoViews(RandomResizedCropFlip):
    """BEiT's and CAE's pre-training augmentation (`RandomResizedCropAndInterpolationWithTwoPic`):
    one crop box and one flip, resampled twice, so both views show the same region:
    - `pixel_values`: the crop at `size` (bicubic), normalised, for the encoder;
    - `tokenizer_pixel_values`: the crop cut out and resized to `second_size` with Lanczos, in
      [0, 1] (not normalised), for the tokenizer (CAE: 112 px for the DALL-E dVAE, which maps
      the pixels itself).
    Returns a dict of the two float32 CHW arrays."""

    def __init__(self, size: int, second_size, mean, std, scale=(0.08, 1.0), flip: bool = True, resample=Image.BICUBIC,
                 second_resample=Image.LANCZOS, backend: str = "torch"):
        super().__init__(size, mean, std, scale=scale, flip=flip, resample=resample, backend=backend)
        self.second_size = (second_size, second_size) if isinstance(second_size, int) else tuple(second_size)
        self.second_resample = second_resample

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> dict[str, np.ndarray]:
        box, flip = self.draw(image, rng)
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        height, width = self.second_size
        second = np.asarray(rgb.crop(box).resize((width, height), self.second_resample))  # crop, then resize (torchvision's resized_crop)
        second = second[:, ::-1] if flip else second
        return {"pixel_values": self.normalize(self.crop_resize(rgb, box, flip)),
                "tokenizer_pixel_values": np.ascontiguousarray(second.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)}


class ResizeCenterCrop:
    """Evaluation transform: resize the shorter side to size / crop_ratio, centre crop."""

    def __init__(self, size: int, mean, std, crop_ratio: float = 0.875, resample=Image.BICUBIC):
        self.size, self.crop_ratio, self.resample = size, crop_ratio, resample
        self.normalize = Normalize(mean, std)

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        short = int(round(self.size / self.crop_ratio))
        w, h = image.size
        nw, nh = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
        image = image.resize((nw, nh), self.resample)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return self.normalize(image.crop((left, top, left + self.size, top + self.size)))
