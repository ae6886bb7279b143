"""`--streaming`: iterate webdataset shards, parquet files or a Hub dataset without downloading,
converting or indexing them first.

The stream is a function of the seed alone, and the same on every run:
- the shards (tar files, parquet row groups, a Hub dataset's shards) are put in an order drawn
  from (seed, epoch), and dealt out to the *slots*, one slot per (rank, DataLoader worker):
  slot `rank * workers + worker` reads shards `slot, slot + slots, ...`. With fewer shards than
  slots every slot reads all of them and keeps every `slots`-th sample. Either way each sample is
  seen by exactly one rank and worker per epoch;
- each slot shuffles its samples with a buffer (`shuffle_buffer` samples) whose draws come from
  (seed, epoch, slot), and draws each sample's augmentation from (seed, epoch, slot, position);
- a slot's stream is endless: when its shards of epoch e are done, it starts on its shards of
  epoch e + 1 (a new order), so every rank always has a next batch and ranks never wait for one
  another.

Exact resume: every batch carries (slot, samples of that slot's stream consumed), the trainer
keeps the latest of each slot and saves it with the checkpoint; a resumed slot skips that many
samples of its stream (whole epochs by their sample counts, the rest by reading them through the
shuffle buffer without decoding) and continues with exactly the next sample. This needs the same
number of processes, workers and batch size as the interrupted run.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from .data import (IMAGE_ERRORS, DatasetError, WDS_IMAGE_KEYS, bad_image, canonical_split, choose_split, group_files_by_split, read_manifest,
                   table_files, webdataset_shards)

logger = logging.getLogger(__name__)
POSITION_KEY = "stream_position"
KEYS_KEY = "stream_keys"
PARQUET_BATCH_BYTES = 64 << 20  # a parquet stream's read batch, at most (its rows' uncompressed bytes)  # where each sample of a batch came from (shard and key, file and row)


class StreamSource:
    """Shards of raw samples. Subclasses give `shards`, `records(shard)` -> (description, image
    payload, label) and `count(shard)` (samples in a shard, for skipping on resume); `total` is
    the number of samples when it is known without reading the data (else None)."""

    name = "stream"
    label_names: list[str] | None = None
    total: int | None = None
    shards: list = []

    def records(self, shard):
        raise NotImplementedError

    def count(self, shard) -> int:
        return sum(1 for _ in self.records(shard))

    def world(self) -> dict:
        """What a resumed run must find again: the shards (names, sizes) and their counts."""
        return {"name": self.name, "shards": len(self.shards), "total": self.total}

    def open(self, payload):
        """The image of a record's payload, opened and prepared (`decode.prepared`)."""
        from .data import open_image_value
        from .decode import prepared

        return prepared(open_image_value(payload))


class WebDatasetStream(StreamSource):
    """Tar shards read member by member (sample counts from the manifest when there is one)."""

    def __init__(self, spec: str, split: str, image_key=None, label_key=None):
        shards = webdataset_shards(spec)
        if not shards:
            raise DatasetError(f"webdataset:{spec}: no .tar shards found")
        self.shards = choose_split(group_files_by_split(shards, f"webdataset:{spec}"), split, f"webdataset:{spec}")
        self.name, self.image_key, self.label_key = f"webdataset:{spec}", image_key, label_key
        manifest = read_manifest(spec)
        self.label_names = manifest.get("classes")
        info = manifest.get("splits", {}).get(canonical_split(split))
        self._counts = dict(zip(info["shards"], info["shard_samples"])) if info else {}
        if info and all(os.path.basename(s) in self._counts for s in self.shards):
            self.total = sum(self._counts[os.path.basename(s)] for s in self.shards)

    def records(self, shard):
        from .shards import iter_samples

        read = 0
        for key, _, _, _, label, data in iter_samples(shard, image_key=self.image_key, label_key=self.label_key, read_images=True):
            read += 1
            yield f"{shard}:{key}", data, label
        known = self._counts.get(os.path.basename(shard))
        if known is not None and known != read:  # the counts a resume skips by must be true
            raise DatasetError(_count_error(shard, known, read))

    def count(self, shard) -> int:
        """Samples in `shard` (what a resumed stream skips by): the manifest's count, checked once
        against the shard (its verified receipt, else its headers)."""
        from .receipts import verified_index
        from .shards import iter_samples

        cache = self.__dict__.setdefault("_checked", {})
        if shard not in cache:
            receipt = verified_index(shard) if self.image_key in (None, "jpg") else None
            cache[shard] = len(receipt["offsets"]) if receipt is not None else sum(
                1 for _ in iter_samples(shard, image_key=self.image_key, label_key=self.label_key))
            known = self._counts.get(os.path.basename(shard))
            if known is not None and known != cache[shard]:
                raise DatasetError(_count_error(shard, known, cache[shard]))
        return cache[shard]

    def world(self) -> dict:
        return {"shards": [[os.path.basename(s), os.stat(s).st_size, os.stat(s).st_mtime_ns] for s in self.shards],
                "counts": [self._counts.get(os.path.basename(s)) for s in self.shards]}


