"""A test-only hook: stop a training run at a named point of its progress, so that crash tests
kill it there instead of after a guessed number of seconds.

With the environment variable ``MIM_HUB_PAUSE_AT`` set to ``POINT:STEP`` (several separated by
commas), the main process, on reaching that point at that optimizer step, writes the line
``MIM_HUB_PAUSED POINT:STEP`` to stderr and then blocks until it is killed. The points:

- ``step``: optimizer step STEP is done and logged (before any checkpoint of that step);
- ``checkpoint-begin``: the temporary folder ``checkpoints/.tmp-step_STEP`` exists, still empty;
- ``checkpoint-written``: accelerate's files are in the temporary folder, ``state.json`` is not;
- ``checkpoint-rename``: ``state.json`` is written too, the folder not yet renamed into place;
- ``checkpoint-prune``: ``checkpoints/step_STEP`` is in place, older ones not yet removed.

With ``MIM_HUB_DIE_AT`` set to ``POINT:N``, the process that reaches that point kills itself
with SIGKILL (as the out-of-memory killer would): ``shard:N`` in the process about to write
shard N of `prepare-shards`.

Unset (always, outside tests) it costs one dictionary lookup per call and does nothing.
"""

from __future__ import annotations

import os
import sys
import threading

POINTS = ("step", "checkpoint-begin", "checkpoint-written", "checkpoint-rename", "checkpoint-prune")
ENV = "MIM_HUB_PAUSE_AT"
MARKER = "MIM_HUB_PAUSED"


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


DIE_ENV = "MIM_HUB_DIE_AT"


def die_if_asked(point: str, number: int) -> None:
    """SIGKILL this process if ``MIM_HUB_DIE_AT`` names this point and number."""
    wanted = os.environ.get(DIE_ENV)
    if wanted and f"{point}:{number}" in (w.strip() for w in wanted.split(",")):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
