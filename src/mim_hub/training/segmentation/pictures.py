"""A picture of segmentation results: per item, the image, its ground truth and the prediction."""

from __future__ import annotations

import colorsys
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from ...data.segmentation import SegmentationDataset
from .data import JointTransform
from .sliding_window import slide_logits


def palette(num_labels: int) -> np.ndarray:
    """[K + 1, 3] colours: 0 black, the others spread in hue; the last row (ignored) white."""
    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, num_labels - 1), 0.8, 1.0))
                             for i in range(num_labels - 1)]
    return np.asarray(colours + [(255, 255, 255)], dtype=np.uint8)


def _colour(label: np.ndarray, colours: np.ndarray) -> np.ndarray:
    index = np.where((label >= 0) & (label < len(colours) - 1), label, len(colours) - 1)
    return colours[index]


@torch.no_grad()
def segmentation_picture(model, source: SegmentationDataset, transform: JointTransform, indices, path: str, scale: int = 3,
                         slide: tuple | None = None) -> str:
    """A PNG with one row per item: input, truth, prediction (side by side, titled above). With
    `slide` (crop_size, stride) the prediction is sliding-window at the image's own resolution
    (`transform` then has `size=None`)."""
    model.eval()
    colours = palette(model.config.num_labels)
    rows = []
    for index in indices:
        image, label = source.item(index)
        pixels, resized_label = transform(image, label, None)
        if slide is not None:
            prediction = slide_logits(model, torch.from_numpy(pixels), *slide).argmax(0).numpy()
        else:
            logits = model(pixel_values=torch.from_numpy(pixels)[None].to(next(model.parameters()).device)).logits
            prediction = logits.argmax(1)[0].cpu().numpy()
        shown = np.asarray(image.convert("RGB") if transform.size is None else image.resize((transform.size, transform.size), Image.BILINEAR))
        rows.append(np.concatenate([shown, _colour(resized_label, colours), _colour(prediction, colours)], axis=1))
    grid = np.concatenate(rows, axis=0)
    picture = titled_columns(Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST),
                             ["input", "truth", "prediction"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture.save(path)
    return path


def titled_columns(picture: Image.Image, titles: list[str], height: int = 16) -> Image.Image:
    """`picture` (equal-width columns side by side) below a white band with each column's title."""
    canvas = Image.new("RGB", (picture.width, picture.height + height), "white")
    canvas.paste(picture, (0, height))
    draw = ImageDraw.Draw(canvas)
    width = picture.width // len(titles)
    for i, title in enumerate(titles):
        left, _, right, _ = draw.textbbox((0, 0), title)
        draw.text((i * width + max(0, (width - (right - left)) // 2), 2), title, fill="black")
    return canvas
