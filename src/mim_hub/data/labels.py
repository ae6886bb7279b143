"""One label space per dataset: the class ids of every split agree.

A `ClassLabel` column carries its space (its names; ids as stored). Any other label column (ints,
strings, floats holding whole numbers) is numbered once over the values of every split of the
dataset, in sorted order (numbers by value, strings as text), so that "cat" or 7 is the same id in
the training and the test split even when one split lacks a class. Names of whole numbers stay
whole ("7", not "7.0"). A missing label (null, or NaN in a float column) is never a class: its id
is -1 (unlabelled), and `LabelSpace.missing` counts them (a dataset with missing labels is
refused by fine-tuning and evaluation, which name the count; pre-training does not read labels).
Columns whose splits hold different kinds of values (ints in one, strings in another), or values
that are neither numbers nor strings (lists, dicts), are an error naming the column.

`check_label_range(labels, num_classes, what)` refuses ids outside [0, num_classes) before a run
starts (a label beyond the classes would otherwise crash mid-epoch, or train a wrong head).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("mim_hub.data")


class LabelError(ValueError):
    """Labels that cannot be used as classes; the message names the column and the values."""


@dataclass
class LabelSpace:
    names: list[str]
    values: list  # the sorted distinct values, one per class (empty for ClassLabel)
    kind: str  # "classlabel", "int", "float", "string"

    def ids(self, column) -> tuple[np.ndarray, int]:
        """(int64 ids, missing count) of an Arrow array or chunked array of this column's values."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if self.kind == "classlabel":
            ids = np.asarray(column.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
            return ids, int((ids < 0).sum())
        column = _normalised(column, self.kind)
        lookup = pa.array(self.values, type=column.type)
        ids = pc.index_in(column, value_set=lookup).fill_null(-1)
        ids = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=np.int64)
        return ids, int((ids < 0).sum())


def _kind(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _normalised(column, kind: str):
    """Ints as int64, floats as float64 with NaN as null, strings as large strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "int":
        return column.cast(pa.int64())
    if kind == "float":
        column = column.cast(pa.float64())
        return pc.if_else(pc.is_nan(column), pa.scalar(None, pa.float64()), column)
    if kind == "string":
        return column.cast(pa.large_string())
    return column


def label_space(columns, feature=None, what: str = "labels") -> LabelSpace:
    """The label space of a column over every split: `columns` are its Arrow arrays (one per split
    or file), `feature` its datasets feature (a `ClassLabel` gives the space as it is)."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(feature, datasets.ClassLabel):
        return LabelSpace(list(feature.names), [], "classlabel")
    kinds = {_kind(c.type) for c in columns} - {"null"}
    if not kinds:
        return LabelSpace([], [], "int")
    if kinds - {"int", "float", "string"}:
        raise LabelError(f"{what}: label values of type {sorted(kinds - {'int', 'float', 'string'})[0]} are not classes "
                         "(a label is an integer or a string); pass --label-column to pick another column")
    if "string" in kinds and len(kinds) > 1:
        raise LabelError(f"{what}: the splits' labels mix numbers and strings ({sorted(kinds)}); give every split one kind")
    kind = "string" if "string" in kinds else "float" if "float" in kinds else "int"
    distinct = set()
    for column in columns:
        if _kind(column.type) == "null":
            continue
        column = _normalised(column, kind)
        distinct.update(v for v in pc.unique(column.drop_null() if hasattr(column, "drop_null") else column).to_pylist()
                        if v is not None)
    values = sorted(distinct)
    if kind == "float" and all(float(v).is_integer() for v in values):  # whole numbers in a float column (a null made it float)
        names = [str(int(v)) for v in values]
    else:
        names = [str(v) for v in values]
    return LabelSpace(names, values, kind)


def check_label_range(labels, num_classes: int, what: str) -> None:
    """Refuse class ids outside [0, num_classes), naming how many and the first."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        missing = int((labels < 0).sum())
        beyond = int((labels >= num_classes).sum())
        parts = ([f"{missing} without a label"] if missing else []) + (
            [f"{beyond} with a class id >= {num_classes} (the number of classes)"] if beyond else [])
        raise LabelError(f"{what}: {' and '.join(parts)} of {len(labels)} items (the first is item {first}, label "
                         f"{int(labels[first])}); every item needs a label in [0, {num_classes})")


def check_labelled(train, evaluation=None, purpose: str = "training") -> int:
    """Before a run that reads labels: every item of `train` (and `evaluation`, both
    `ImageDataset`s) has a class id in [0, number of classes); the number is the datasets' class
    names when they have them, else the training split's largest id + 1. Returns that number."""
    for images in (train, evaluation):
        if images is not None and (len(images.labels) == 0 or bool((np.asarray(images.labels) < 0).all())):
            raise LabelError(f"{images.name} has no labels: {purpose} needs a labelled dataset; pass --label-column if the "
                             "labels are in another column")
    names = train.label_names or (evaluation.label_names if evaluation is not None else None)
    num_classes = len(names) if names else int(np.max(train.labels)) + 1
    for images, split in ((train, "training split"), (evaluation, "evaluation split")):
        if images is not None:
            check_label_range(images.labels, num_classes, f"the {split} of {images.name} ({purpose})")
    return num_classes