def _count_error(shard: str, known: int, actual: int) -> str:
    return (f"{shard}: manifest.json says {known} samples, the shard holds {actual}; the manifest does not describe these "
            "shards (write them again with prepare-shards, or remove manifest.json to count them from the shards)")


class ParquetStream(StreamSource):
    """Row groups of parquet files, read one at a time with pyarrow (image and label columns only)."""

    def __init__(self, spec: str, split: str, image_column=None, label_column=None):
        import datasets
        import pyarrow.parquet as pq

        from .data import find_columns

        groups = group_files_by_split(table_files(spec), spec)
        files = [f for f in choose_split(groups, split, spec) if f.endswith(".parquet")]
        if not files:
            raise DatasetError(f"{spec}: --streaming reads parquet files; none found (arrow files are memory-mapped without it)")
        first = pq.ParquetFile(files[0])
        features = datasets.Features.from_arrow_schema(first.schema_arrow)
        self.image_column, self.label_column = find_columns(features, image_column, label_column, spec)
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        self.space = None  # the label space over every split's files (training/labels.py): string labels become ids
        if self.label_column:
            from .data import table_column
            from .labels import LabelError, label_space

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
        import pyarrow.parquet as pq

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


class HubStream(StreamSource):
    """A Hub dataset through datasets' streaming mode, its shards dealt out as ours."""

    def __init__(self, name: str, config, split: str, image_column=None, label_column=None):
        import datasets

        from .data import _hub_error, find_columns

        try:
            data = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as error:
            raise DatasetError(_hub_error(name, config, split, error)) from None
        features = data.features
        if features is None:
            raise DatasetError(f"{name}: its features are unknown without reading it; pass --image-column and --label-column")
        self.image_column, self.label_column = find_columns(features, image_column, label_column, name)
        if isinstance(features[self.image_column], datasets.Image):
            data = data.cast_column(self.image_column, datasets.Image(decode=False))
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        if feature is not None and not (isinstance(feature, datasets.ClassLabel) or
                                        (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")))):
            # a label space over a streamed Hub dataset's every split would read them all: its labels are not read
            # (streams feed pre-training, which does not use them)
            logger.info("%s: the label column %r holds %s values, not class ids: the stream carries no labels", name,
                        self.label_column, feature)
            self.label_column = None
        self.data, self.name = data, name
        self.shards = list(range(data.num_shards))
        splits = getattr(data.info, "splits", None) or {}
        self.total = splits[split].num_examples if split in splits and splits[split].num_examples else None

    def records(self, shard):
        for row, item in enumerate(self.data.shard(len(self.shards), shard, contiguous=True)):
            label = item.get(self.label_column, -1) if self.label_column else -1
            yield f"{self.name} shard {shard} row {row}", item[self.image_column], -1 if label is None else int(label)


def open_stream(spec: str, *, split: str = "train", config=None, image_column=None, label_column=None) -> StreamSource:
    """The `StreamSource` of a `--dataset` spec (Hub names, parquet files, webdataset shards)."""
    from .data import describe_source

    kind = describe_source(spec)
    if kind == "webdataset":
        return WebDatasetStream(spec[len("webdataset:"):] if spec.startswith("webdataset:") else spec, split, image_column, label_column)
    if kind == "table":
        return ParquetStream(spec, split, image_column, label_column)
    if kind == "hub":
        return HubStream(spec, config, split, image_column, label_column)
    raise DatasetError(f"--streaming reads Hub datasets, parquet files and webdataset shards; {spec!r} is {kind} "
                       "(read it without --streaming: it is indexed and decoded per item already)")


class ShardedStream(torch.utils.data.IterableDataset):
    """The endless, deterministic sample stream of one rank (see the module docstring).
    `sample_fn(image, rng, label)` turns an opened image into a training sample (a dict)."""

    def __init__(self, source: StreamSource, sample_fn, *, seed: int, shuffle_buffer: int = 10_000, rank: int = 0,
                 world_size: int = 1, on_bad_image: str = "skip", bad_image_log: str | None = None):
        self.source, self.sample_fn, self.seed, self.buffer = source, sample_fn, seed, max(1, shuffle_buffer)
        self.rank, self.world_size, self.on_bad_image, self.bad_image_log = rank, world_size, on_bad_image, bad_image_log
        self.start: dict[int, int] = {}  # slot -> samples of its stream already consumed (resume)
        self.rotation = 0  # DataLoader worker w plays slot (w + rotation) % workers (resume)
        self.skipped: list[str] = []

    def resume(self, positions: dict, batches: int) -> None:
        """Continue after `batches` batches of this rank, the slots at `positions`. The DataLoader
        takes batches from its workers in turn starting at worker 0, so the worker that serves
        the next batch plays the slot whose turn it was."""
        self.start = {int(k): int(v) for k, v in positions.items()}
        self.rotation = batches

    # the plan of one epoch of one slot
    def _my_shards(self, epoch: int, slot: int, slots: int):
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.source.shards))
        shards = [self.source.shards[i] for i in order]
        return (shards[slot::slots], None) if len(shards) >= slots else (shards, slot)

    def epoch_records(self, epoch: int, slot: int, slots: int):
        """The raw records of slot `slot` in epoch `epoch`, in shuffled order."""
        shards, keep = self._my_shards(epoch, slot, slots)

        def raw():
            index = 0
            for shard in shards:
                for record in self.source.records(shard):
                    if keep is None or index % slots == keep:
                        yield record
                    index += 1

        rng = np.random.default_rng([self.seed, epoch, slot, 1])
        buffer = []
        for record in raw():
            if len(buffer) < self.buffer:
                buffer.append(record)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], record = record, buffer[i]
            yield record
        rng.shuffle(buffer)
        yield from buffer

    def epoch_size(self, epoch: int, slot: int, slots: int) -> int:
        shards, keep = self._my_shards(epoch, slot, slots)
        if keep is None:
            return sum(self.source.count(s) for s in shards)
        total = sum(self.source.count(s) for s in shards)
        return len(range(keep, total, slots))

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        slot, slots = self.rank * workers + (worker + self.rotation) % workers, self.world_size * workers
        consumed, epoch, before = self.start.get(slot, 0), 0, 0
        while consumed:  # whole epochs already consumed, skipped by their sizes
            size = self.epoch_size(epoch, slot, slots)
            if size == 0 or consumed < size:
                break
            consumed, before, epoch = consumed - size, before + size, epoch + 1
        while True:
            position = -1
            for position, (where, payload, label) in enumerate(self.epoch_records(epoch, slot, slots)):
                if position < consumed:  # read through the buffer, not decoded
                    continue
                rng = np.random.default_rng([self.seed, epoch, slot, position])
                try:
                    image = self.source.open(payload)
                except IMAGE_ERRORS as error:  # it does not open: the data's
                    self._bad(where, error)
                    continue
                try:
                    sample = self.sample_fn(image, rng, label)
                except DatasetError:
                    raise
                except IMAGE_ERRORS as error:  # the data's only if the image does not decode (else a transform's: raised)
                    from .decode import decodes

                    if decodes(lambda: self.source.open(payload)):
                        raise
                    self._bad(where, error)
                    continue
                sample[POSITION_KEY] = torch.tensor([slot, before + position + 1])
                sample[KEYS_KEY] = where
                yield sample
            if position < 0:
                raise DatasetError(f"{self.source.name}: slot {slot} of {slots} (rank x worker) got no samples in epoch {epoch}; "
                                   "use fewer --num-workers or processes, or more shards")
            before, consumed, epoch = before + position + 1, 0, epoch + 1

    def _bad(self, where: str, error: Exception) -> None:
        bad_image(where, error, self.on_bad_image, self.skipped, self.bad_image_log)


