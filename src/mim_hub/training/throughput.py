"""Timing and throughput of a training loop, in one small class: how long the loop waited for
data, images per second, how long the data layer took to start and the first (compiling) step."""

from __future__ import annotations

import time


class Throughput:
    """Call `waiting()` before asking for a batch, `got_batch()` when it came, `count(images)` after
    each forward/backward and `stepped()` after each optimizer step; `record()` gives the numbers of the log line (the first record also
    carries the start-up figures: `data_index_s`, `data_first_batch_s`, and with compilation
    `compiled_blocks`, `first_step_s`)."""

    def __init__(self, data_index_s: float, compiled_blocks: int = 0):
        self.started, self.images, self.data_wait = time.time(), 0, 0.0
        self.data_index_s, self.compiled_blocks = data_index_s, compiled_blocks
        self.first_batch_s = self.first_step_s = None
        self._waiting, self._first_logged = time.perf_counter(), False

    def waiting(self) -> None:
        self._waiting = time.perf_counter()

    def got_batch(self) -> None:
        waited = time.perf_counter() - self._waiting
        self.data_wait += waited
        if self.first_batch_s is None:
            self.first_batch_s = waited

    def count(self, images: int) -> None:
        self.images += images

    def stepped(self) -> float | None:
        """The time to the first optimizer step when this was it (else None)."""
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.started
            return self.first_step_s
        return None

    def record(self) -> dict:
        elapsed = max(1e-9, time.time() - self.started)
        record = {"images_per_s": self.images / elapsed, "elapsed_s": time.time() - self.started,
                  "data_wait_fraction": round(self.data_wait / elapsed, 4)}
        if not self._first_logged:
            record["data_index_s"], record["data_first_batch_s"] = round(self.data_index_s, 3), round(self.first_batch_s or 0.0, 3)
            if self.compiled_blocks:
                record["compiled_blocks"], record["first_step_s"] = self.compiled_blocks, round(self.first_step_s or 0.0, 3)
            self._first_logged = True
        return record
