"""Write any `--dataset` source as webdataset tar shards (`mim-hub prepare-shards`): images
re-encoded as JPEG with a bounded side, labels, and a manifest; resumable and parallel.

Each shard is written through `utils.atomic.atomic_file`, its receipt (`<shard>.json`: the
settings and range that made it, and the index of its members, which `shard_reading` reads
instead of the headers once `receipts.verified_index` has checked it) through `receipts`, and
the manifest through `atomic_file`: a reader sees a whole file or none. Reading shards is
`shard_reading.py`'s; this module sits above the source table (it reads any source).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from PIL import Image
from tqdm.auto import tqdm

from ..utils.atomic import atomic_file, remove_stale_temporaries
from ..utils.test_hooks import die_if_asked
from ..utils.values import check_values
from .errors import BadImage, DatasetError
from .images import to_rgb
from .receipts import (check_output_folder, check_output_outside_input, finished_shard, headers_digest, read_receipt, receipt_path,
                       run_settings, shard_files, write_receipt)
from .sources import load_images

_SOURCES: dict = {}  # the source index of this worker process (one per process, reused for its shards)


def _resized_jpeg(image, max_side: int, quality: int) -> bytes:
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.draft("RGB", target)  # JPEG: decode at the nearest reduced scale first
        image = to_rgb(image).resize(target, Image.BICUBIC, reducing_gap=None)
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_shard(task) -> dict:
    """Write shard number `task["number"]` (samples [start, stop)) atomically; returns its counts."""
    spec, split, columns, output, number, start, stop, max_side, quality = (
        task["spec"], task["split"], task["columns"], task["output"], task["number"], task["start"], task["stop"],
        task["max_side"], task["quality"])
    die_if_asked("shard", number)  # a test's stand-in for the out-of-memory killer
    key = (spec, split, tuple(sorted(columns.items())))
    if key not in _SOURCES:  # one index per process, however many shards it writes
        _SOURCES.clear()
        _SOURCES[key] = load_images(spec, split=split, **columns)
    data = _SOURCES[key]
    data.bad_image_log = os.path.join(output, "bad_images.tsv")
    final = os.path.join(output, f"{split}-{number:06d}.tar")
    written, skipped = 0, 0
    offsets, sizes, labels = [], [], []  # the index of the image members, kept in the receipt
    with atomic_file(final) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(start, stop):
            try:
                payload = data.try_image(index, lambda image: _resized_jpeg(image, max_side, quality))
            except BadImage as bad:  # reported like the trainers' bad images (an encoder error is raised)
                data._bad(index, bad.error)  # raises with --on-bad-image error; else counted and named
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
        tar.close()  # (the tar's end blocks written before the digest and the rename)
        digest = headers_digest(tmp, offsets)
    summary = {**task["expected"], "shard": os.path.basename(final), "samples": written, "skipped": skipped,
               "offsets": offsets, "sizes": sizes, "labels": labels, "headers_blake2b": digest}
    write_receipt(final, summary)  # the shard's receipt: done, and what it holds (atomically)
    return read_receipt(final)


def prepare_shards(spec: str, output: str, *, splits=("train",), image_column=None, label_column=None, max_side: int = 320,
                   quality: int = 90, shard_size: int = 1000, num_workers: int = 1, on_bad_image: str = "skip",
                   command: str = "", progress: bool = True, overwrite: bool = False) -> dict:
    """Write each split of `spec` as webdataset shards `<split>-NNNNNN.tar` in `output`, images
    re-encoded as JPEG with the longer side at most `max_side`, labels as `.cls`, and a
    `manifest.json` (counts, classes, the command, and the settings that made them). Each shard's
    receipt (`.tar.json`, written atomically) records the settings, split and sample range that
    made it. Resumable: a shard whose receipt has this run's settings and range, and still matches
    the shard, is done and is not written again; any other is written again; a shard being
    written is a `.tmp-` file until it is complete. A folder holding another run's shards or manifest
    is refused unless `overwrite`. Shards are written by `num_workers` processes in parallel; a
    worker that dies is an error (what was finished is kept for a rerun)."""
    check_values(dict(max_side=max_side, quality=quality, shard_size=shard_size, num_workers=num_workers), "prepare-shards")
    check_output_outside_input(spec, output)
    settings = run_settings(spec, image_column=image_column, label_column=label_column, max_side=max_side, quality=quality,
                            shard_size=shard_size)
    os.makedirs(output, exist_ok=True)
    remove_stale_temporaries(output)  # what killed writers left (their own `.tmp-` files)
    _SOURCES.clear()  # an index of this process's earlier run may be of other files
    previous = check_output_folder(output, settings, overwrite)  # this run's earlier manifest, or None
    columns = dict(image_column=image_column, label_column=label_column, on_bad_image=on_bad_image)
    manifest = {"format": "webdataset", "image_key": "jpg", "label_key": "cls", "max_side": max_side, "quality": quality,
                "shard_size": shard_size, "command": command, "source": spec, "settings": settings,
                "splits": dict((previous or {}).get("splits", {})), "classes": (previous or {}).get("classes")}
    for split in splits:
        data = load_images(spec, split=split, **columns)
        manifest["classes"] = data.label_names or manifest.get("classes")
        tasks = [dict(spec=spec, split=split, columns=columns, output=output, number=n, start=s, stop=min(len(data), s + shard_size),
                      max_side=max_side, quality=quality,
                      expected=dict(settings=settings, split=split, number=n, start=s, stop=min(len(data), s + shard_size),
                                    source_samples=len(data)))
                 for n, s in enumerate(range(0, len(data), shard_size))]
        _remove_beyond(output, split, len(tasks))
        done = {t["number"]: finished_shard(os.path.join(output, f"{split}-{t['number']:06d}.tar"), t["expected"]) for t in tasks}
        todo = [t for t in tasks if done[t["number"]] is None]
        bar = tqdm(total=len(data), initial=sum(len(range(t["start"], t["stop"])) for t in tasks if done[t["number"]]),
                   desc=f"prepare-shards {split}", unit="img", disable=not progress)
        if num_workers > 1 and len(todo) > 1:
            _write_in_processes(todo, done, min(num_workers, len(todo)), bar)
        else:
            for task in todo:
                done[task["number"]] = write_shard(task)
                bar.update(task["stop"] - task["start"])
        bar.close()
        receipts = [done[t["number"]] for t in tasks]
        manifest["splits"][split] = {"samples": sum(r["samples"] for r in receipts), "skipped": sum(r["skipped"] for r in receipts),
                                     "source_samples": len(data), "shards": [r["shard"] for r in receipts],
                                     "shard_samples": [r["samples"] for r in receipts]}
    with atomic_file(os.path.join(output, "manifest.json")) as tmp:
        with open(tmp, "w") as handle:
            json.dump(manifest, handle, indent=1)
    return manifest


def _remove_beyond(output: str, split: str, count: int) -> None:
    """Shards of `split` numbered `count` or more (left by this run's settings on a larger source)."""
    for name in shard_files(output).get(split, []):
        if int(name[-10:-4]) >= count:
            for path in (os.path.join(output, name), receipt_path(os.path.join(output, name))):
                if os.path.exists(path):
                    os.remove(path)


def _write_in_processes(todo: list[dict], done: dict, workers: int, bar) -> None:
    """`write_shard` of every task in `workers` spawned processes; a process that dies (killed, out
    of memory) is noticed at once (`BrokenProcessPool`) and is an error naming the shards left."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(write_shard, task): task for task in todo}
        try:
            for future in as_completed(futures):
                task = futures[future]
                done[task["number"]] = future.result()
                bar.update(task["stop"] - task["start"])
        except BrokenProcessPool:
            left = sorted(t["number"] for t in todo if done[t["number"]] is None)
            for future in futures:
                future.cancel()
            raise DatasetError(f"a prepare-shards worker process died (killed, e.g. by the out-of-memory killer) with shards "
                               f"{left[:5]}{' ...' if len(left) > 5 else ''} of split {todo[0]['split']!r} unfinished; the "
                               "finished shards are kept: rerun the same command to resume (with fewer --num-workers if "
                               "memory ran out)") from None
