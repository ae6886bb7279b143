"""`segfolder:PATH`: `PATH/images/NAME.EXT` with its label map `PATH/labels/NAME.png` (a
single-channel or palette PNG whose values are class ids; 255 = ignore), optionally one level
down per split (`PATH/train/images`, `PATH/validation/labels`, ...). Class names may be given
one per line in `PATH/classes.txt`."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..files import check_regular
from ..segmentation import SegmentationDataset, names_from_labels, reduce_label_map
from ..source import Source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
            self.label_names = names_from_labels(self, max_items=256)

    def __len__(self) -> int:
        return len(self.entries)

    def item(self, index: int):
        image_path, label_path = self.entries[index]
        check_regular(image_path)  # a FIFO would block the open forever (data/files.py)
        check_regular(label_path)
        with Image.open(image_path) as image:
            rgb = image.convert("RGB")
        with Image.open(label_path) as label_image:
            if label_image.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{label_path}: a label map must be a single-channel or palette PNG of class ids, got mode {label_image.mode}")
            label = np.asarray(label_image).astype(np.int64)
        if label.shape != (rgb.height, rgb.width):
            raise DatasetError(f"{label_path}: label map is {label.shape[1]}x{label.shape[0]} but its image is {rgb.width}x{rgb.height}")
        return rgb, reduce_label_map(label) if self.reduce_labels else label


SOURCE = Source("segfolder", lambda spec: spec.startswith("segfolder:"), "'segfolder:PATH' (images + label PNGs; segmentation)",
                prefix="segfolder:",
                segmentation=lambda path, split, options: SegFolder(path, split, reduce_labels=options.reduce_labels))
