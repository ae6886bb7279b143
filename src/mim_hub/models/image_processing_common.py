"""The base of every mim_hub image processor: transformers' PIL backend, plus input checks and
mode handling that turn any image into RGB or a clear error."""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

RESIZE_BACKENDS = ("pil", "torch")
_TORCH_MODES = {int(Image.BILINEAR): "bilinear", int(Image.BICUBIC): "bicubic"}

# Bounds on the work one image can cause (see README, "Security and robustness"): an image whose
# long side is more than MAX_ASPECT_RATIO times its short side is refused (resizing its short edge
# would make a huge image: a 1 x 1,000,000 PNG of 3 kB becomes 224 x 224,000,000), and so is any
# resize or crop whose output has more than MAX_OUTPUT_PIXELS pixels (a processor size of 100000^2).
MAX_ASPECT_RATIO = 100
MAX_OUTPUT_PIXELS = 4096 * 4096


def check_image_work(height: int, width: int, output_size: tuple[int, int] | None, what: str = "resize") -> None:
    """Refuse an image of `height` x `width` whose aspect ratio is beyond MAX_ASPECT_RATIO, or a
    `what` (resize, crop) to `output_size` of more than MAX_OUTPUT_PIXELS pixels."""
    if height < 1 or width < 1:
        raise ValueError(f"image has no pixels: size {height}x{width}")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(
            f"image of {height}x{width} pixels has an aspect ratio of {max(height, width) / min(height, width):.0f}:1, beyond "
            f"the {MAX_ASPECT_RATIO}:1 the image processors accept (mim_hub.models.image_processing_common.MAX_ASPECT_RATIO): "
            "crop it first")
    if output_size is not None and output_size[0] * output_size[1] > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"{what} of a {height}x{width} image to {output_size[0]}x{output_size[1]} pixels would make more than "
            f"{MAX_OUTPUT_PIXELS} pixels (mim_hub.models.image_processing_common.MAX_OUTPUT_PIXELS): check the processor's "
            "size and crop_size")