def stream_world(source: StreamSource) -> dict:
    """The stream's world, saved with a streamed run's checkpoints (see `world_differences`)."""
    return {"kind": type(source).__name__, **source.world()}


def world_differences(saved: dict | None, now: dict) -> list[str]:
    """How the world a checkpoint was written in differs from the one a resume finds: shards
    added, removed, resized or modified, counts changed (empty: the same world)."""
    if not saved:
        return []  # a checkpoint written before worlds were recorded: nothing to compare
    changes = []
    if saved.get("kind") != now.get("kind"):
        changes.append(f"source {saved.get('kind')} -> {now.get('kind')}")
    old, new = saved.get("shards"), now.get("shards")
    if isinstance(old, list) and isinstance(new, list):
        old_names = {str(s[0]): s for s in old}
        new_names = {str(s[0]): s for s in new}
        added, removed = sorted(set(new_names) - set(old_names)), sorted(set(old_names) - set(new_names))
        if added:
            changes.append(f"shards added: {', '.join(added[:3])}{' ...' if len(added) > 3 else ''}")
        if removed:
            changes.append(f"shards removed: {', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''}")
        resized = [n for n in sorted(set(old_names) & set(new_names)) if list(old_names[n]) != list(new_names[n])]
        if resized:
            changes.append("shards changed: " + ", ".join(f"{n} (size, rows or modification time {old_names[n][1:]} -> {new_names[n][1:]})"
                                                          for n in resized[:3]) + (" ..." if len(resized) > 3 else ""))
    elif old != new:
        changes.append(f"shards {old} -> {new}")
    for key in sorted((set(saved) | set(now)) - {"kind", "shards"}):
        if saved.get(key) != now.get(key):
            changes.append(f"{key} {saved.get(key)} -> {now.get(key)}")
    return changes


