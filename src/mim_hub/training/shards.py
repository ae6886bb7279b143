"""Write any `--dataset` source as webdataset tar shards (`mim-hub prepare-shards`): images
re-encoded as JPEG with a bounded side, labels, and a manifest; resumable and parallel. Also
reads tar shards' index from their headers alone.

A shard is a plain tar whose members are `<key>.<ext>`; consecutive members with one key form a
sample (`<key>.jpg` + `<key>.cls`, as in `timm/imagenet-1k-wds`). Reading an index touches only
the 512-byte headers (and the few bytes of label members), so indexing is fast and needs no
decoding; a sample is then read by seeking to its image member.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
import time

import numpy as np

from .files import open_regular
from .receipts import headers_digest, read_receipt, verified_index, write_receipt

logger = logging.getLogger("mim_hub.shards")
BLOCK = 512


COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def iter_tar(path: str, *, read_data=lambda name, size: False):
    """(member name, data offset, size, data or None) of every regular file of a tar, from its
    headers; `read_data(name, size)` says which members' bytes to read as well. A file that is not
    a plain tar (compressed, garbage, a header with a wrong checksum) or whose member claims more
    bytes than the file has is a `DatasetError` naming the file, the byte and the member."""
    from .data import DatasetError
    from .receipts import header_fields

    with open_regular(path) as handle:
        total = os.fstat(handle.fileno()).st_size
        position, long_name = 0, None
        while True:
            handle.seek(position)
            header = handle.read(BLOCK)
            if not header.strip(b"\0"):  # the end (two zero blocks, or the file's end)
                return
            fields = header_fields(header)
            if fields is None:
                kind = next((k for magic, k in COMPRESSED.items() if position == 0 and header.startswith(magic)), None)
                if kind:
                    raise DatasetError(f"{path}: a {kind}-compressed file, not a plain tar; decompress it (shards are read by "
                                       "seeking to members, which a compressed stream does not allow)")
                raise DatasetError(f"{path}: not a tar file, or corrupt: the block at byte {position} is not a valid tar header")
            name, size, kind = fields
            start = position + BLOCK
            if start + size > total:
                raise DatasetError(f"{path}: member {name!r} at byte {position} claims {size} bytes, but the file ends at byte "
                                   f"{total}: the shard is truncated or corrupt")
            if kind in (b"L", b"x"):  # GNU long name / pax header: the next member's name
                payload = handle.read(size)
                if kind == b"L":
                    long_name = payload.rstrip(b"\0")
                else:
                    for record in payload.split(b"\n"):
                        if b" path=" in record:
                            long_name = record.split(b" path=", 1)[1]
            elif kind in (b"0", b"\0", b"7"):
                text = long_name.decode("utf-8", "replace") if long_name else name
                long_name = None
                data = handle.read(size) if read_data(text, size) else None
                yield text, start, size, data
            position = start + (size + BLOCK - 1) // BLOCK * BLOCK


def split_name(name: str) -> tuple[str, str]:
    """webdataset's (key, extension): the extension starts at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (folder + "/" + stem if folder else stem), ext.lower()


def member_name(shard: str, offset: int) -> str:
    """The name of the member whose data starts at `offset` (for messages about one sample)."""
    with open(shard, "rb") as handle:
        handle.seek(offset - BLOCK)
        header = handle.read(BLOCK)
    return header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")


def iter_samples(path: str, *, image_key=None, label_key=None, read_images: bool = False):
    """(key, image ext, image offset, image size, label or -1, image bytes or None) per sample."""
    from .data import WDS_IMAGE_KEYS, WDS_LABEL_KEYS, parse_label

    image_keys = (image_key,) if image_key else WDS_IMAGE_KEYS
    label_keys = (label_key,) if label_key else WDS_LABEL_KEYS

    def wanted(name, size):
        ext = split_name(name)[1]
        return (ext in label_keys and size < 1 << 16) or (read_images and ext in image_keys)

    from .data import DatasetError

    current, members, seen = None, {}, set()

    def sample():
        image = next((k for k in image_keys if k in members), None)
        if image is None:
            return None
        try:
            label = next((parse_label(k, members[k][2]) for k in label_keys if k in members and members[k][2] is not None), -1)
        except ValueError as error:
            raise DatasetError(f"{path}: sample {current!r}: {error}") from None
        offset, size, data = members[image]
        return current, image, offset, size, label, data

    for name, offset, size, data in iter_tar(path, read_data=wanted):
        key, ext = split_name(name)
        if key != current:
            if current is not None and (done := sample()) is not None:
                yield done
            if key in seen:  # webdataset groups consecutive members: a key met again would be a second sample
                raise DatasetError(f"{path}: key {key!r} appears twice (member {name!r}); a sample's members must be "
                                   "consecutive and keys unique within a shard")
            seen.add(key)
            current, members = key, {}
        elif ext in members:
            raise DatasetError(f"{path}: two {ext!r} members for key {key!r} (member {name!r}): one would hide the other")
        members[ext] = (offset, size, data)
    if current is not None and (done := sample()) is not None:
        yield done


