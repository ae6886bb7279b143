"""Reading webdataset tar shards: the index of a shard from its headers alone, and its samples.

A shard is a plain tar whose members are `<key>.<ext>`; consecutive members with one key form a
sample (`<key>.jpg` + `<key>.cls`, as in `timm/imagenet-1k-wds`). Reading an index touches only
the 512-byte headers (and the few bytes of label members), so indexing is fast and needs no
decoding; a sample is then read by seeking to its image member. A shard written by
`mim-hub prepare-shards` (`shard_writing.py`) carries its index in its receipt (`<shard>.json`).
"""

from __future__ import annotations

import json
import os

import numpy as np

BLOCK = 512
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff", "image")
WDS_LABEL_KEYS = ("cls", "label", "json")


def parse_label(ext: str, payload: bytes) -> int:
    if ext == "json":
        value = json.loads(payload)
        value = value.get("label", value.get("cls", -1)) if isinstance(value, dict) else value
        return int(value)
    return int(payload.decode().strip())


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def iter_tar(path: str, *, read_data=lambda name, size: False):
    """(member name, data offset, size, data or None) of every regular file of a tar, from its
    headers; `read_data(name, size)` says which members' bytes to read as well."""
    with open(path, "rb") as handle:
        position, long_name = 0, None
        while True:
            handle.seek(position)
            header = handle.read(BLOCK)
            if len(header) < BLOCK or header == b"\0" * BLOCK:
                return
            size, kind = _number(header[124:136]), header[156:157]
            name = header[0:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
                name = header[345:500].split(b"\0", 1)[0] + b"/" + name
            start = position + BLOCK
            if kind in (b"L", b"x"):  # GNU long name / pax header: the next member's name
                payload = handle.read(size)
                if kind == b"L":
                    long_name = payload.rstrip(b"\0")
                else:
                    for record in payload.split(b"\n"):
                        if b" path=" in record:
                            long_name = record.split(b" path=", 1)[1]
            elif kind in (b"0", b"\0", b"7"):
                text = (long_name or name).decode("utf-8", "replace")
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
    image_keys = (image_key,) if image_key else WDS_IMAGE_KEYS
    label_keys = (label_key,) if label_key else WDS_LABEL_KEYS

    def wanted(name, size):
        ext = split_name(name)[1]
        return (ext in label_keys and size < 1 << 16) or (read_images and ext in image_keys)

    current, members = None, {}

    def sample():
        image = next((k for k in image_keys if k in members), None)
        if image is None:
            return None
        label = next((parse_label(k, members[k][2]) for k in label_keys if k in members and members[k][2] is not None), -1)
        offset, size, data = members[image]
        return current, image, offset, size, label, data

    for name, offset, size, data in iter_tar(path, read_data=wanted):
        key, ext = split_name(name)
        if key != current:
            if current is not None and (done := sample()) is not None:
                yield done
            current, members = key, {}
        members[ext] = (offset, size, data)
    if current is not None and (done := sample()) is not None:
        yield done


def _receipt_index(shard: str) -> dict | None:
    """The member index `prepare-shards` put in the shard's receipt (`<shard>.json`), if it has
    one and the shard is still the size it wrote."""
    path = shard + ".json"
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            receipt = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(receipt, dict) or receipt.get("bytes") != os.path.getsize(shard) or not all(
            isinstance(receipt.get(k), list) for k in ("offsets", "sizes", "labels")):
        return None
    return receipt


def index_webdataset(shards: list[str], *, image_key=None, label_key=None) -> dict:
    """{"shard", "offset", "size", "label"} arrays over every sample of `shards`, and "count"."""
    shard_ids, offsets, sizes, labels = [], [], [], []
    for number, shard in enumerate(shards):
        known = _receipt_index(shard) if image_key in (None, "jpg") and label_key in (None, "cls") else None
        if known is not None:  # written by prepare-shards: its receipt holds the index, no header to read
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
