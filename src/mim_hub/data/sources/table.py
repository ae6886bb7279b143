"""A folder or glob of parquet or arrow files (files named after a split, e.g. `train-*.parquet`,
`test-0.arrow`, form that split): indexed (arrow memory-mapped, parquet converted once into
datasets' cache), or streamed row group by row group (`--streaming`, parquet only)."""

from __future__ import annotations

import glob as globlib
import os

from ..arrow import from_hf_dataset
from ..columns import find_columns
from ..errors import DatasetError
from ..files import only_regular
from ..images import ImageDataset
from ..labels import LabelError, label_space
from ..source import ReadOptions, Source
from ..splits import choose_split, group_files_by_split
from ..stream import StreamSource

PARQUET_BATCH_BYTES = 64 << 20  # a parquet stream's read batch, at most (its rows' uncompressed bytes)


def table_files(spec: str) -> list[str]:
    """Parquet/arrow files of a folder (recursively) or glob, sorted."""
    if os.path.isdir(spec):
        found = [os.path.join(root, f) for root, _, files in os.walk(spec) for f in files if f.endswith((".parquet", ".arrow"))]
    else:
        found = [f for f in globlib.glob(spec, recursive=True) if f.endswith((".parquet", ".arrow"))]
    return only_regular(sorted(found), spec)


def load_table_files(spec: str, split: str, options: ReadOptions = ReadOptions()) -> ImageDataset:
    """Arrow files are memory-mapped as they are; parquet files are converted once into datasets'
    cache (Arrow), the one-off cost of random access to parquet."""
    import datasets  # optional heavy dependency: only datasets sources need it

    groups = group_files_by_split(_files(spec), spec)
    files = choose_split(groups, split, spec)
    kinds = {os.path.splitext(f)[1] for f in files}
    if kinds == {".arrow"}:
        data = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
        if len(data) == 0:
            raise DatasetError(f"{spec}: the arrow files of split {split!r} hold no rows ({', '.join(files[:3])})")
    elif kinds == {".parquet"}:
        import pyarrow.parquet as pq  # (as datasets)

        if sum(pq.read_metadata(f).num_rows for f in files) == 0:  # (datasets fails on it: 'corresponds to no data')
            raise DatasetError(f"{spec}: the parquet files of split {split!r} hold no rows ({', '.join(files[:3])})")
        data = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    else:
        raise DatasetError(f"{spec}: mixes parquet and arrow files; give one kind")
    every_file = [f for group in groups.values() for f in group]
    return from_hf_dataset(data, name=spec + (f":{split}" if split != "train" else ""), image_column=options.image_column,
                           label_column=options.label_column, on_bad_image=options.on_bad_image,
                           splits=lambda column: table_column(every_file, column))


def table_column(files: list[str], column: str) -> list:
    """The Arrow arrays of one column of parquet or arrow files (that column alone is read)."""
    import datasets  # optional heavy dependencies: only datasets sources need them
    import pyarrow.parquet as pq

    arrays = []
    for file in files:
        if file.endswith(".parquet"):
            if column in pq.read_schema(file).names:
                arrays.append(pq.read_table(file, columns=[column]).column(0))
        else:
            table = datasets.Dataset.from_file(file).data
            if column in table.column_names:
                arrays.append(table.column(column))
    return arrays


def _files(spec: str) -> list[str]:
    found = table_files(spec)
    if not found:
        raise DatasetError(f"{spec!r}: no parquet or arrow files match")
    return found


class ParquetStream(StreamSource):
    """Row groups of parquet files, read one at a time with pyarrow (image and label columns only)."""

    def __init__(self, spec: str, split: str, image_column=None, label_column=None):
        import datasets  # optional heavy dependencies: only datasets sources need them
        import pyarrow.parquet as pq

        groups = group_files_by_split(_files(spec), spec)
        files = [f for f in choose_split(groups, split, spec) if f.endswith(".parquet")]
        if not files:
            raise DatasetError(f"{spec}: --streaming reads parquet files; none found (arrow files are memory-mapped without it)")
        first = pq.ParquetFile(files[0])
        features = datasets.Features.from_arrow_schema(first.schema_arrow)
        self.image_column, self.label_column = find_columns(features, image_column, label_column, spec)
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        self.space = None  # the label space over every split's files (data/labels.py): string labels become ids
        if self.label_column:
            every = [f for group in groups.values() for f in group if f.endswith(".parquet")]
            try:
                self.space = label_space(table_column(every, self.label_column), feature, f"{spec}: column {self.label_column!r}")
            except LabelError as error:
                raise DatasetError(str(error)) from None
            self.label_names = self.space.names or self.label_names
        self.shards, self.total = [], 0
        for file in files:
            meta = pq.read_metadata(file)
            for group in range(meta.num_row_groups):
                self.shards.append((file, group, meta.row_group(group).num_rows))
                self.total += meta.row_group(group).num_rows
        self.name = spec

    def records(self, shard):
        import pyarrow.parquet as pq  # (see __init__)

        file, group, _ = shard
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        row = 0
        handle = pq.ParquetFile(file)
        # rows read a batch at a time, a batch of at most PARQUET_BATCH_BYTES (and 256 rows): memory is bounded by
        # that, not by the row group's size; each row's image becomes a Python value only when it is yielded
        info = handle.metadata.row_group(group)
        rows = max(1, min(256, PARQUET_BATCH_BYTES * max(1, info.num_rows) // max(1, info.total_byte_size)))
        for batch in handle.iter_batches(batch_size=rows, row_groups=[group], columns=columns):
            images = batch.column(self.image_column)
            labels = self.space.ids(batch.column(self.label_column))[0].tolist() if self.space else [-1] * len(images)
            for index, label in enumerate(labels):
                yield f"{os.path.basename(file)} row group {group} row {row}", images[index].as_py(), label
                row += 1

    def count(self, shard) -> int:
        return shard[2]

    def world(self) -> dict:
        return {"shards": [[f"{os.path.basename(file)} row group {group}", rows, os.stat(file).st_size, os.stat(file).st_mtime_ns]
                           for file, group, rows in self.shards]}




def _matches(spec: str) -> bool:
    if os.path.isdir(spec):
        return bool(table_files(spec))
    return any(c in spec for c in "*?[") or spec.endswith((".parquet", ".arrow"))


SOURCE = Source("table", _matches, "a folder or glob of parquet/arrow files", images=load_table_files,
                stream=lambda path, split, options: ParquetStream(path, split, options.image_column, options.label_column),
                splits=lambda path: sorted(group_files_by_split(_files(path), path)))
