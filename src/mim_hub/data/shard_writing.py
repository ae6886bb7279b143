"""Write any `--dataset` source as webdataset tar shards (`mim-hub prepare-shards`): images
re-encoded as JPEG with a bounded side, labels, and a manifest; resumable and parallel.

Each shard, its receipt (`<shard>.json`: done, and the index of its members, which
`shard_reading.index_webdataset` reads instead of the headers) and the manifest are written
through `utils.atomic.atomic_file`: a reader sees the whole file or none. Reading shards is
`shard_reading.py`'s; this module sits above the source table (it reads any source).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile

from PIL import Image
from tqdm.auto import tqdm

from ..utils.atomic import atomic_file, remove_stale_temporaries
from .errors import IMAGE_ERRORS
from .images import to_rgb
from .sources import load_images


def _resized_jpeg(image, max_side: int, quality: int) -> bytes:
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.draft("RGB", target)  # JPEG: decode at the nearest reduced scale first
        image = to_rgb(image).resize(target, Image.BICUBIC, reducing_gap=None)
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


_SOURCES: dict = {}  # the source index of this worker process (one per process, reused for its shards)


def write_shard(task) -> dict:
    """Write shard number `task["number"]` (samples [start, stop)) atomically; returns its counts."""
    spec, split, columns, output, number, start, stop, max_side, quality = (
        task["spec"], task["split"], task["columns"], task["output"], task["number"], task["start"], task["stop"],
        task["max_side"], task["quality"])
    key = (spec, split, tuple(sorted(columns.items())))
    if key not in _SOURCES:  # one index per process, however many shards it writes
        _SOURCES.clear()
        _SOURCES[key] = load_images(spec, split=split, **columns)
    data = _SOURCES[key]
    final = os.path.join(output, f"{split}-{number:06d}.tar")
    written, skipped = 0, 0
    offsets, sizes, labels = [], [], []  # the index of the image members, kept in the receipt
    with atomic_file(final) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(start, stop):
            try:
                with data._open(index) as image:
                    payload = _resized_jpeg(image, max_side, quality)
            except IMAGE_ERRORS as error:  # reported like the trainers' bad images
                data._bad(index, error)  # raises with --on-bad-image error; else counted and named
                skipped += 1
                continue
            key = f"{index:09d}"
            members = [(f"{key}.jpg", payload)]
            if data.labels[index] >= 0:
                members.append((f"{key}.cls", str(int(data.labels[index])).encode()))
            for name, blob in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(blob), 0, 0o644
                tar.addfile(info, io.BytesIO(blob))
                if name.endswith(".jpg"):  # its data ends the member, padded to whole blocks
                    offsets.append(tar.offset - (len(blob) + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE)
                    sizes.append(len(blob))
            labels.append(int(data.labels[index]) if data.labels[index] >= 0 else -1)
            written += 1
    summary = {"shard": os.path.basename(final), "samples": written, "skipped": skipped, "bytes": os.path.getsize(final),
               "offsets": offsets, "sizes": sizes, "labels": labels}
    with atomic_file(final + ".json") as tmp, open(tmp, "w") as handle:  # the shard's receipt: done, and what it holds
        json.dump(summary, handle)
    return summary


def prepare_shards(spec: str, output: str, *, splits=("train",), image_column=None, label_column=None, max_side: int = 320,
                   quality: int = 90, shard_size: int = 1000, num_workers: int = 1, on_bad_image: str = "skip",
                   command: str = "", progress: bool = True) -> dict:
    """Write each split of `spec` as webdataset shards `<split>-NNNNNN.tar` in `output`, images
    re-encoded as JPEG with the longer side at most `max_side`, labels as `.cls`, and a
    `manifest.json` (counts, classes, the command). Resumable: a shard with its receipt
    (`.tar.json`) is done and is not written again; a shard being written is a `.tmp-` file until it
    is complete. Shards are written by `num_workers` processes in parallel."""
    os.makedirs(output, exist_ok=True)
    remove_stale_temporaries(output)  # what killed writers left (their own `.tmp-` files)
    columns = dict(image_column=image_column, label_column=label_column, on_bad_image=on_bad_image)
    manifest = {"format": "webdataset", "image_key": "jpg", "label_key": "cls", "max_side": max_side, "quality": quality,
                "command": command, "source": spec, "splits": {}}
    for split in splits:
        data = load_images(spec, split=split, **columns)
        manifest["classes"] = data.label_names or manifest.get("classes")
        tasks = [dict(spec=spec, split=split, columns=columns, output=output, number=n, start=s, stop=min(len(data), s + shard_size),
                      max_side=max_side, quality=quality) for n, s in enumerate(range(0, len(data), shard_size))]
        done = {t["number"]: _receipt(output, split, t["number"]) for t in tasks}
        todo = [t for t in tasks if done[t["number"]] is None]
        bar = tqdm(total=len(data), initial=sum(len(range(t["start"], t["stop"])) for t in tasks if done[t["number"]]),
                   desc=f"prepare-shards {split}", unit="img", disable=not progress)
        if num_workers > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(min(num_workers, len(todo))) as pool:
                for task, summary in zip(todo, pool.imap(write_shard, todo)):
                    done[task["number"]] = summary
                    bar.update(task["stop"] - task["start"])
        else:
            for task in todo:
                done[task["number"]] = write_shard(task)
                bar.update(task["stop"] - task["start"])
        bar.close()
        receipts = [done[t["number"]] for t in tasks]
        manifest["splits"][split] = {"samples": sum(r["samples"] for r in receipts), "skipped": sum(r["skipped"] for r in receipts),
                                     "shards": [r["shard"] for r in receipts], "shard_samples": [r["samples"] for r in receipts]}
    with atomic_file(os.path.join(output, "manifest.json")) as tmp, open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
    return manifest


def _receipt(output: str, split: str, number: int):
    path = os.path.join(output, f"{split}-{number:06d}.tar")
    if os.path.isfile(path) and os.path.isfile(path + ".json"):
        with open(path + ".json") as handle:
            return json.load(handle)
    return None