def index_webdataset(shards: list[str], *, image_key=None, label_key=None) -> dict:
    """{"shard", "offset", "size", "label"} arrays over every sample of `shards`, and "count"."""
    shard_ids, offsets, sizes, labels = [], [], [], []
    for number, shard in enumerate(shards):
        # written by prepare-shards: its receipt holds the index, trusted once checked against the shard
        known = verified_index(shard) if image_key in (None, "jpg") and label_key in (None, "cls") else None
        if known is not None:
            shard_ids += [number] * len(known["offsets"])
            offsets += known["offsets"]
            sizes += known["sizes"]
            labels += known["labels"]
            continue
        for _, _, offset, size, label, _ in iter_samples(shard, image_key=image_key, label_key=label_key):
            shard_ids.append(number)
            offsets.append(offset)
            sizes.append(size)
            labels.append(label)
    return {"shard": np.asarray(shard_ids, np.int32), "offset": np.asarray(offsets, np.int64), "size": np.asarray(sizes, np.int64),
            "label": np.asarray(labels, np.int64), "count": len(labels)}


# ---------------------------------------------------------------- prepare-shards

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .data import add_dataset_arguments

    parser.add_argument("--output", required=True, help="folder to write the shards and manifest.json into")
    add_dataset_arguments(parser, streaming=False)
    parser.add_argument("--max-side", type=int, default=320, help="longer image side at most this (0: keep the size)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--num-workers", type=int, default=None, help="processes writing shards (default: from the CPU count)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards and manifest of another run (other settings or source) in --output")


def _resized_jpeg(image, max_side: int, quality: int) -> bytes:
    from PIL import Image

    from .data import to_rgb

    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.draft("RGB", target)  # JPEG: decode at the nearest reduced scale first
        image = to_rgb(image).resize(target, Image.BICUBIC, reducing_gap=None)
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


_SOURCES: dict = {}


def write_shard(task) -> dict:
    """Write shard number `task["number"]` (samples [start, stop)) atomically; returns its counts."""
    spec, split, columns, output, number, start, stop, max_side, quality = (
        task["spec"], task["split"], task["columns"], task["output"], task["number"], task["start"], task["stop"],
        task["max_side"], task["quality"])
    from .crash_points import die_if_asked

    from .data import BadImage

    die_if_asked("shard", number)  # a test's stand-in for the out-of-memory killer
    key = (spec, split, tuple(sorted(columns.items())))
    if key not in _SOURCES:  # one index per process, however many shards it writes
        from .data import load_images

        _SOURCES.clear()
        _SOURCES[key] = load_images(spec, split=split, **columns)
    data = _SOURCES[key]
    data.bad_image_log = os.path.join(output, "bad_images.tsv")
    final = os.path.join(output, f"{split}-{number:06d}.tar")
    tmp = final + ".tmp"
    written, skipped = 0, 0
    offsets, sizes, labels = [], [], []  # the index of the image members, kept in the receipt
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
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
    summary = {**task["expected"], "shard": os.path.basename(final), "samples": written, "skipped": skipped,
               "offsets": offsets, "sizes": sizes, "labels": labels, "headers_blake2b": headers_digest(tmp, offsets)}
    os.replace(tmp, final)
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
    written is a `.tmp` until it is complete. A folder holding another run's shards or manifest
    is refused unless `overwrite`. Shards are written by `num_workers` processes in parallel; a
    worker that dies is an error (what was finished is kept for a rerun)."""
    from tqdm.auto import tqdm

    from ..utils.atomic import atomic_file
    from .data import load_images
    from .receipts import check_output_folder, check_output_outside_input, finished_shard, run_settings
    from .validation import check_values

    check_values(dict(max_side=max_side, quality=quality, shard_size=shard_size, num_workers=num_workers), "prepare-shards")
    check_output_outside_input(spec, output)
    settings = run_settings(spec, image_column=image_column, label_column=label_column, max_side=max_side, quality=quality,
                            shard_size=shard_size)
    os.makedirs(output, exist_ok=True)
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
    from .receipts import receipt_path, shard_files

    for name in shard_files(output).get(split, []):
        if int(name[-10:-4]) >= count:
            for path in (os.path.join(output, name), receipt_path(os.path.join(output, name))):
                if os.path.exists(path):
                    os.remove(path)


def _write_in_processes(todo: list[dict], done: dict, workers: int, bar) -> None:
    """`write_shard` of every task in `workers` spawned processes; a process that dies (killed, out
    of memory) is noticed at once (`BrokenProcessPool`) and is an error naming the shards left."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from .data import DatasetError

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


def main(args: argparse.Namespace) -> int:
    from .data import available_splits, default_num_workers

    splits = [args.split]
    if args.eval_split:
        splits.append(args.eval_split)
    elif args.split == "train":  # every split the source has, when that is cheap to tell
        splits = available_splits(args.dataset) or splits
    started = time.time()
    manifest = prepare_shards(args.dataset, args.output, splits=splits, image_column=args.image_column, label_column=args.label_column,
                              max_side=args.max_side, quality=args.quality, shard_size=args.shard_size,
                              num_workers=args.num_workers if args.num_workers is not None else max(1, default_num_workers()),
                              on_bad_image=args.on_bad_image, command="mim-hub " + " ".join(sys.argv[1:]), overwrite=args.overwrite)
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['samples']} samples in {len(info['shards'])} shards ({info['skipped']} unreadable skipped)")
    print(f"wrote {args.output} in {time.time() - started:.1f} s")
    return 0
