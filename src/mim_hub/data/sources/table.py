"""A folder or glob of parquet or arrow files (files named after a split, e.g. `train-*.parquet`,
`test-0.arrow`, form that split): indexed (arrow memory-mapped, parquet converted once into
datasets' cache), or streamed row group by row group (`--streaming`, parquet only)."""

from __future__ import annotations

import glob as globlib
import os

from ..arrow import from_hf_dataset
from ..columns import find_columns
from ..errors import DatasetError
from ..images import ImageDataset
from ..source import ReadOptions, Source
from ..splits import choose_split, group_files_by_split
from ..stream import StreamSource


def table_files(spec: str) -> list[str]:
    """Parquet/arrow files of a folder (recursively) or glob, sorted."""
    if os.path.isdir(spec):
        found = [os.path.join(root, f) for root, _, files in os.walk(spec) for f in files if f.endswith((".parquet", ".arrow"))]
    else:
        found = [f for f in globlib.glob(spec, recursive=True) if f.endswith((".parquet", ".arrow"))]
    return sorted(found)


def load_table_files(spec: str, split: str, options: ReadOptions = ReadOptions()) -> ImageDataset:
    """Arrow files are memory-mapped as they are; parquet files are converted once into datasets'
    cache (Arrow), the one-off cost of random access to parquet."""
    import datasets  # optional heavy dependency: only datasets sources need it

    files = choose_split(group_files_by_split(_files(spec), spec), split, spec)
    kinds = {os.path.splitext(f)[1] for f in files}
    if kinds == {".arrow"}:
        data = datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
    elif kinds == {".parquet"}:
        data = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    else:
        raise DatasetError(f"{spec}: mixes parquet and arrow files; give one kind")
    return from_hf_dataset(data, name=spec + (f":{split}" if split != "train" else ""), image_column=options.image_column,
                           label_column=options.label_column, on_bad_image=options.on_bad_image)


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

        files = [f for f in choose_split(group_files_by_split(_files(spec), spec), split, spec) if f.endswith(".parquet")]
        if not files:
            raise DatasetError(f"{spec}: --streaming reads parquet files; none found (arrow files are memory-mapped without it)")
        first = pq.ParquetFile(files[0])
        features = datasets.Features.from_arrow_schema(first.schema_arrow)
        self.image_column, self.label_column = find_columns(features, image_column, label_column, spec)
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
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
        # a few hundred rows at a time: memory is bounded by that, not by the row group's size
        for batch in pq.ParquetFile(file).iter_batches(batch_size=256, row_groups=[group], columns=columns):
            images = batch.column(self.image_column).to_pylist()
            labels = batch.column(self.label_column).to_pylist() if self.label_column else [-1] * len(images)
            for image, label in zip(images, labels):
                yield f"{os.path.basename(file)} row group {group} row {row}", image, int(label) if label is not None else -1
                row += 1

    def count(self, shard) -> int:
        return shard[2]


def _matches(spec: str) -> bool:
    if os.path.isdir(spec):
        return bool(table_files(spec))
    return any(c in spec for c in "*?[") or spec.endswith((".parquet", ".arrow"))


SOURCE = Source("table", _matches, "a folder or glob of parquet/arrow files", images=load_table_files,
                stream=lambda path, split, options: ParquetStream(path, split, options.image_column, options.label_column),
                splits=lambda path: sorted(group_files_by_split(_files(path), path)))
