"""The indexed reader of `datasets` tables (save_to_disk folders, parquet and arrow files, Hub
datasets): rows memory-mapped, the image column read undecoded and decoded per item."""

from __future__ import annotations

import numpy as np

from .columns import find_columns, label_ids
from .errors import DatasetError
from .images import ImageDataset, open_image_value


class ArrowImages(ImageDataset):
    """Rows of a `datasets.Dataset` (memory-mapped Arrow), the image column read undecoded and
    decoded per item."""

    def __init__(self, data, image_column: str, labels, label_names, name: str, on_bad_image: str = "skip"):
        import datasets  # optional heavy dependency: only datasets sources need it

        data = data.select_columns([image_column])
        if isinstance(data.features[image_column], datasets.Image):
            data = data.cast_column(image_column, datasets.Image(decode=False))
        self.data, self.image_column = data, image_column
        super().__init__(labels, label_names, name, on_bad_image)

    def _open(self, index):
        return open_image_value(self.data[int(index)][self.image_column])

    def describe(self, index):
        value = self.data[int(index)][self.image_column]
        path = value.get("path") if isinstance(value, dict) else None
        return f"{self.name} row {index}" + (f" ({path})" if path else "")


def from_hf_dataset(data, *, image_column: str | None = None, label_column: str | None = None, name: str = "dataset",
                    on_bad_image: str = "skip") -> ImageDataset:
    """An `ImageDataset` over a `datasets.Dataset` with an image column (auto-detected): the label
    column is read whole (an int per row), images stay in the Arrow table until asked for."""
    image_column, label_column = find_columns(data.features, image_column, label_column, name)
    if label_column:
        values = data.select_columns([label_column]).with_format("arrow")[:].column(0).to_numpy(zero_copy_only=False)
        labels, names = label_ids(values, data.features[label_column])
    else:
        labels, names = np.full(len(data), -1, dtype=np.int64), None
    if len(data) == 0:
        raise DatasetError(f"{name}: the dataset has no rows")
    return ArrowImages(data, image_column, labels, names, name, on_bad_image)
