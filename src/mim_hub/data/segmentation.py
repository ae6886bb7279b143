"""Semantic-segmentation data: (RGB image, label map) pairs, decoded one item at a time.

The sources (`--dataset` of `mim-hub finetune --task semantic-segmentation`) are rows of the one
source table (`sources/`): `digits-seg` (bundled, offline, `sources/digits_seg.py`),
`segfolder:PATH` (images with label PNGs, `sources/segfolder.py`), and `datasets` tables with an
image column and a label-map column (a `save_to_disk` folder or a Hub name; scene_parse_150's
`image` / `annotation`; `--image-column`, `--label-column`), read here row by row.

`reduce_labels=True` maps 0 to the ignore index 255 and every other id c to c - 1 (ADE20K's
convention: 0 is "other"), as transformers' `do_reduce_labels`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .columns import find_label_map_columns

IGNORE_INDEX = 255


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


def reduce_label_map(label: np.ndarray) -> np.ndarray:
    label = label.astype(np.int64)
    reduced = label - 1
    reduced[label == 0] = IGNORE_INDEX
    reduced[label == IGNORE_INDEX] = IGNORE_INDEX
    return reduced


class HFSegmentation(SegmentationDataset):
    """A `datasets.Dataset` of image + label-map columns, read row by row."""

    def __init__(self, data, *, name: str, image_column: str | None = None, label_column: str | None = None,
                 reduce_labels: bool = False, label_names: list[str] | None = None):
        image_column, label_column = find_label_map_columns(list(data.column_names), image_column, label_column, name)
        self.data, self.image_column, self.label_column = data, image_column, label_column
        self.reduce_labels, self.name = reduce_labels, name
        self.label_names = label_names or names_from_labels(self, max_items=256)

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
        return image.convert("RGB"), reduce_label_map(label) if self.reduce_labels else label


def names_from_labels(dataset: SegmentationDataset, max_items: int) -> list[str]:
    """Class names "0".."K-1" with K = 1 + the largest id in the first `max_items` label maps."""
    largest = 0
    for index in range(min(len(dataset), max_items)):
        label = dataset.item(index)[1]
        valid = label[label != IGNORE_INDEX]
        if valid.size:
            largest = max(largest, int(valid.max()))
    return [str(i) for i in range(largest + 1)]
