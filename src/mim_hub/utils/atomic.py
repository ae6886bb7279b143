"""Writing a folder atomically, and an exclusive lock on an output folder.

`atomic_folder(target)` yields a temporary folder beside `target` (`atomic_file(target)` a temporary
file path, for one file); when the block succeeds the
folder is renamed into place (or, with `merge=True`, each file is moved into an existing target),
and when it fails the temporary folder is removed. What is written gets the usual modes under the
user's umask (0755 folders, 0644 files under umask 022), not the 0700 / 0600 of `mkdtemp` and of
libraries that write through `mkstemp`. A `save_pretrained` into a folder that `atomic_folder` is writing writes directly (no
second temporary folder inside the first). Temporary names carry the host and pid of their
writer, so that `remove_stale_temporaries` can remove what a killed writer left behind.

`OutputLock(folder)` takes `folder/.lock` (pid, host, start time and command in it): a second
process is refused with a message naming the holder; a lock left by a dead process on this host
is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator

TMP_PREFIX = ".tmp-"
_ACTIVE: set[str] = set()  # temporary folders this process is writing through atomic_folder


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def _temporary_name(target: str) -> str:
    return f"{TMP_PREFIX}{os.path.basename(target)}-{_host()}.{os.getpid()}.{secrets.token_hex(4)}"


def is_atomic_temporary(folder: str) -> bool:
    """True while `folder` is a temporary folder of an `atomic_folder` block of this process."""
    return os.path.abspath(os.fspath(folder)) in _ACTIVE


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, merge: bool = False, overwrite: bool = True,
                  temporary: str | os.PathLike | None = None) -> Iterator[str]:
    """Yield a temporary folder beside `target`, renamed into place when the block succeeds.

    `temporary` names the temporary folder (beside `target`, starting with `.tmp-`) where other
    processes must know it too (a checkpoint that every rank writes into); what a killed writer
    left under that name is removed first. By default the name carries this host and pid.

    A new `target` appears whole or not at all. An existing one is replaced whole (`merge=False`,
    only with `overwrite=True`) or, with `merge=True`, receives each written file by a rename
    (other files in it stay). On any failure, KeyboardInterrupt included, the temporary folder is
    removed and `target` is as it was.
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target} exists and is not a folder")
    if os.path.isdir(target) and not merge and not overwrite and os.listdir(target):
        raise FileExistsError(f"{target} exists and is not empty (pass --overwrite to replace it)")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    if temporary is None:
        tmp = os.path.join(parent, _temporary_name(target))
    else:
        tmp = os.path.abspath(os.fspath(temporary))
        if os.path.dirname(tmp) != parent or not os.path.basename(tmp).startswith(TMP_PREFIX):
            raise ValueError(f"temporary folder {tmp} must be a {TMP_PREFIX}* folder beside {target}")
        shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)  # the umask applies (mkdtemp would make it 0700)
    _ACTIVE.add(tmp)
    try:
        yield tmp
        _usual_modes(tmp)
        if not os.path.isdir(target):
            os.replace(tmp, target)
        elif merge:
            for name in os.listdir(tmp):
                destination = os.path.join(target, name)
                if os.path.isdir(destination) and not os.path.islink(destination):
                    shutil.rmtree(destination)
                os.replace(os.path.join(tmp, name), destination)
        else:
            old = tmp + ".old"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _ACTIVE.discard(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `target` to write one file to, renamed onto `target` when the
    block succeeds (a reader sees the old file or the new one, never half of one); on any failure
    the temporary file is removed and `target` is as it was. The file gets the umask's modes."""
    target = os.path.abspath(os.fspath(target))
    if os.path.isdir(target):
        raise IsADirectoryError(f"{target} is a folder")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, _temporary_name(target))
    _ACTIVE.add(tmp)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        _ACTIVE.discard(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_modes(folder: str) -> None:
    """Give what was written the modes a plain `open`/`mkdir` would under the umask (0644 files,
    0755 folders under 022): libraries that write through mkstemp leave 0600."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


_TEMPORARY = re.compile(r"^\.tmp-.*-(?P<host>[A-Za-z0-9_]+)\.(?P<pid>\d+)\.[0-9a-f]{8}(\.old)?$")


def remove_stale_temporaries(folder: str, *, everything: bool = False) -> list[str]:
    """Remove the temporary folders (and files) that killed writers left in `folder`: those whose
    writer (named in the name) is a dead process on this host; with `everything=True` (the caller
    holds the folder's lock) every `.tmp-*` entry. Returns the names removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if not name.startswith(TMP_PREFIX):
            continue
        match = _TEMPORARY.match(name)
        stale = everything or (match is not None and match["host"] == _host() and not _pid_alive(int(match["pid"])))
        path = os.path.join(folder, name)
        if not stale or path in _ACTIVE:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        removed.append(name)
    return removed


class FolderLockedError(OSError):
    """Another live process holds the folder's lock."""


class OutputLock:
    """An exclusive lock on `folder` for one run: `folder/.lock` holds the holder's pid, host,
    start time and command. Taken with `O_CREAT | O_EXCL`, so two processes cannot both take it;
    a lock whose pid is dead on this host is stale and taken over. Use as a context manager."""

    def __init__(self, folder: str | os.PathLike, name: str = ".lock"):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, name)
        self.held = False

    def holder(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a writer between create and write, or a damaged file

    def acquire(self) -> OutputLock:
        os.makedirs(self.folder, exist_ok=True)
        record = {"pid": os.getpid(), "host": _host(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile
                pid, host = holder.get("pid"), holder.get("host")
                if host == _host() and isinstance(pid, int) and not _pid_alive(pid):
                    self._remove_stale(holder)
                    continue
                who = f"process {pid} on host {host}, started {holder.get('started', '?')}" if holder else "an unreadable lock file"
                raise FolderLockedError(
                    errno.EBUSY,
                    f"{self.folder} is in use by another run ({who}: {holder.get('command', '')[:120]}). Two runs in one output "
                    f"folder would mix their logs and checkpoints: wait for it, use another --output-dir, or, if that run is no "
                    f"longer alive, delete {self.path}",
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self.held = True
            return self
        raise FolderLockedError(errno.EBUSY, f"could not take the lock {self.path}: it keeps changing hands")

    def _remove_stale(self, holder: dict) -> None:
        # rename first: of two processes that both saw the same stale lock, only one removes it
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside, encoding="utf-8") as handle:
            moved = handle.read()
        if moved and json.loads(moved or "{}") != holder:  # someone else's fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        os.remove(aside)

    def release(self) -> None:
        if self.held:
            holder = self.holder()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == _host():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