def to_uint8_levels(array: np.ndarray) -> np.ndarray:
    """An array image of any numeric dtype as the 8-bit image it stands for, shape unchanged.

    As transformers' `is_scaled_image`, a float image with every value in [0, 1] is taken as
    already scaled (torchvision's `ToTensor` convention) and brought back to 0..255 levels, so that
    it is not divided by 255 a second time; a float image in [0, 255] is in 0..255 levels already.
    Integer images are 0..255, or 16-bit 0..65535 when they hold larger values; booleans are 0/255.
    Negative values, or values beyond those ranges, have no known scale and are refused: an image
    that is already normalised must be passed with `do_rescale=False, do_normalize=False`."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"image of dtype {array.dtype} is not a numeric image")
    values = array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    floating = np.issubdtype(array.dtype, np.floating)
    if low < 0 or high > (255.0 if floating else 65535):
        raise ValueError(
            f"{array.dtype} image with values in [{low:g}, {high:g}] has no known scale: images are 8-bit (0..255), "
            "floats in [0, 1] or [0, 255], or 16-bit (0..65535); an image that is already normalised is passed with "
            "do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False")
    top = (1.0 if high <= 1.0 else 255.0) if floating else (255.0 if high <= 255 else 65535.0)
    if top == 255.0 and not floating:
        return array.astype(np.uint8)
    return np.clip(np.round(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def resize_uint8(hwc: np.ndarray, height: int, width: int, resample, backend: str = "pil") -> np.ndarray:
    """Resize an 8-bit [H, W, C] array. `backend="pil"` is PIL's resize (what transformers' PIL
    backend and the originals' torchvision-on-PIL transforms compute); `"torch"` uses torch's
    antialiased uint8 kernels (torchvision v2's path), 2-5x faster on one core and within one grey
    level of PIL for bilinear (a few levels at sharp edges for bicubic). Resampling filters torch
    lacks (nearest, box, hamming, lanczos) always go through PIL."""
    resample = Image.BILINEAR if resample is None else resample
    mode = _TORCH_MODES.get(int(resample))
    if backend == "torch" and mode is not None:
        if (hwc.shape[0], hwc.shape[1]) == (height, width):
            return hwc
        with warnings.catch_warnings():  # a read-only view of PIL's pixels: only read here
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)[None]  # channels-last memory
        out = torch.nn.functional.interpolate(tensor, size=(height, width), mode=mode, antialias=True, align_corners=False)
        return out[0].permute(1, 2, 0).numpy()
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {backend!r}")
    channels = hwc.shape[2]
    pil = Image.fromarray(hwc[..., 0] if channels == 1 else np.ascontiguousarray(hwc))
    out = np.asarray(pil.resize((width, height), resample=resample))
    return out[..., None] if out.ndim == 2 else out


class MIMImagesKwargs(ImagesKwargs, total=False):
    """The keyword arguments of every mim_hub image processor: transformers' own plus
    `resize_backend` ("pil", the default, or "torch")."""

    resize_backend: str | None


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
            if values.min() < 0:
                raise ValueError(
                    f"image of mode {image.mode} has negative values (min {values.min():g}, max {values.max():g}): its "
                    "range is unknown; convert it to 8-bit (mode 'L') or scale it to [0, 1] first")
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


@functools.lru_cache(maxsize=32)
def _normalisation_table(scale: float, mean: tuple, std: tuple) -> np.ndarray:
    """[C, 256] float32: ((v * scale) - mean) / std, with the generic path's dtypes and order."""
    rescaled = (np.arange(256, dtype=np.uint8).astype(np.float64) * scale).astype(np.float32)
    mean32, std32 = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return (rescaled[None, :] - mean32[:, None]) / std32[:, None]


def _grey_array_to_image(array: np.ndarray) -> Image.Image:
    """A 2-D array as a grey PIL image: uint8 as is, 16-bit and float rescaled from their range."""
    if array.size == 0:
        raise ValueError(f"image has no pixels: shape {array.shape}")
    if array.dtype == np.uint8:
        return Image.fromarray(array, mode="L")
    return Image.fromarray(to_uint8_levels(array), mode="L")


class MIMImageProcessor(PilBackend):
    """PIL/NumPy preprocessing (no torchvision needed) that first brings every input to RGB with
    `to_rgb_image`. The defaults are the evaluation transform every method here shares: the
    shorter side resized to 256 (bicubic), a centre crop of 224, rescaled to [0, 1], normalised
    with ImageNet's mean/std; a method's processor states only what differs."""

    model_input_names = ["pixel_values"]
    do_convert_rgb = True
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    valid_kwargs = MIMImagesKwargs
    # "pil": bit-identical to transformers' PIL backend (and to the originals' eval transforms);
    # "torch": torch's antialiased uint8 resize, several times faster (see `resize_uint8`).
    resize_backend = "pil"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.resize_backend not in RESIZE_BACKENDS:
            raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {self.resize_backend!r}")

    # The evaluation transform's centre crop as a share of the resized image (timm's `crop_pct`):
    # 224 of 256, the originals' evaluation transform, for every method here. `for_image_size` reads it.
    crop_pct = 0.875
    CROP_MODES = ("center", "squash")

    @staticmethod
    def resized_side(image_size: int, crop_pct: float) -> int:
        """The side an `image_size` crop is taken from: image_size / crop_pct, rounded (256 for 224)."""
        return int(round(image_size / crop_pct))

    @classmethod
    def for_image_size(cls, image_size: int, *, crop_pct: float | None = None, crop_mode: str = "center", **kwargs):
        """The processor for an `image_size` x `image_size` model input, other settings the class's.

        `crop_mode="center"` (the originals' evaluation transform): the shorter side is resized to
        `resized_side(image_size, crop_pct)` and the centre `image_size` square cropped.
        `crop_mode="squash"`: both sides are resized to that side, the aspect ratio ignored, then
        the crop; with `crop_pct=1.0` nothing is cropped, a plain resize. `crop_pct` defaults to the
        class's (0.875: 256 -> 224). The processor's config states the outcome (`size`,
        `crop_size`, `do_center_crop`), whatever the image size."""
        crop_pct = cls.crop_pct if crop_pct is None else crop_pct
        if not (isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
        if crop_mode not in cls.CROP_MODES:
            raise ValueError(f"crop_mode must be one of {cls.CROP_MODES}, got {crop_mode!r}")
        side = cls.resized_side(image_size, crop_pct)
        size = {"shortest_edge": side} if crop_mode == "center" else {"height": side, "width": side}
        if crop_mode == "squash" and side == image_size:  # nothing to crop
            return cls(size=size, do_center_crop=False, **kwargs)
        return cls(size=size, crop_size={"height": image_size, "width": image_size}, **kwargs)

    def with_image_size(self, image_size: int) -> "MIMImageProcessor":
        """A copy that makes `image_size` x `image_size` inputs, everything else as this one: a
        centre crop of that size after a resize scaled in proportion (e.g. 256 -> 224 becomes
        293 -> 256), or, without a crop, a resize to that size."""
        resized = copy.deepcopy(self)
        if self.do_center_crop and self.crop_size is not None and self.crop_size.height:
            ratio = image_size / self.crop_size.height
            if self.size.shortest_edge:
                resized.size = SizeDict(shortest_edge=int(round(self.size.shortest_edge * ratio)))
            elif self.size.height and self.size.width:
                resized.size = SizeDict(height=int(round(self.size.height * ratio)), width=int(round(self.size.width * ratio)))
            resized.crop_size = SizeDict(height=image_size, width=image_size)
        else:
            resized.size = SizeDict(height=image_size, width=image_size)
        return resized

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list:
        """[H, W] class-id maps from a segmentation model's `logits` [B, K, h, w] (the
        `image-segmentation` pipeline's hook), each resized to its `target_sizes` (height, width)
        entry first when given, as transformers' BEiT/SegFormer processors do."""
        import torch

        logits = outputs.logits
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"{len(target_sizes)} target_sizes for {len(logits)} images")
        maps = []
        for index in range(len(logits)):
            scores = logits[index: index + 1]
            if target_sizes is not None:
                size = tuple(int(v) for v in target_sizes[index])
                scores = torch.nn.functional.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
            maps.append(scores[0].argmax(dim=0))
        return maps

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        if isinstance(images, (list, tuple)) and len(images) == 0 or hasattr(images, "ndim") and 0 in images.shape[:1] and images.ndim == 4:
            raise ValueError("no images given: pass an image or a non-empty list of images")
        # a single 2-D (grey) array or tensor is one image, not a batch of rows
        if hasattr(images, "ndim") and images.ndim == 2:
            images = [_grey_array_to_image(np.asarray(images))]
        elif isinstance(images, (list, tuple)):
            images = [_grey_array_to_image(np.asarray(i)) if hasattr(i, "ndim") and i.ndim == 2 else i for i in images]
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def _preprocess(self, images, do_resize, size, resample, do_center_crop, crop_size, do_rescale, rescale_factor,
                    do_normalize, image_mean, image_std, do_pad=None, pad_size=None, return_tensors=None, resize_backend=None, **kwargs):
        """A faster path with the same numbers as the generic one for 8-bit images: PIL resizes
        (as transformers' PIL backend does; torch when `resize_backend="torch"`), the crop is a
        slice, and rescale + normalise is one lookup in a per-channel float32 table computed with
        the generic path's exact operations."""
        backend = resize_backend or "pil"
        if backend not in RESIZE_BACKENDS:
            raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {backend!r}")
        if not images:
            raise ValueError("no images given: pass an image or a non-empty list of images")
        for image in images:  # bound the work of each image before any is resized
            height, width = image.shape[-2:]
            resized = self._output_size(height, width, size) if do_resize else (height, width)
            check_image_work(height, width, resized if do_resize else None)
            if do_center_crop and crop_size is not None and crop_size.height:
                check_image_work(height, width, (crop_size.height, crop_size.width), "crop")
        fast = (
            do_rescale and do_normalize and not do_pad and image_mean is not None and image_std is not None
            and all(isinstance(i, np.ndarray) and i.dtype == np.uint8 and i.ndim == 3 and i.shape[0] in (1, 3) for i in images)
        )
        if not fast:
            return super()._preprocess(images, do_resize, size, resample, do_center_crop, crop_size, do_rescale, rescale_factor,
                                       do_normalize, image_mean, image_std, do_pad=do_pad, pad_size=pad_size, return_tensors=return_tensors, **kwargs)
        processed = []
        for image in images:
            channels = image.shape[0]
            hwc = image.transpose(1, 2, 0)
            if do_resize:
                height, width = self._output_size(hwc.shape[0], hwc.shape[1], size)
                hwc = resize_uint8(hwc, height, width, resample, backend)
            if do_center_crop:
                top, left = (hwc.shape[0] - crop_size.height) // 2, (hwc.shape[1] - crop_size.width) // 2
                if top < 0 or left < 0:  # padding needed: the generic path does it
                    processed.append(super()._preprocess([hwc.transpose(2, 0, 1)], False, size, resample, True, crop_size, True,
                                                          rescale_factor, True, image_mean, image_std, return_tensors=None).pixel_values[0])
                    continue
                hwc = hwc[top: top + crop_size.height, left: left + crop_size.width]
            table = _normalisation_table(rescale_factor, tuple(np.broadcast_to(image_mean, channels)), tuple(np.broadcast_to(image_std, channels)))
            chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
            processed.append(np.stack([table[c].take(chw[c]) for c in range(channels)]))
        from transformers.feature_extraction_utils import BatchFeature

        return BatchFeature(data={"pixel_values": processed}, tensor_type=return_tensors)

    @staticmethod
    def _output_size(height: int, width: int, size) -> tuple[int, int]:
        if size.shortest_edge and not size.longest_edge:
            short, long = (height, width) if height <= width else (width, height)
            new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
            return (new_short, new_long) if height <= width else (new_long, new_short)
        if size.height and size.width:
            return size.height, size.width
        from transformers.image_utils import get_size_with_aspect_ratio

        return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs):
        image = to_rgb_image(image)
        factor = kwargs.get("rescale_factor", self.rescale_factor)
        if not isinstance(image, Image.Image) and kwargs.get("do_rescale", self.do_rescale) and factor and abs(factor * 255 - 1) < 1e-6:
            # arrays and tensors: floats already in [0, 1] are not rescaled a second time (a custom
            # rescale_factor says the caller knows the scale: those are left as they are)
            image = to_uint8_levels(image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image))
        if isinstance(image, Image.Image) and image.mode == "RGB" and do_convert_rgb is not False:
            # already RGB: one copy out of PIL, none through another convert("RGB")
            return np.moveaxis(np.asarray(image), -1, 0)
        return super().process_image(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, **kwargs)
