"""Column choice, written once: which column of a `datasets` table holds the image and which
the label (auto-detected or checked), and label values as class ids.

`datasets` is imported inside the functions: it is an optional heavy dependency that only the
readers of `datasets` sources (save_to_disk, parquet, arrow, Hub) need."""

from __future__ import annotations

import numpy as np

from .errors import DatasetError
from .labels import label_space


def find_columns(features, image_column, label_column, name: str):
    """(image column, label column or None) of a datasets `Features`, auto-detected or checked."""
    import datasets  # optional heavy dependency (see the module docstring)

    columns = list(features)
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            image_column = next((c for c in ("image", "img", "jpg", "png", "pixel_values") if c in features), None)
    if image_column is None or image_column not in features:
        raise DatasetError(f"{name}: no image column {'' if image_column is None else repr(image_column) + ' '}"
                           f"(columns: {columns}); pass --image-column")
    if label_column is None:
        label_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if label_column is None:
            label_column = next((c for c in ("label", "labels", "fine_label", "cls") if c in features), None)
    elif label_column not in features:
        raise DatasetError(f"{name}: no column {label_column!r} (columns: {columns})")
    return image_column, label_column


def label_ids(values, feature=None):
    """(int64 ids, names or None) of one column's values alone (see `labels.label_space` for the
    space of a dataset's every split): ClassLabel ids as they are, other values numbered in sorted
    order, missing values -1."""
    import pyarrow as pa  # (as datasets: only its sources need it)

    column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(np.asarray(values).tolist()))
    space = label_space([column], feature)
    return space.ids(column)[0], space.names


def find_label_map_columns(columns: list[str], image_column: str | None, label_column: str | None, name: str) -> tuple[str, str]:
    """(image column, label-map column) of a segmentation table, auto-detected or checked."""
    image_column = image_column or next((c for c in ("image", "img", "pixel_values") if c in columns), None)
    label_column = label_column or next((c for c in ("annotation", "label", "segmentation", "mask", "semantic_map") if c in columns), None)
    for what, column in (("image", image_column), ("label map", label_column)):
        if column is None or column not in columns:
            raise DatasetError(f"{name}: no {what} column (columns: {columns}); pass --image-column / --label-column")
    return image_column, label_column
