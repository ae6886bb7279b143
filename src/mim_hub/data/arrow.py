"""The indexed reader of `datasets` tables (save_to_disk folders, parquet and arrow files, Hub
datasets): rows memory-mapped, the image column read undecoded and decoded per item."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .columns import find_columns
from .errors import DatasetError
from .images import ImageDataset, open_image_value
from .labels import LabelError, label_space

logger = logging.getLogger("mim_hub.data")


class ArrowImages(ImageDataset):
    """Rows of a `datasets.Dataset` (memory-mapped Arrow), the image column read undecoded and
    decoded per item."""

    def __init__(self, data, image_column: str, labels, label_names, name: str, on_bad_image: str = "skip"):
        import datasets

        data = data.select_columns([image_column])
        if isinstance(data.features[image_column], datasets.Image):
            data = data.cast_column(image_column, datasets.Image(decode=False))
        self.data, self.image_column = data, image_column
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        """The row's image opened straight from the Arrow buffer (memory-mapped: no copy of a large
        cell into Python bytes); other kinds of values through `open_image_value`."""
        import pyarrow as pa

        rows = self.__dict__.get("_arrow_rows")
        if rows is None:
            rows = self._arrow_rows = self.data.with_format("arrow")
        cell = rows[int(index)].column(0)[0]
        payload = cell.get("bytes") if isinstance(cell, pa.StructScalar) and "bytes" in cell.type.names else cell
        if isinstance(payload, (pa.BinaryScalar, pa.LargeBinaryScalar)) and payload.is_valid:
            return Image.open(pa.BufferReader(payload.as_buffer()))
        return open_image_value(cell.as_py())

    def describe(self, index):
        value = self.data[int(index)][self.image_column]
        path = value.get("path") if isinstance(value, dict) else None
        return f"{self.name} row {index}" + (f" ({path})" if path else "")


def from_hf_dataset(data, *, image_column: str | None = None, label_column: str | None = None, name: str = "dataset",
                    on_bad_image: str = "skip", splits=None) -> ImageDataset:
    """An `ImageDataset` over a `datasets.Dataset` with an image column (auto-detected): the label
    column is read whole (an int per row), images stay in the Arrow table until asked for.
    `splits`: every split of the dataset (`datasets.Dataset`s, or a function of the label column
    giving its Arrow arrays), over which the label space is computed (`labels.label_space`)."""
    if len(data) == 0:
        raise DatasetError(f"{name}: the dataset has no rows")
    image_column, label_column = find_columns(data.features, image_column, label_column, name)
    if label_column:
        column = data.select_columns([label_column]).with_format("arrow")[:].column(0)
        if callable(splits):
            every = splits(label_column)
        else:
            every = [s.select_columns([label_column]).with_format("arrow")[:].column(0) for s in (splits or [data])
                     if len(s) and label_column in s.column_names]
        try:
            space = label_space(every or [column], data.features[label_column], f"{name}: column {label_column!r}")
            labels, missing = space.ids(column)
        except LabelError as error:
            raise DatasetError(str(error)) from None
        names = space.names
        if missing:
            logger.warning("%s: %d of %d rows have no %r (null or NaN): they are unlabelled (-1), never a class", name, missing,
                           len(data), label_column)
    else:
        labels, names = np.full(len(data), -1, dtype=np.int64), None
    return ArrowImages(data, image_column, labels, names, name, on_bad_image)