def collate_with_positions(collate):
    """`collate` that leaves the stream positions and sample keys out of the samples and puts the
    batch's last position (slot, consumed) and the list of its samples' keys beside the batch."""

    def wrapped(samples):
        positions = [s.pop(POSITION_KEY) for s in samples]
        keys = [s.pop(KEYS_KEY) for s in samples]
        batch = collate(samples)
        batch[POSITION_KEY], batch[KEYS_KEY] = positions[-1], keys
        return batch

    return wrapped


class StreamState:
    """The latest position of every slot of every rank (what a resumed stream skips)."""

    def __init__(self, start: dict | None = None, batches: int = 0):
        self.positions = {int(k): int(v) for k, v in (start or {}).items()}
        self.batches = batches  # batches this rank has taken

    def update(self, position: torch.Tensor) -> None:
        slot, consumed = (int(v) for v in position.tolist())
        self.positions[slot] = consumed
        self.batches += 1

    def gathered(self, accelerator, slots_per_rank: int) -> dict[str, int]:
        """Every rank's positions (a collective: every rank calls it)."""
        rank = accelerator.process_index
        mine = torch.tensor([self.positions.get(rank * slots_per_rank + w, 0) for w in range(slots_per_rank)], dtype=torch.long)
        every = accelerator.gather(mine.to(accelerator.device)).cpu().tolist()
        return {str(i): int(v) for i, v in enumerate(every) if v}


def stream_images_for_statistics(source: StreamSource, limit: int = 2000):
    """Up to `limit` decoded images from the first shards (the dataset normalisation)."""
    from .data import to_rgb

    images = []
    for shard in source.shards:
        for _, payload, _ in source.records(shard):
            try:
                images.append(to_rgb(source.open(payload)))
            except IMAGE_ERRORS:
                continue
            if len(images) >= limit:
                return images
    return images


