"""`--streaming`: iterate shards of samples (webdataset tars, parquet row groups, a Hub dataset's
shards) without downloading, converting or indexing them first. Each source kind gives its
`StreamSource` (in `sources/`); this module turns one into the training stream.

The stream is a function of the seed alone, and the same on every run:
- the shards are put in an order drawn from (seed, epoch), and dealt out to the *slots*, one slot
  per (rank, DataLoader worker): slot `rank * workers + worker` reads shards `slot, slot + slots,
  ...`. With fewer shards than slots every slot reads all of them and keeps every `slots`-th
  sample. Either way each sample is seen by exactly one rank and worker per epoch;
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

import numpy as np
import torch

from .bad_images import bad_image
from .errors import IMAGE_ERRORS, DatasetError
from .decode import decodes, prepared
from .images import open_image_value, to_rgb

logger = logging.getLogger(__name__)
POSITION_KEY = "stream_position"
KEYS_KEY = "stream_keys"  # where each sample of a batch came from (shard and key, file and row)


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
        return prepared(open_image_value(payload))


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
