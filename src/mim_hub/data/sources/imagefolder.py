"""`imagefolder:PATH`: `PATH/<class>/<image>`, or with splits `PATH/{train,test,validation}/<class>/`
as datasets' imagefolder defines them (a flat folder of images has no labels)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..files import check_regular
from ..images import ImageDataset
from ..source import Source
from ..splits import SPLIT_KEYWORDS, canonical_split, choose_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class FileImages(ImageDataset):
    """Image files by path, decoded per item."""

    def __init__(self, files, labels, label_names, name, on_bad_image="skip"):
        self.files = np.asarray(files, dtype=object)
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        check_regular(self.files[index])  # a FIFO named x.png would block the open forever
        return Image.open(self.files[index])

    def describe(self, index):
        return str(self.files[index])


def _unreadable_folder(error: OSError):
    raise DatasetError(f"{error.filename}: cannot list this folder ({error.strerror or error}); its images would be left out "
                       "without a word: make it readable, or move it out of the dataset")


def _image_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, onerror=_unreadable_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found


def _subfolders(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))


def imagefolder_splits(path: str) -> dict[str, str]:
    """{split: folder}: `train/`, `test/`, `validation/` (and datasets' aliases) when present, else
    the folder itself is the one split 'train'."""
    folders = _subfolders(path)
    splits = {canonical_split(d): os.path.join(path, d) for d in folders if canonical_split(d) in SPLIT_KEYWORDS and d.lower() in
              sum(SPLIT_KEYWORDS.values(), ())}
    return splits or {"train": path}


def load_imagefolder(path: str, split: str = "train", on_bad_image: str = "skip") -> ImageDataset:
    """`PATH/<class>/<image>` (labels from folder names), `PATH/<split>/<class>/<image>`, or a flat
    folder of images (no labels). Files are listed, not opened: unreadable ones are met (skipped
    or raised) when an item is decoded. Class ids are the same in every split (all splits' class
    folders, sorted)."""
    spec = f"imagefolder:{path}"
    if not os.path.isdir(path):
        raise DatasetError(f"{spec}: no such folder")
    splits = imagefolder_splits(path)
    if split not in splits and canonical_split(split) not in splits and list(splits.values()) == [path]:
        raise DatasetError(f"{spec}: no split {split!r}; the folder has no train/, test/ or validation/ folders, "
                           "so its one split is 'train'")
    folder = choose_split(splits, split, spec)
    classes = sorted(set().union(*(_subfolders(f) for f in splits.values())))
    files, labels = [], []
    loose = [f for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    if classes and loose:  # class folders beside images: the images would have no class, and be left out
        raise DatasetError(f"{spec}: {folder} holds images ({', '.join(loose[:2])}{' ...' if len(loose) > 2 else ''}) beside "
                           f"subfolders ({', '.join(classes[:3])}{' ...' if len(classes) > 3 else ''}): either every image in a "
                           "class folder (labelled), or a flat folder of images with no subfolders (unlabelled)")
    if classes:
        for label, name in enumerate(classes):
            if os.path.isdir(os.path.join(folder, name)):
                found = _image_files(os.path.join(folder, name))
                files += found
                labels += [label] * len(found)
    else:
        files = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        labels = [-1] * len(files)
    if not files:
        raise DatasetError(f"{spec}: no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return FileImages(files, labels, classes or None, f"{spec}" + (f":{split}" if len(splits) > 1 else ""), on_bad_image)


SOURCE = Source("imagefolder", lambda spec: spec.startswith("imagefolder:"), "'imagefolder:PATH'", prefix="imagefolder:",
                images=lambda path, split, options: load_imagefolder(path, split, options.on_bad_image),
                splits=lambda path: sorted(imagefolder_splits(path)) if os.path.isdir(path) else None)
