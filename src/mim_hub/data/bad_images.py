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

from .errors import DatasetError

logger = logging.getLogger("mim_hub.data")
MAX_BAD_IN_A_ROW = 64  # an indexed dataset gives up (DatasetError) after this many unreadable items in a row


def bad_image(where: str, error: Exception, on_bad_image: str, skipped: list, log_path: str | None = None) -> None:
    """What every reader (indexed datasets, streams, prepare-shards) does with an unreadable image:
    with `on_bad_image="error"` raise `DatasetError` naming it; else skip it: append `where` to
    `skipped` (this process's list), warn naming it, and append `where<TAB>error` to `log_path`
    (a file every process appends to; `count_bad_images` counts its lines)."""
    if on_bad_image == "error":
        raise DatasetError(f"unreadable image {where}: {error}") from None
    skipped.append(where)
    logger.warning("skipped unreadable image %s: %s (%d skipped so far in this process)", where, error, len(skipped))
    if log_path:
        with open(log_path, "a") as handle:
            handle.write(f"{where}\t{str(error)[:200]}\n")


def count_bad_images(path: str | None) -> int:
    """Lines in a `bad_image_log` file (the bad images every process met)."""
    if not path or not os.path.exists(path):
        return 0
    with open(path) as handle:
        return sum(1 for _ in handle)
