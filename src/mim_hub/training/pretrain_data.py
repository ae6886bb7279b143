"""The data of a pre-training run: one loader object, `PretrainLoader`, whatever the source.

Indexed sources (`mim_hub.data.load_images`) are read through a fresh permutation each epoch
(`EpochPermutation`, a function of (seed, epoch)), sharded over processes by accelerate;
streamed ones (`--streaming`, `mim_hub.data.stream`) through each rank's own endless stream.
Either way every random draw of a sample (crop, flip, mask) comes from (seed, epoch, index) or
(seed, epoch, slot, position), so a resumed run continues exactly as the uninterrupted one. The
loop asks the loader for an epoch's batches (`epoch`), hands each batch back (`take`) and, when
it saves, the loader's position (`checkpoint_state`); a resume goes the other way (`resume`).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch

from ..data.stream import KEYS_KEY, POSITION_KEY, ShardedStream, StreamState, collate_with_positions, stream_world, world_differences
from ..utils import test_hooks
from .recipes import PretrainRecipe
from .transforms import RandomResizedCropFlip

logger = logging.getLogger("mim_hub.pretrain")


def normalizes_on_device(recipe, transform, device) -> bool:
    """Whether the workers hand over uint8 crops, normalised on the device (the same values, bit for
    bit; see `RandomResizedCropFlip(uint8=True)`): on a GPU, for the plain crop-and-flip
    augmentation and collation (a recipe with its own transform or collate keeps its float
    pixels: it may compute from them). Sets the transform so."""
    plain = type(transform) is RandomResizedCropFlip and type(recipe).collate is PretrainRecipe.collate
    wanted = plain and (device.type != "cpu" or test_hooks.normalize_on_cpu())
    if wanted:
        transform.uint8 = True
    return wanted


class EpochPermutation(torch.utils.data.Sampler):
    """A fresh permutation each epoch, a function of (seed, epoch) only. Yields (epoch, index)
    pairs, so that persistent workers know the epoch without being told."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order, epoch = torch.randperm(self.length, generator=generator).numpy(), self.epoch
        return ((epoch, int(i)) for i in order)  # not a list of N tuples (1.28M of them: ~100 MB)

    def __len__(self) -> int:
        return self.length


class PretrainData(torch.utils.data.Dataset):
    """Augmented images plus the recipe's per-sample inputs, drawn from (seed, epoch, index)."""

    def __init__(self, images, transform, recipe, config, seed: int):
        self.images, self.transform, self.recipe, self.config, self.seed, self.epoch = images, transform, recipe, config, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item) -> dict:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        views, rng = self.images.with_image(index, lambda image: self.augment(image, np.random.default_rng([self.seed, epoch, index]))
                                            )[0]  # an unreadable image: the next readable one, same draws
        return {**views, **self.recipe.sample_inputs(rng)}

    def augment(self, image, rng, label=None):
        if not getattr(self.transform, "accepts_lazy_images", False):
            image = image.convert("RGB") if image.mode != "RGB" else image
        views = self.transform(image, rng)  # an array, or named arrays (e.g. CAE's two views)
        views = {name: torch.from_numpy(v) for name, v in views.items()} if isinstance(views, dict) else {"pixel_values": torch.from_numpy(views)}
        return views, rng

    def stream_sample(self, image, rng, label=None) -> dict:
        """A sample of a streamed image (`streaming.ShardedStream`'s `sample_fn`)."""
        views, rng = self.augment(image, rng)
        return {**views, **self.recipe.sample_inputs(rng)}


