"""Timing helpers: warm-up, A/B interleaved repetitions, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize() -> None:
    """Wait for queued GPU work, so a call's time includes its kernels (CUDA runs asynchronously)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 7) -> dict[str, float]:
    """Median seconds per call of each function, running them in turn (A, B, A, B, ...) so slow
    drift of the machine (thermal, other load) affects every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
