"""A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (memory-mapped)."""

from __future__ import annotations

import json
import os

from ..arrow import from_hf_dataset
from ..errors import DatasetError
from ..images import ImageDataset
from ..segmentation import HFSegmentation
from ..source import ReadOptions, Source
from ..splits import canonical_split, choose_split


def _is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def _load_split(path: str, split: str):
    """(the `datasets.Dataset` of `split`, its name, every split or None)."""
    import datasets  # optional heavy dependency: only datasets sources need it

    _check_saved_rows(path, split)
    try:
        data = datasets.load_from_disk(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise DatasetError(f"{path}: not a readable save_to_disk dataset ({type(error).__name__}: {str(error)[:200]})") from None
    if isinstance(data, datasets.DatasetDict):
        return choose_split(dict(data), split, path), f"{path}:{split}", list(data.values())
    if split not in ("train", data.split and str(data.split)):
        raise DatasetError(f"{path}: a single Dataset (no splits) was saved here, its one split is 'train'; got {split!r}")
    return data, path, None


def _check_saved_rows(path: str, split: str) -> None:
    """Refuse a saved dataset (or the split asked for) that holds no rows, naming it (datasets
    itself fails on one with an IndexError)."""
    folder = path
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json")) as handle:
                names = json.load(handle).get("splits", [])
        except (OSError, ValueError, AttributeError):
            return
        chosen = split if split in names else canonical_split(split) if canonical_split(split) in names else None
        if chosen is None:
            return  # choose_split names the splits found
        folder = os.path.join(path, chosen)
    try:
        with open(os.path.join(folder, "state.json")) as handle:
            files = json.load(handle).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return
    if files == []:
        raise DatasetError(f"{folder}: the saved dataset{'' if folder == path else ' split'} has no rows")


def load_saved_dataset(path: str, split: str, options: ReadOptions = ReadOptions()) -> ImageDataset:
    data, name, every = _load_split(path, split)
    return from_hf_dataset(data, name=name, image_column=options.image_column, label_column=options.label_column,
                           on_bad_image=options.on_bad_image, splits=every)


def load_saved_segmentation(path: str, split: str, options: ReadOptions = ReadOptions()) -> HFSegmentation:
    data, _, _ = _load_split(path, split)
    return HFSegmentation(data, name=f"{path}:{split}", image_column=options.image_column, label_column=options.label_column,
                          reduce_labels=options.reduce_labels)


def saved_splits(path: str) -> list[str]:
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        with open(os.path.join(path, "dataset_dict.json")) as handle:
            return list(json.load(handle)["splits"])
    return ["train"]


SOURCE = Source("saved", lambda spec: os.path.isdir(spec) and _is_saved_dataset(spec), "a save_to_disk folder",
                images=load_saved_dataset, segmentation=load_saved_segmentation, splits=saved_splits)
