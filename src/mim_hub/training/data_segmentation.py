"""Semantic-segmentation data: (RGB image, label map) pairs, decoded one item at a time.

Sources (`--dataset` of `mim-hub finetune --task semantic-segmentation`):

- `digits-seg` (bundled, offline): several of scikit-learn's handwritten digits pasted at random
  sizes and places on a 64x64 canvas; the label map holds 1 + the digit's class on its stroke
  pixels and 0 (background) elsewhere (11 classes). Item i of a split is drawn from
  `numpy.random.default_rng([seed, split, i])`, so the set is the same on every machine and
  nothing is stored. Train and test use disjoint digit images (the digits' 1347/450 split).
- `segfolder:PATH`: `PATH/images/NAME.EXT` with its label map `PATH/labels/NAME.png` (a
  single-channel or palette PNG whose values are class ids; 255 = ignore), optionally one
  level down per split (`PATH/train/images`, `PATH/validation/labels`, ...). Class names may
  be given one per line in `PATH/classes.txt`.
- a `datasets` dataset (a `save_to_disk` folder or a Hub name) with an image column and a
  label-map column (scene_parse_150's `image` / `annotation`; `--image-column`,
  `--label-column`). Rows are read on access.

`reduce_labels=True` maps 0 to the ignore index 255 and every other id c to c - 1 (ADE20K's
convention: 0 is "other"), as transformers' `do_reduce_labels`.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .data import DatasetError

IGNORE_INDEX = 255
DIGITS_SEG_CANVAS = 64
DIGITS_SEG_SIZES = {"train": 1000, "test": 200, "validation": 200}
_SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class SegmentationDataset:
    """Base of the sources: `len()`, `item(i)` -> (RGB PIL image, int64 label map [H, W])."""

    name: str = ""
    label_names: list[str] = []

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def item(self, index: int) -> tuple[Image.Image, np.ndarray]:
        raise NotImplementedError


def _reduce(label: np.ndarray) -> np.ndarray:
    label = label.astype(np.int64)
    reduced = label - 1
    reduced[label == 0] = IGNORE_INDEX
    reduced[label == IGNORE_INDEX] = IGNORE_INDEX
    return reduced


class DigitsSegmentation(SegmentationDataset):
    """`digits-seg`: 2-4 digits per 64x64 canvas, label 1 + class on stroke pixels, 0 elsewhere."""

    def __init__(self, split: str = "train", *, seed: int = 0, size: int | None = None, canvas: int = DIGITS_SEG_CANVAS):
        if split not in _SPLIT_IDS:
            raise DatasetError(f"digits-seg has splits {list(_SPLIT_IDS)}; got {split!r}")
        from .data import digits_split

        images, labels, train, test = digits_split()
        pool = train if split == "train" else test
        self.digits, self.classes = images[pool], labels[pool]
        self.split, self.seed, self.canvas = split, seed, canvas
        self.size = DIGITS_SEG_SIZES[split] if size is None else size
        self.name = f"digits-seg:{split}"
        self.label_names = ["background", *[str(d) for d in range(10)]]

    def __len__(self) -> int:
        return self.size

    def item(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        image = np.zeros((self.canvas, self.canvas), dtype=np.float32)
        label = np.zeros((self.canvas, self.canvas), dtype=np.int64)
        for _ in range(int(rng.integers(2, 5))):
            pick = int(rng.integers(len(self.digits)))
            side = int(rng.integers(self.canvas // 4, self.canvas // 2 + 1))
            digit = np.asarray(Image.fromarray(self.digits[pick]).resize((side, side), Image.BILINEAR), dtype=np.float32)
            top, left = (int(rng.integers(0, self.canvas - side + 1)) for _ in range(2))
            stroke = digit > 96
            window = image[top:top + side, left:left + side]
            np.maximum(window, digit, out=window)  # a later digit's strokes lie over an earlier one's
            label[top:top + side, left:left + side][stroke] = 1 + int(self.classes[pick])
        shade = rng.uniform(0.6, 1.0, size=3)  # each image its own ink colour
        rgb = (image[..., None] * shade[None, None, :]).clip(0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB"), label


class SegFolder(SegmentationDataset):
    """`segfolder:PATH` (see the module docstring for the layout)."""

    def __init__(self, path: str, split: str = "train", *, reduce_labels: bool = False):
        root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split, "images")) else path
        images_dir, labels_dir = os.path.join(root, "images"), os.path.join(root, "labels")
        if not os.path.isdir(images_dir) or not os.path.isdir(labels_dir):
            raise DatasetError(f"segfolder:{path}: expected {path}/images and {path}/labels (or {path}/{split}/images and "
                               f"{path}/{split}/labels) holding images and same-named label PNGs")
        labels = {os.path.splitext(f)[0]: f for f in os.listdir(labels_dir) if f.lower().endswith(".png")}
        self.entries, missing = [], []
        for file in sorted(os.listdir(images_dir)):
            stem, ext = os.path.splitext(file)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if stem in labels:
                self.entries.append((os.path.join(images_dir, file), os.path.join(labels_dir, labels[stem])))
            else:
                missing.append(file)
        if missing:
            raise DatasetError(f"segfolder:{path}: {len(missing)} image(s) without a label PNG in {labels_dir}, e.g. {missing[0]}")
        if not self.entries:
            raise DatasetError(f"segfolder:{path}: no images in {images_dir}")
        self.reduce_labels = reduce_labels
        self.name = f"segfolder:{path}:{split}"
        names_file = os.path.join(path, "classes.txt")
        if os.path.isfile(names_file):
            with open(names_file) as handle:
                self.label_names = [line.strip() for line in handle if line.strip()]
        else:
            self.label_names = _names_from_labels(self, max_items=256)

    def __len__(self) -> int:
        return len(self.entries)

    def item(self, index: int):
        image_path, label_path = self.entries[index]
        from .files import check_regular

        check_regular(image_path)  # a FIFO would block the open forever (training/files.py)
        check_regular(label_path)
        with Image.open(image_path) as image:
            rgb = image.convert("RGB")
        with Image.open(label_path) as label_image:
            if label_image.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{label_path}: a label map must be a single-channel or palette PNG of class ids, got mode {label_image.mode}")
            label = np.asarray(label_image).astype(np.int64)
        if label.shape != (rgb.height, rgb.width):
            raise DatasetError(f"{label_path}: label map is {label.shape[1]}x{label.shape[0]} but its image is {rgb.width}x{rgb.height}")
        return rgb, _reduce(label) if self.reduce_labels else label


class HFSegmentation(SegmentationDataset):
    """A `datasets.Dataset` of image + label-map columns, read row by row."""

    def __init__(self, data, *, name: str, image_column: str | None = None, label_column: str | None = None,
                 reduce_labels: bool = False, label_names: list[str] | None = None):
        columns = list(data.column_names)
        image_column = image_column or next((c for c in ("image", "img", "pixel_values") if c in columns), None)
        label_column = label_column or next((c for c in ("annotation", "label", "segmentation", "mask", "semantic_map") if c in columns), None)
        for what, column in (("image", image_column), ("label map", label_column)):
            if column is None or column not in columns:
                raise DatasetError(f"{name}: no {what} column (columns: {columns}); pass --image-column / --label-column")
        self.data, self.image_column, self.label_column = data, image_column, label_column
        self.reduce_labels, self.name = reduce_labels, name
        self.label_names = label_names or _names_from_labels(self, max_items=256)

    def __len__(self) -> int:
        return len(self.data)

    def item(self, index: int):
        row = self.data[index]
        image, label = row[self.image_column], row[self.label_column]
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        label = np.asarray(label)
        if label.ndim == 3:  # an RGB-encoded map: the first channel holds the id
            label = label[..., 0]
        label = label.astype(np.int64)
        return image.convert("RGB"), _reduce(label) if self.reduce_labels else label


def _names_from_labels(dataset: SegmentationDataset, max_items: int) -> list[str]:
    """Class names "0".."K-1" with K = 1 + the largest id in the first `max_items` label maps."""
    largest = 0
    for index in range(min(len(dataset), max_items)):
        label = dataset.item(index)[1]
        valid = label[label != IGNORE_INDEX]
        if valid.size:
            largest = max(largest, int(valid.max()))
    return [str(i) for i in range(largest + 1)]


def load_segmentation(spec: str, *, split: str = "train", image_column: str | None = None, label_column: str | None = None,
                      reduce_labels: bool = False, seed: int = 0, size: int | None = None, config: str | None = None) -> SegmentationDataset:
    """`digits-seg`, `segfolder:PATH`, a `save_to_disk` folder, or a Hub dataset name."""
    if spec == "digits-seg":
        return DigitsSegmentation(split, seed=seed, size=size)
    if spec.startswith("segfolder:"):
        return SegFolder(spec[len("segfolder:"):], split, reduce_labels=reduce_labels)
    import datasets

    if os.path.isdir(spec):
        try:
            data = datasets.load_from_disk(spec)
        except Exception as error:
            raise DatasetError(f"{spec}: not a `save_to_disk` folder ({str(error)[:200]}); for images with label PNGs use segfolder:{spec}") from None
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DatasetError(f"{spec}: no split {split!r} (splits: {list(data)})")
            data = data[split]
    else:
        try:
            data = datasets.load_dataset(spec, config, split=split)
        except Exception as error:
            raise DatasetError(f"cannot load dataset {spec!r} (split {split!r}): {str(error)[:300]}") from None
    return HFSegmentation(data, name=f"{spec}:{split}", image_column=image_column, label_column=label_column, reduce_labels=reduce_labels)


__all__ = ["SegmentationDataset", "DigitsSegmentation", "SegFolder", "HFSegmentation", "load_segmentation", "IGNORE_INDEX"]
