"""What the members of a webdataset tar shard mean: `<key>.<ext>`, the extensions that hold an
image or a label, and a label member's class id. Shared by reading shards (`shard_reading.py`)
and checking their receipts (`receipts.py`)."""

from __future__ import annotations

import json

WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "gif", "tif", "tiff", "image")  # (those image folders read)
WDS_LABEL_KEYS = ("cls", "label", "json")
MAX_LABEL = 2**31 - 1


def split_name(name: str) -> tuple[str, str]:
    """webdataset's (key, extension): the extension starts at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (folder + "/" + stem if folder else stem), ext.lower()


def parse_label(ext: str, payload: bytes) -> int:
    """The class id of a label member: `.cls`/`.label` text holding an integer, or `.json` holding
    an integer or {"label": int} / {"cls": int}; -1 (no label) is allowed. Anything else (a list,
    a string, a fraction, an id beyond 2**31 - 1 or below -1) is a `ValueError` saying what it is."""
    try:
        value = json.loads(payload) if ext == "json" else payload.decode().strip()
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the .{ext} label is not {'JSON' if ext == 'json' else 'text'} ({error})") from None
    if isinstance(value, dict):
        value = value.get("label", value.get("cls", -1))
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"the .{ext} label {value[:40]!r} is not an integer class id") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the .{ext} label is {type(value).__name__} {str(value)[:40]}, not an integer class id")
    if not -1 <= value <= MAX_LABEL:
        raise ValueError(f"the .{ext} label {value} is outside [-1, {MAX_LABEL}] (-1: no label)")
    return value
