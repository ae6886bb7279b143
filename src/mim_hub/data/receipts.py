"""Shard receipts: what `prepare-shards` writes beside each shard (`<shard>.tar.json`), and the
checks that decide whether a receipt may be trusted.

A receipt says what made its shard (`settings`: source, split, the samples' range, image
options; see `shards.py`) and what the shard holds: its member index (`offsets`, `sizes`,
`labels` of the image members), its byte size and modification time (`bytes`, `mtime_ns`), and
a digest of the image members' 512-byte tar headers (`headers_blake2b`), and a digest of the
receipt's own fields (`receipt_blake2b`). Receipts are written
atomically (`utils.atomic.atomic_file`): a reader sees a whole receipt or none.

`verified_index(shard)` trusts a receipt only after checking it against the shard: the lists
are integers of one length; every offset lies on a 512-byte block inside the file, in order,
without overlaps; the tar header before each offset is a regular member, an image of its
sample's key, of the size the receipt claims (so no offset points at a label, at another
member or at the same member twice); the headers' digest matches; and the content is the one
the receipt saw: the same modification time and an unedited receipt, or else (a copied shard has
a new time) each sample's label member read back and equal to the receipt's label. Anything else: the shard is indexed
from its tar headers instead, with a warning naming the shard and the first difference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from ..utils.atomic import atomic_file
from .files import open_regular
from .members import parse_label, split_name

logger = logging.getLogger("mim_hub.shards")
BLOCK = 512
RECEIPT_FORMAT = 2  # 1: no settings, no mtime, no header digest (read, but re-indexed from the tar)


def receipt_path(shard: str) -> str:
    return shard + ".json"


def write_receipt(shard: str, receipt: dict) -> None:
    """Write `receipt` beside `shard`, whole or not at all, with the shard's size and mtime."""
    stat = os.stat(shard)
    receipt = {**receipt, "format": RECEIPT_FORMAT, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    receipt["receipt_blake2b"] = receipt_digest(receipt)
    with atomic_file(receipt_path(shard)) as tmp:
        with open(tmp, "w") as handle:
            json.dump(receipt, handle)


def receipt_digest(receipt: dict) -> str:
    """blake2b of a receipt's own fields (all but this digest): a receipt edited after it was
    written no longer matches it, and its labels are then read back from the shard."""
    fields = {k: v for k, v in receipt.items() if k != "receipt_blake2b"}
    return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=16).hexdigest()


def read_receipt(shard: str) -> dict | None:
    """The receipt of `shard` as written, or None (none, unreadable, empty or not a JSON object)."""
    path = receipt_path(shard)
    if not os.path.isfile(path) or not os.path.isfile(shard):
        return None
    try:
        with open(path) as handle:
            receipt = json.load(handle)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return receipt if isinstance(receipt, dict) else None


def header_fields(block: bytes) -> tuple[str, int, bytes] | None:
    """(name, size, type flag) of a valid ustar/GNU header block, or None (checksum wrong)."""
    if len(block) < BLOCK or block == b"\0" * BLOCK:
        return None
    stored = block[148:156].split(b"\0", 1)[0].strip()
    try:
        checksum = int(stored, 8) if stored else -1
        size_field = block[124:136]
        if size_field[0] & 0x80:
            size = int.from_bytes(bytes([size_field[0] & 0x7F]) + size_field[1:], "big")
        else:
            text = size_field.split(b"\0", 1)[0].strip()
            size = int(text, 8) if text else 0
    except ValueError:
        return None
    if checksum != sum(block[:148]) + 8 * 32 + sum(block[156:BLOCK]):
        return None
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "replace"), size, block[156:157]


def _is_int_list(value, length=None) -> bool:
    return (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and (length is None or len(value) == length))


