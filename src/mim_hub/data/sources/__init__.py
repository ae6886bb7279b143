"""The table of source kinds that `--dataset` resolves, and the readers by spec.

Each row is one file of this folder (its `SOURCE`); the first row whose `matches(spec)` is true
reads the spec. Adding a source kind means adding one file with its `SOURCE` and one row here.
The order matters only where specs could overlap: the Hub row, which takes any name no other row
claims, comes last.
"""

from __future__ import annotations

import os

from ..errors import DatasetError
from ..images import ImageDataset
from ..segmentation import SegmentationDataset
from ..source import ReadOptions, Source
from ..stream import StreamSource
from . import digits, digits_seg, hub, imagefolder, saved, segfolder, table, webdataset

SOURCES: tuple[Source, ...] = (
    digits.SOURCE,
    digits_seg.SOURCE,
    imagefolder.SOURCE,
    segfolder.SOURCE,
    webdataset.SOURCE,
    saved.SOURCE,
    table.SOURCE,
    hub.SOURCE,
)


def resolve(spec: str) -> Source:
    """The row of the table that reads `spec`."""
    for source in SOURCES:
        if source.matches(spec):
            return source
    if os.path.isdir(spec):
        raise DatasetError(f"{spec!r} is a folder but neither a save_to_disk dataset nor parquet/arrow files; for a folder of "
                           f"images use --dataset imagefolder:{spec}, for tar shards webdataset:{spec}, for images with label "
                           f"PNGs segfolder:{spec}")
    raise DatasetError(f"{spec!r} is no known kind of dataset; give one of: " + ", ".join(s.help for s in SOURCES))


def describe_source(spec: str) -> str:
    """What kind of source `spec` names: digits, imagefolder, saved, table, webdataset, hub, ..."""
    return resolve(spec).kind


def _reader(spec: str, what: str, purpose: str):
    source = resolve(spec)
    reader = getattr(source, what)
    if reader is None:
        offered = [f"--dataset {s.kind}" for s in SOURCES if getattr(s, what) is not None]
        raise DatasetError(f"{spec!r} is a {source.kind} source, which cannot be read {purpose}; the sources that can: "
                           + ", ".join(offered))
    return source, reader


def load_images(spec: str, *, split: str = "train", config: str | None = None, image_column: str | None = None,
                label_column: str | None = None, on_bad_image: str = "skip") -> ImageDataset:
    """The indexed `ImageDataset` of a `--dataset` spec."""
    source, reader = _reader(spec, "images", "as images with class labels")
    options = ReadOptions(config=config, image_column=image_column, label_column=label_column, on_bad_image=on_bad_image)
    return reader(source.path(spec), split, options)


def open_stream(spec: str, *, split: str = "train", config=None, image_column=None, label_column=None) -> StreamSource:
    """The `StreamSource` of a `--dataset` spec (Hub names, parquet files, webdataset shards)."""
    source = resolve(spec)
    if source.stream is None:
        raise DatasetError(f"--streaming reads Hub datasets, parquet files and webdataset shards; {spec!r} is {source.kind} "
                           "(read it without --streaming: it is indexed and decoded per item already)")
    return source.stream(source.path(spec), split, ReadOptions(config=config, image_column=image_column, label_column=label_column))


def load_segmentation(spec: str, *, split: str = "train", image_column: str | None = None, label_column: str | None = None,
                      reduce_labels: bool = False, seed: int = 0, config: str | None = None) -> SegmentationDataset:
    """The `SegmentationDataset` of a `--dataset` spec: `digits-seg`, `segfolder:PATH`, a `save_to_disk`
    folder, or a Hub dataset name."""
    source, reader = _reader(spec, "segmentation", "as images with label maps")
    options = ReadOptions(config=config, image_column=image_column, label_column=label_column, reduce_labels=reduce_labels, seed=seed)
    return reader(source.path(spec), split, options)


def available_splits(spec: str) -> list[str] | None:
    """The splits a source has, where that is cheap to tell (None: unknown, e.g. a Hub name)."""
    source = resolve(spec)
    return source.splits(source.path(spec))


__all__ = ["SOURCES", "resolve", "describe_source", "load_images", "open_stream", "load_segmentation", "available_splits"]
