"""`digits`: scikit-learn's bundled 8x8 handwritten digits, upsampled to 32 px (offline).

Splits: the protocol's stratified 1347/450 'train'/'test' split (random_state 0), and 'all'.
scikit-learn is imported when the digits are read: only this source needs it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..images import ImageDataset, ImageList
from ..source import Source

DIGITS_SIZE = 32


def digits_arrays():
    """(images uint8 [N, 32, 32], labels [N]) from scikit-learn's bundled digits, upsampled
    bilinearly from 8x8 (values 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits  # only this source needs scikit-learn

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


class DigitsImages(ImageList):
    """The bundled digits (uint8 arrays)."""

    # 8 x 8 grey digits on black are far from ImageNet's statistics: a run normalises them with
    # their own unless told otherwise (`mim-hub pretrain --normalization`, training/preprocessing.py)
    normalization = "dataset"

    def _open(self, index):
        return Image.fromarray(self.images[index]).convert("RGB")


def load_digits_dataset(split: str = "train") -> ImageDataset:
    images, labels, train, test = digits_split()
    chosen = {"train": train, "test": test, "all": np.arange(len(labels))}.get(split)
    if chosen is None:
        raise DatasetError(f"digits has splits 'train' (1347), 'test' (450) and 'all'; got {split!r}")
    return DigitsImages(images[chosen], labels[chosen], [str(i) for i in range(10)], f"digits:{split}")


SOURCE = Source("digits", lambda spec: spec == "digits", "'digits' (bundled, offline)",
                images=lambda path, split, options: load_digits_dataset(split), splits=lambda path: ["train", "test"])