def _problem(shard: str, receipt: dict, image_keys, check_labels: bool) -> str | None:
    """The first way `receipt` disagrees with `shard`, or None (it may be trusted)."""
    import numpy as np

    if receipt.get("format") != RECEIPT_FORMAT:
        return f"the receipt's format is {receipt.get('format', 1)!r}, not {RECEIPT_FORMAT}"
    offsets, sizes, labels = receipt.get("offsets"), receipt.get("sizes"), receipt.get("labels")
    if not (_is_int_list(offsets) and _is_int_list(sizes, len(offsets)) and _is_int_list(labels, len(offsets))):
        return "its offsets, sizes and labels are not lists of integers of one length"
    stat = os.stat(shard)
    if receipt.get("bytes") != stat.st_size:
        return f"the shard has {stat.st_size} bytes, the receipt says {receipt.get('bytes')}"
    if labels and min(labels) < -1:
        return f"a label below -1 ({min(labels)})"
    if offsets:
        start, size = np.asarray(offsets, dtype=object), np.asarray(sizes, dtype=object)  # (Python ints: no overflow)
        end = start + (size + BLOCK - 1) // BLOCK * BLOCK  # where each member's padded data ends
        bad = (start % BLOCK != 0) | (start < BLOCK) | (size < 0) | (start + size > stat.st_size)
        bad[1:] |= start[1:] < end[:-1] + BLOCK  # each data after the previous one and a header
        if bad.any():
            i = int(np.flatnonzero(bad.astype(bool))[0])
            return f"offset {offsets[i]} (size {sizes[i]}) is not a member's data inside the {stat.st_size}-byte shard, in order"
    unedited = receipt.get("receipt_blake2b") == receipt_digest(receipt)
    with open_regular(shard) as handle:
        descriptor = handle.fileno()
        if unedited and receipt.get("mtime_ns") == stat.st_mtime_ns:
            # the receipt and the shard as written: the headers at its offsets are the ones it saw
            hasher = hashlib.blake2b(digest_size=16)
            for offset in offsets:
                hasher.update(os.pread(descriptor, BLOCK, offset - BLOCK))
            if hasher.hexdigest() == receipt.get("headers_blake2b"):
                return None
        return _member_problem(descriptor, offsets, sizes, labels, image_keys, check_labels)


def _member_problem(descriptor: int, offsets, sizes, labels, image_keys, check_labels: bool) -> str | None:
    """Every offset checked against its member's header, and each label read back."""
    keys = set()
    for offset, size, label in zip(offsets, sizes, labels):
        fields = header_fields(os.pread(descriptor, BLOCK, offset - BLOCK))
        if fields is None or fields[2] not in (b"0", b"\0", b"7"):
            return f"offset {offset} is not the data of a regular tar member"
        name, member_size, _ = fields
        key, ext = split_name(name)
        if ext not in image_keys or member_size != size:
            return f"offset {offset} is {name!r} ({member_size} bytes), not an image member of {size} bytes"
        if key in keys:
            return f"two offsets point at samples of key {key!r}"
        keys.add(key)
        if not check_labels:
            continue
        following = offset + (size + BLOCK - 1) // BLOCK * BLOCK
        fields = header_fields(os.pread(descriptor, BLOCK, following))
        if fields is None or split_name(fields[0]) != (key, "cls") or fields[1] >= 1 << 16:
            if label != -1:
                return f"sample {key!r} has no .cls member after its image, the receipt says label {label}"
            continue
        try:
            actual = parse_label("cls", os.pread(descriptor, fields[1], following + BLOCK))
        except ValueError:
            actual = None
        if actual != label:
            return f"sample {key!r} has label {actual}, the receipt says {label}"
    return None


def verified_index(shard: str, *, image_keys=("jpg",), check_labels: bool = True,
                   instead: str = "indexing the shard from its tar headers instead") -> dict | None:
    """The member index in `shard`'s receipt ({"offsets", "sizes", "labels"}) once it is checked
    against the shard (see the module docstring), or None: no receipt, or one that does not
    match (then a warning names the shard and why, and the caller indexes the tar itself)."""
    receipt = read_receipt(shard)
    if receipt is None:
        if os.path.exists(receipt_path(shard)):
            logger.warning("%s: its receipt %s is unreadable (empty or not JSON); %s", shard, receipt_path(shard), instead)
        return None
    problem = _problem(shard, receipt, image_keys, check_labels)
    if problem is not None:
        logger.warning("%s: its receipt does not match the shard (%s); %s", shard, problem, instead)
        return None
    return receipt


def headers_digest(shard: str, offsets) -> str:
    """The digest `verified_index` compares: blake2b of the image members' header blocks."""
    hasher = hashlib.blake2b(digest_size=16)
    with open(shard, "rb") as handle:
        for offset in offsets:
            hasher.update(os.pread(handle.fileno(), BLOCK, offset - BLOCK))
    return hasher.hexdigest()


# ---------------------------------------------------------------- what made a shard folder (prepare-shards)

SHARD_NAME = r"^(?P<split>.+)-(?P<number>\d{6})\.tar$"


def run_settings(spec: str, *, image_column, label_column, max_side: int, quality: int, shard_size: int) -> dict:
    """What decides a prepare-shards run's bytes: the source (as an absolute path when it is a
    local one) and the options. Two runs with equal settings write equal shards."""
    return {"source": _source_identity(spec), "image_column": image_column, "label_column": label_column, "max_side": max_side,
            "quality": quality, "shard_size": shard_size, "image_key": "jpg", "label_key": "cls"}


