"""Opening data files safely: only regular files are opened, so that a FIFO, a socket or a device
named like an image, a shard or a parquet file is refused at once instead of blocking forever
(a FIFO's `open` waits for a writer that never comes).

`open_regular(path)` opens without blocking (`O_NONBLOCK`), checks with `fstat` that what it
opened is a regular file (no race between a check and the open), and hands back an ordinary
buffered binary file. `NotARegularFile` is an `OSError`: an image that is not a regular file is
an unreadable image (skipped and named, or an error with `--on-bad-image error`).
"""

from __future__ import annotations

import os
import stat


class NotARegularFile(OSError):
    """A data path that names a FIFO, socket, device or folder instead of a regular file."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, mode: str = "rb"):
    """`open(path, "rb")`, refused with `NotARegularFile` unless `path` is a regular file."""
    if mode != "rb":
        raise ValueError("open_regular reads binary files only")
    descriptor = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{os.fspath(path)} is {_kind(info.st_mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def is_regular(path) -> bool:
    """Whether `path` is a regular file (links followed), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_regular(path) -> None:
    """Raise `NotARegularFile` unless `path` is a regular file (a stat: nothing is opened)."""
    try:
        info = os.stat(path)
    except OSError:
        return  # missing or unreadable: the open that follows says so
    if not stat.S_ISREG(info.st_mode):
        raise NotARegularFile(f"{os.fspath(path)} is {_kind(info.st_mode)}, not a regular file")


def only_regular(paths, what: str) -> list:
    """`paths` (data files a source lists: shards, tables), refusing any that is not a regular
    file with an error naming it (a FIFO would block the first read forever)."""
    from .errors import DatasetError

    for path in paths:
        try:
            check_regular(path)
        except NotARegularFile as error:
            raise DatasetError(f"{what}: {error}") from None
    return list(paths)
