"""The test-only hooks of the training runs, in one place; each is off unless its environment
variable is set (never, outside tests), and then costs one dictionary lookup.

Crash points: stop a run at a named point of its progress, so that crash tests kill it there
instead of after a guessed number of seconds.

With the environment variable ``MIM_HUB_PAUSE_AT`` set to ``POINT:STEP`` (several separated by
commas), the main process, on reaching that point at that optimizer step, writes the line
``MIM_HUB_PAUSED POINT:STEP`` to stderr and then blocks until it is killed. The points:

- ``step``: optimizer step STEP is done and logged (before any checkpoint of that step);
- ``checkpoint-begin``: the temporary folder ``checkpoints/.tmp-step_STEP`` exists, still empty;
- ``checkpoint-written``: accelerate's files are in the temporary folder, ``state.json`` is not;
- ``checkpoint-rename``: ``state.json`` is written too, the folder not yet renamed into place;
- ``checkpoint-prune``: ``checkpoints/step_STEP`` is in place, older ones not yet removed.

Two switches of `pretrain`: ``MIM_HUB_SAMPLE_LOG=FOLDER`` makes each rank of a streamed run write
the keys of the samples it trains on to ``FOLDER/samples.rankR.tsv`` (an audit that every sample
is seen once), and ``MIM_HUB_NORMALIZE_ON_DEVICE=1`` normalises uint8 crops on the device on a
CPU too (where it only moves the work), so the GPU path is tested on CPU.

With ``MIM_HUB_DIE_AT`` set to ``POINT:N``, the process that reaches that point kills itself
with SIGKILL (as the out-of-memory killer would): ``shard:N`` in the process about to write
shard N of `prepare-shards`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

POINTS = ("step", "checkpoint-begin", "checkpoint-written", "checkpoint-rename", "checkpoint-prune")
ENV = "MIM_HUB_PAUSE_AT"
MARKER = "MIM_HUB_PAUSED"
SAMPLE_LOG_ENV = "MIM_HUB_SAMPLE_LOG"
NORMALIZE_ON_DEVICE_ENV = "MIM_HUB_NORMALIZE_ON_DEVICE"
DIE_ENV = "MIM_HUB_DIE_AT"


def pause_if_asked(point: str, step: int) -> None:
    """Block forever (until killed) if ``MIM_HUB_PAUSE_AT`` names this point and step."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    here = f"{point}:{step}"
    if here not in (w.strip() for w in wanted.split(",")):
        return
    sys.stderr.write(f"\n{MARKER} {here}\n")
    sys.stderr.flush()
    threading.Event().wait()  # never set: only a signal ends the process from here


def sample_log(rank: int):
    """The file this rank logs its samples' keys to (line-buffered, appended), or None."""
    folder = os.environ.get(SAMPLE_LOG_ENV)
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    return open(os.path.join(folder, f"samples.rank{rank}.tsv"), "a", buffering=1)


def normalize_on_cpu() -> bool:
    return os.environ.get(NORMALIZE_ON_DEVICE_ENV) == "1"


def die_if_asked(point: str, number: int) -> None:
    """SIGKILL this process if ``MIM_HUB_DIE_AT`` names this point and number."""
    wanted = os.environ.get(DIE_ENV)
    if wanted and f"{point}:{number}" in (w.strip() for w in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)
