"""`mim-hub reconstruct`: write a picture of an image, its mask, the model's reconstruction and the reconstruction with
the visible patches pasted back (MAE-family pre-training models)."""

from __future__ import annotations

import argparse

from .arguments import add_data_arguments, data_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved pre-training model folder (with its decoder)")
    parser.add_argument("--image", default=None, help="image file (or pick one of --dataset with --index)")
    parser.add_argument("--index", type=int, default=0, help="with --dataset: which item of the split to reconstruct")
    add_data_arguments(parser, default=None, streaming=False)
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--mask-ratio", type=float, default=None, help="fraction of patches to mask (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")


def main(args: argparse.Namespace) -> int:
    import os

    from PIL import Image, UnidentifiedImageError
    from transformers import AutoImageProcessor

    import mim_hub  # noqa: F401

    from ..auto import method_classes
    from ..reconstruction import compose_picture, reconstruct
    from ..training.modelio import method_of_folder

    method = method_of_folder(args.model)
    model = method_classes(method)["pretraining"].from_pretrained(args.model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    if args.image is None:
        if args.dataset is None:
            raise ValueError("give --image FILE, or --dataset SPEC (and --index N)")
        images = data_settings(args).images()
        if not 0 <= args.index < len(images):
            raise ValueError(f"--index {args.index}: {images.name} has {len(images)} images")
        image = images.image(args.index)
    else:
        from ..data.decode import prepared
        from ..data.files import check_regular

        try:
            check_regular(args.image)  # a FIFO would block the open forever
            image = prepared(Image.open(args.image))  # upright, 8-bit, within the pixel budget (data/decode.py)
            image.load()
        except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read image {args.image}: {error}") from None
    pixels = processor(image, return_tensors="pt").pixel_values
    result = reconstruct(model, pixels, mask_ratio=args.mask_ratio, seed=args.seed)
    picture = compose_picture(result, 0, processor.image_mean, processor.image_std)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    picture.save(args.output)
    print(f"wrote {args.output} (loss on masked patches {result.loss[0].item():.4f})")
    return 0
