"""Reading webdataset tar shards: the index of a shard from its headers alone, and its samples.

A shard is a plain tar whose members are `<key>.<ext>`; consecutive members with one key form a
sample (`<key>.jpg` + `<key>.cls`, as in `timm/imagenet-1k-wds`; `members.py` says what the
members mean). Reading an index touches only the 512-byte headers (and the few bytes of label
members), so indexing is fast and needs no decoding; a sample is then read by seeking to its
image member. A shard written by `mim-hub prepare-shards` (`shard_writing.py`) carries its index
in its receipt (`receipts.py`), trusted once checked against the shard.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DatasetError
from .files import open_regular
from .members import WDS_IMAGE_KEYS, WDS_LABEL_KEYS, parse_label, split_name
from .receipts import header_fields, verified_index

BLOCK = 512
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def iter_tar(path: str, *, read_data=lambda name, size: False):
    """(member name, data offset, size, data or None) of every regular file of a tar, from its
    headers; `read_data(name, size)` says which members' bytes to read as well. A file that is not
    a plain tar (compressed, garbage, a header with a wrong checksum) or whose member claims more
    bytes than the file has is a `DatasetError` naming the file, the byte and the member."""
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