def dataset_statistics(images, limit: int = 2000) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the training images in [0, 1] (an `ImageDataset`, or a list of
    PIL images)."""
    pick = (lambda i: images[i]) if isinstance(images, list) else images.image
    values = np.stack([np.asarray(pick(i).convert("RGB").resize((32, 32)), dtype=np.float64) / 255
                       for i in range(min(len(images), limit))])
    return tuple(values.mean((0, 1, 2)).round(4).tolist()), tuple(values.std((0, 1, 2)).round(4).tolist())


def check_stream_resume(saved: dict | None, now: dict, world: dict | None = None, *, dataset: str = "",
                        with_changes: bool = False) -> None:
    """A streamed run resumes exactly only with the stream it was interrupted in: the same stream
    settings, and (`world`) the same shards and counts, unless `with_changes` (then a warning)."""
    if saved is None:
        raise ValueError("--resume --streaming: the checkpoint was written by a run without --streaming")
    changed = {k: (saved[k], v) for k, v in now.items() if saved.get(k) != v}
    if changed:
        raise ValueError("--resume --streaming needs the interrupted run's stream settings; changed: "
                         + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    differences = world_differences(saved.get("world"), world) if world is not None else []
    if differences and with_changes:
        logger.warning("--resume-with-changes: the stream's data changed since the checkpoint (%s): the resumed stream is "
                       "not the interrupted one's (some samples are seen twice, others never)", "; ".join(differences))
    elif differences:
        raise ValueError(f"--resume --streaming: {dataset} is not the data the interrupted run streamed; "
                         + "; ".join(differences) + " (resuming would see some samples twice and others never; "
                         "--resume-with-changes continues anyway)")


class PretrainLoader:
    """The run's batches, from an indexed `ImageDataset` or a streamed `StreamSource` (`source`);
    `data` makes the samples (`PretrainData`). What differs between the two stays in here."""

    def __init__(self, source, data: PretrainData, collate, *, settings, accelerator, bad_image_log: str):
        self.settings, self.data, self.streaming = settings, data, settings.data.streaming
        self.device, self.rank, self.processes = accelerator.device, accelerator.process_index, accelerator.num_processes
        options = dict(batch_size=settings.batch_size, num_workers=settings.num_workers, persistent_workers=settings.num_workers > 0,
                       pin_memory=accelerator.device.type == "cuda")
        if self.streaming:
            self.stream = ShardedStream(source, data.stream_sample, seed=settings.seed, shuffle_buffer=settings.data.shuffle_buffer,
                                        rank=self.rank, world_size=self.processes, on_bad_image=settings.data.on_bad_image,
                                        bad_image_log=bad_image_log)
            self.stream_state, self.slots_per_rank = StreamState(), max(1, settings.num_workers)
            self.source = source
            self.loader = torch.utils.data.DataLoader(self.stream, collate_fn=collate_with_positions(collate), **options)
            self.num_images = source.total
            if source.total is None and settings.max_steps is None:
                raise ValueError(f"--streaming: the size of {settings.data.dataset} is not known without reading it; give --max-steps")
            per_step = settings.batch_size * settings.grad_accum * self.processes
            self.batches_per_epoch = max(1, (source.total or per_step) // (settings.batch_size * self.processes))
            self._batches, self._sample_log = None, test_hooks.sample_log(self.rank)
        else:
            self.sampler = EpochPermutation(len(data), settings.seed)
            self.loader = torch.utils.data.DataLoader(data, sampler=self.sampler, drop_last=True, collate_fn=collate, **options)
            if len(self.loader) == 0:
                raise ValueError(f"{len(data)} images are fewer than one batch of {settings.batch_size}")
            self.num_images, self.batches_per_epoch = len(data), len(self.loader) // self.processes

    def prepare(self, accelerator, *objects):
        """`accelerator.prepare` of the model, optimizer and scheduler, and of the loader where
        accelerate shards it (indexed data; each rank reads its own stream)."""
        if self.streaming:
            return accelerator.prepare(*objects)
        *prepared, self.loader = accelerator.prepare(*objects, self.loader)
        return prepared

    def epoch(self, accelerator, epoch: int, batch_in_epoch: int, steps_per_epoch: int):
        """The batches left of epoch `epoch` after `batch_in_epoch` optimizer steps."""
        accumulation = self.settings.grad_accum
        if self.streaming:  # one endless stream for the whole run
            if self._batches is None:
                self._batches = iter(self.loader)
            return itertools.islice(self._batches, (steps_per_epoch - batch_in_epoch) * accumulation)
        self.sampler.set_epoch(epoch)
        self.data.set_epoch(epoch)
        return accelerator.skip_first_batches(self.loader, batch_in_epoch * accumulation) if batch_in_epoch else self.loader

    def take(self, batch: dict, step: int) -> dict:
        """A batch as the model takes it (a streamed batch's position noted and its keys logged)."""
        if self.streaming:
            self.stream_state.update(batch.pop(POSITION_KEY))
            keys = batch.pop(KEYS_KEY)
            if self._sample_log is not None:
                self._sample_log.write("".join(f"{step + 1}\t{key}\n" for key in keys))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    def stream_settings(self) -> dict:
        s = self.settings
        return {"num_workers": s.num_workers, "num_processes": self.processes, "batch_size": s.batch_size, "seed": s.seed,
                "shuffle_buffer": s.data.shuffle_buffer}

    def checkpoint_state(self, accelerator) -> dict | None:
        """The stream's position for a checkpoint (a collective: every rank calls it), or None."""
        if not self.streaming:
            return None
        return {"positions": self.stream_state.gathered(accelerator, self.slots_per_rank), "batches": self.stream_state.batches,
                **self.stream_settings(), "world": stream_world(self.source)}

    def resume(self, state: dict, *, with_changes: bool = False) -> None:
        if self.streaming:
            check_stream_resume(state.get("stream"), self.stream_settings(), stream_world(self.source),
                                dataset=self.settings.data.dataset, with_changes=with_changes)
            self.stream.resume(state["stream"]["positions"], state["stream"]["batches"])
            self.stream_state = StreamState(state["stream"]["positions"], state["stream"]["batches"])

    def close(self) -> None:
        if self.streaming and self._sample_log is not None:
            self._sample_log.close()
