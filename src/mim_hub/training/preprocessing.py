"""How the pre-trainer prepares and saves its images' preprocessing: the mean/std it trains with
(`--normalization` and its default) and the image processor saved with the model.

Nothing here depends on the image size: the preset states its crop (`crop_pct`, `crop_mode`, in
its method's catalogue) and its normalisation; a model folder that training continues from keeps
its saved processor; any other model gets its method's `for_image_size`, the converters' rule.
"""

from __future__ import annotations

import os

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..auto import method_classes
from .presets import PRESETS, preset


def saved_processor(method: str, model_spec: str):
    """The image processor saved in a model folder that pre-training continues from, or None."""
    if not (os.path.isdir(model_spec) and os.path.isfile(os.path.join(model_spec, "preprocessor_config.json"))):
        return None
    return method_classes(method)["image_processor"].from_pretrained(model_spec)


def input_normalization(args, saved, data=None) -> str:
    """--normalization, or its default: the preset's when it states one (the digits preset:
    "dataset"); else the data's own when it declares one (an image source's `normalization`
    attribute: the bundled digits, grey on black, are normalised with their own statistics); else
    "saved" (the continued model's processor's mean/std) for a folder with a processor; else
    "imagenet"."""
    if args.normalization:
        return args.normalization
    stated = preset(args.model)[1].normalization if args.model in PRESETS else None
    stated = stated or getattr(data, "normalization", None)
    return stated or ("saved" if saved is not None else "imagenet")


def input_statistics(args, saved, data, measure) -> tuple[tuple, tuple]:
    """(mean, std) of the run: `measure()` (the training images' statistics), the saved
    processor's, or ImageNet's, as `input_normalization` chooses."""
    normalization = input_normalization(args, saved, data)
    if normalization == "dataset":
        return measure()
    if normalization == "saved":
        return tuple(saved.image_mean), tuple(saved.image_std)
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def build_processor(method: str, config, mean, std, model_spec: str | None = None, saved=None):
    """The processor saved with the pre-trained model, at its image size, with the training mean/std:
    the continued folder's processor (`saved`) resized, or the method's `for_image_size` with the
    crop the preset states (`crop_pct`, `crop_mode`; the digits preset: a plain resize), or the
    method's default crop (0.875) for any other model. The same function as the converters'
    `ImageProcessor.for_image_size`: one rule whatever the image size."""
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    if saved is not None:
        processor = saved.with_image_size(size)
        processor.image_mean, processor.image_std = list(mean), list(std)
        return processor
    options = preset(model_spec)[1].processor_options() if model_spec in PRESETS else {}
    return method_classes(method)["image_processor"].for_image_size(size, image_mean=list(mean), image_std=list(std), **options)