def _source_identity(spec: str) -> str:
    prefix, _, path = spec.rpartition(":") if spec.startswith(("imagefolder:", "webdataset:")) else ("", "", spec)
    if os.path.exists(path):
        path = os.path.realpath(path)
    return f"{prefix}:{path}" if prefix else path


def local_input_path(spec: str) -> str | None:
    """The folder or file a `--dataset` spec reads, when it is local (else None)."""
    import glob as globlib

    path = spec.split(":", 1)[1] if spec.startswith(("imagefolder:", "webdataset:")) else spec
    if any(c in path for c in "*?[{"):
        path = path[:min(path.index(c) for c in "*?[{" if c in path)]
        path = path if path.endswith(os.sep) else os.path.dirname(path)
    if not path or not os.path.exists(path) or globlib.has_magic(path):
        return None
    return os.path.realpath(path)


def check_output_outside_input(spec: str, output: str) -> None:
    """Refuse an output folder that is the source's folder, or inside an image folder it is written
    from (its shards would join the source: more shards of a webdataset folder, a phantom class
    or split of an image folder)."""
    source = local_input_path(spec)
    target = os.path.realpath(output)
    if source is None or not os.path.isdir(source):
        return
    # an image folder reads every subfolder (a class, or a split); the other kinds read their own files in the folder
    inside = target.startswith(source.rstrip(os.sep) + os.sep) and spec.startswith("imagefolder:")
    if target == source or inside:
        raise ValueError(f"--output {output} is inside the source {source}: what is written there would be read as part of the "
                         "dataset (a class or split of its own); write the shards outside it")


def shard_files(output: str) -> dict[str, list[str]]:
    """{split: [shard file names]} of the `<split>-NNNNNN.tar` files in `output`."""
    import re

    found: dict[str, list[str]] = {}
    for name in sorted(os.listdir(output)) if os.path.isdir(output) else []:
        match = re.match(SHARD_NAME, name)
        if match:
            found.setdefault(match.group("split"), []).append(name)
    return found


def _differences(saved: dict | None, settings: dict) -> list[str]:
    if not isinstance(saved, dict):
        return ["written without a record of its settings (by another tool or an older version)"]
    return [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in settings.items() if saved.get(key) != value]


def check_output_folder(output: str, settings: dict, overwrite: bool) -> dict | None:
    """Refuse (`FileExistsError`, naming the differences) an `output` folder that holds another
    run's shards or manifest, unless `overwrite`, which then removes them; returns the folder's
    manifest when it is this run's (its other splits are kept), else None."""
    manifest_path = os.path.join(output, "manifest.json")
    manifest, foreign = None, []
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path) as handle:
                manifest = json.load(handle)
        except (OSError, ValueError):
            manifest = None
        foreign = _differences(manifest.get("settings") if isinstance(manifest, dict) else None, settings)
        if foreign:
            foreign = [f"manifest.json: {d}" for d in foreign]
    for split, names in shard_files(output).items():
        for name in names:
            receipt = read_receipt(os.path.join(output, name))
            if receipt is None:
                continue  # a shard without its receipt is unfinished: written again, whoever began it
            difference = _differences(receipt.get("settings"), settings)
            if difference:
                foreign.append(f"{name}: {difference[0]}")
                break
    if not foreign:
        return manifest if isinstance(manifest, dict) else None
    if not overwrite:
        raise FileExistsError(f"--output {output} holds shards of another run ({'; '.join(foreign[:3])}); give an empty folder, "
                              "the same settings to resume that run, or --overwrite to replace its shards")
    logger.warning("--overwrite: removing the shards and manifest of another run from %s (%s)", output, foreign[0])
    for names in shard_files(output).values():
        for name in names:
            for path in (os.path.join(output, name), receipt_path(os.path.join(output, name)), os.path.join(output, name + ".tmp")):
                if os.path.exists(path):
                    os.remove(path)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    return None


def finished_shard(shard: str, expected: dict) -> dict | None:
    """The receipt of `shard` when this run may keep it: written with the same settings, split
    and sample range (`expected`), and still matching the shard; else None (written again)."""
    if not os.path.isfile(shard):
        return None
    receipt = read_receipt(shard)
    if receipt is None or not isinstance(receipt.get("settings"), dict):
        if os.path.exists(receipt_path(shard)):
            logger.warning("%s: its receipt is unreadable (empty or not JSON); writing the shard again", shard)
        return None
    if any(receipt.get(key) != value for key, value in expected.items() if key != "settings") or _differences(
            receipt["settings"], expected["settings"]):
        return None
    return receipt if verified_index(shard, instead="writing it again") is not None else None
