"""A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (memory-mapped)."""

from __future__ import annotations

import json
import os

from ..arrow import from_hf_dataset
from ..errors import DatasetError
from ..images import ImageDataset
from ..segmentation import HFSegmentation
from ..source import ReadOptions, Source
from ..splits import choose_split


def _is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def _load_split(path: str, split: str):
    """(the `datasets.Dataset` of `split`, its name)."""
    import datasets  # optional heavy dependency: only datasets sources need it

    data = datasets.load_from_disk(path)
    if isinstance(data, datasets.DatasetDict):
        return choose_split(dict(data), split, path), f"{path}:{split}"
    if split not in ("train", data.split and str(data.split)):
        raise DatasetError(f"{path}: a single Dataset (no splits) was saved here, its one split is 'train'; got {split!r}")
    return data, path


def load_saved_dataset(path: str, split: str, options: ReadOptions = ReadOptions()) -> ImageDataset:
    data, name = _load_split(path, split)
    return from_hf_dataset(data, name=name, image_column=options.image_column, label_column=options.label_column,
                           on_bad_image=options.on_bad_image)


def load_saved_segmentation(path: str, split: str, options: ReadOptions = ReadOptions()) -> HFSegmentation:
    data, _ = _load_split(path, split)
    return HFSegmentation(data, name=f"{path}:{split}", image_column=options.image_column, label_column=options.label_column,
                          reduce_labels=options.reduce_labels)


def saved_splits(path: str) -> list[str]:
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json")) as handle:
            return list(json.load(handle)["splits"])
    return ["train"]


SOURCE = Source("saved", lambda spec: os.path.isdir(spec) and _is_saved_dataset(spec), "a save_to_disk folder",
                images=load_saved_dataset, segmentation=load_saved_segmentation, splits=saved_splits)
