"""Image datasets for training and evaluation: a Hub dataset, `imagefolder:PATH`, or `digits`
(scikit-learn's bundled 8x8 handwritten digits, upsampled; works offline).

Every image is converted to RGB. Unreadable images are skipped and counted (or raise, naming
the file, with `on_bad_image="error"`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DIGITS_SIZE = 32


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class ImageDataset:
    """A list-like of (RGB PIL image, label or -1) with the label names when known."""

    images: list
    labels: list[int]
    label_names: list[str] | None = None
    name: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> Image.Image:
        item = self.images[index]
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        return _open_rgb(item)

    def subset(self, indices) -> "ImageDataset":
        return ImageDataset([self.images[i] for i in indices], [self.labels[i] for i in indices], self.label_names, self.name)


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def digits_arrays():
    """(images uint8 [N, 32, 32], labels [N]) from scikit-learn's bundled digits, upsampled
    bilinearly from 8x8 (values 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR)) for im in small])
    return big, digits.target.astype(int)


def digits_split(random_state: int = 0):
    """The protocol's stratified 1347/450 train/test split of the digits (random_state 0)."""
    from sklearn.model_selection import train_test_split

    images, labels = digits_arrays()
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=450, stratify=labels, random_state=random_state)
    return images, labels, np.sort(train), np.sort(test)


def load_digits_dataset(split: str = "train") -> ImageDataset:
    images, labels, train, test = digits_split()
    chosen = {"train": train, "test": test, "all": np.arange(len(labels))}.get(split)
    if chosen is None:
        raise DatasetError(f"digits has splits 'train' (1347), 'test' (450) and 'all'; got {split!r}")
    pil = [Image.fromarray(images[i]).convert("RGB") for i in chosen]
    return ImageDataset(pil, labels[chosen].tolist(), [str(i) for i in range(10)], f"digits:{split}")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_imagefolder(path: str, on_bad_image: str = "skip") -> ImageDataset:
    """`PATH/<class>/<image>` (labels from folder names) or a flat folder of images (no labels).
    Each image is checked once; unreadable ones are skipped and counted, or raise."""
    if not os.path.isdir(path):
        raise DatasetError(f"imagefolder:{path}: no such folder")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    entries = []
    if classes:
        for label, name in enumerate(classes):
            for root, _, files in os.walk(os.path.join(path, name)):
                entries += [(os.path.join(root, f), label) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        entries = [(os.path.join(path, f), -1) for f in sorted(os.listdir(path)) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not entries:
        raise DatasetError(f"imagefolder:{path}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    good, labels, skipped = [], [], []
    for file, label in entries:
        try:
            with Image.open(file) as image:
                image.verify()
        except Exception as error:  # PIL raises many types for broken files
            if on_bad_image == "error":
                raise DatasetError(f"unreadable image {file}: {error}") from None
            skipped.append(file)
            continue
        good.append(file)
        labels.append(label)
    if skipped:
        logger.warning("skipped %d unreadable image(s) in %s, e.g. %s", len(skipped), path, skipped[0])
    if not good:
        raise DatasetError(f"imagefolder:{path}: none of the {len(entries)} images could be read")
    return ImageDataset(good, labels, classes or None, f"imagefolder:{path}", skipped)


def load_hub_dataset(name: str, *, config: str | None = None, split: str = "train", image_column: str | None = None,
                     label_column: str | None = None, on_bad_image: str = "skip") -> ImageDataset:
    """A dataset from the Hub (or a local `datasets` script/folder), by name."""
    import datasets

    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as error:
        raise DatasetError(f"cannot load dataset {name!r} (config {config!r}, split {split!r}): {str(error)[:300]}") from None
    return from_hf_dataset(data, image_column=image_column, label_column=label_column, name=name, on_bad_image=on_bad_image)


def from_hf_dataset(data, *, image_column: str | None = None, label_column: str | None = None, name: str = "dataset",
                    on_bad_image: str = "skip") -> ImageDataset:
    """An `ImageDataset` from a `datasets.Dataset` with an image column (auto-detected)."""
    import datasets

    features = data.features
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            image_column = next((c for c in ("image", "img", "pixel_values") if c in features), None)
    if image_column is None or image_column not in features:
        raise DatasetError(f"{name}: no image column (columns: {list(features)}); pass --image-column")
    if label_column is None:
        label_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if label_column is None:
            label_column = next((c for c in ("label", "labels", "fine_label") if c in features), None)
    elif label_column not in features:
        raise DatasetError(f"{name}: no column {label_column!r} (columns: {list(features)})")
    label_names = features[label_column].names if label_column and isinstance(features[label_column], datasets.ClassLabel) else None
    images, labels, skipped = [], [], []
    for index, row in enumerate(data):
        image = row[image_column]
        try:
            if isinstance(image, dict) and image.get("path"):
                image = _open_rgb(image["path"])
            elif not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image))
            image = image.convert("RGB")
        except Exception as error:
            if on_bad_image == "error":
                raise DatasetError(f"{name}: unreadable image in row {index}: {error}") from None
            skipped.append(f"row {index}")
            continue
        images.append(image)
        labels.append(int(row[label_column]) if label_column else -1)
    if not images:
        raise DatasetError(f"{name}: the dataset holds no readable images")
    if label_column and label_names is None:
        label_names = [str(v) for v in sorted(set(labels))]
        remap = {int(v): i for i, v in enumerate(sorted(set(labels)))}
        labels = [remap[v] for v in labels]
    return ImageDataset(images, labels, label_names, name, skipped)


def load_images(spec: str, *, split: str = "train", config: str | None = None, image_column: str | None = None,
                label_column: str | None = None, on_bad_image: str = "skip") -> ImageDataset:
    """`digits`, `imagefolder:PATH` or a Hub dataset name."""
    if spec == "digits":
        return load_digits_dataset(split)
    if spec.startswith("imagefolder:"):
        return load_imagefolder(spec[len("imagefolder:"):], on_bad_image=on_bad_image)
    if os.path.isdir(spec):
        raise DatasetError(f"{spec!r} is a folder: use --dataset imagefolder:{spec}")
    return load_hub_dataset(spec, config=config, split=split, image_column=image_column, label_column=label_column,
                            on_bad_image=on_bad_image)


def add_dataset_arguments(parser, default: str = "digits") -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default, help="'digits' (bundled, offline), 'imagefolder:PATH', or a Hub dataset name")
    group.add_argument("--dataset-config", default=None, help="configuration name of a Hub dataset")
    group.add_argument("--split", default="train", help="split to train on")
    group.add_argument("--eval-split", default=None, help="split to evaluate on (default: 'test' for digits, none otherwise)")
    group.add_argument("--image-column", default=None, help="image column of a Hub dataset (auto-detected)")
    group.add_argument("--label-column", default=None, help="label column of a Hub dataset (auto-detected)")
    group.add_argument("--on-bad-image", choices=("skip", "error"), default="skip", help="skip and count unreadable images, or stop")


def dataset_from_args(args, split: str | None = None) -> ImageDataset:
    return load_images(args.dataset, split=split or args.split, config=args.dataset_config, image_column=args.image_column,
                       label_column=args.label_column, on_bad_image=args.on_bad_image)
