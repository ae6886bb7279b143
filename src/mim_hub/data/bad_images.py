"""The bad-image policy, written once for every reader (indexed datasets, streams, prepare-shards).

An image that cannot be opened or decoded (a truncated JPEG fails only at decoding) is skipped,
counted and logged with the file, shard or row it came from; an indexed dataset replaces it by
the next readable item in a fixed order (`ImageDataset.with_image`), a stream moves on to its
next sample, so batches stay full and a resumed run sees exactly what the uninterrupted one saw.
`on_bad_image="error"` raises `DatasetError` naming it instead.
"""

from __future__ import annotations

import logging
import os
import re

from .errors import DatasetError

logger = logging.getLogger("mim_hub.data")
MAX_BAD_IN_A_ROW = 64  # an indexed dataset gives up (DatasetError) after this many unreadable items in a row


def bad_image(where: str, error: Exception, on_bad_image: str, skipped: list, log_path: str | None = None) -> None:
    """What every reader (indexed datasets, streams, prepare-shards) does with an unreadable image:
    with `on_bad_image="error"` raise `DatasetError` naming it; else skip it: append `where` to
    `skipped` (this process's list), warn naming it, and append `where<TAB>error` to `log_path`
    (a file every process appends to, one line per encounter, tabs, newlines and backslashes in
    either field escaped as \\t, \\n, \\\\; `count_bad_images` counts the distinct images)."""
    if on_bad_image == "error":
        raise DatasetError(f"unreadable image {where}: {error}") from None
    skipped.append(where)
    logger.warning("skipped unreadable image %s: %s (%d skipped so far in this process)", where, error, len(skipped))
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "a") as handle:  # one short write per line: lines of several processes do not interleave
            handle.write(f"{_escape(where)}\t{_escape(str(error)[:200])}\n")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def read_bad_images(path: str | None) -> list[tuple[str, str]]:
    """(where, error) of each line of a `bad_images.tsv`, unescaped."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        return [tuple(_unescape(field) for field in (line.rstrip("\n").split("\t", 1) + [""])[:2]) for line in handle if line.strip()]


def count_bad_images(path: str | None) -> int:
    """The distinct images named in a `bad_image_log` file (every process's, every encounter)."""
    return len({where for where, _ in read_bad_images(path)})
