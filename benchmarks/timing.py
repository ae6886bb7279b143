"""Timing helpers: warm-up, A/B interleaved repetitions, medians, and paired ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize() -> None:
    """Wait for queued GPU work, so a call's time includes its kernels (CUDA runs asynchronously)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved_samples(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 7) -> dict[str, list[float]]:
    """Seconds of every call of each function, run in rounds (A, B, ...), so that slow drift of the
    machine (thermal, other load) affects every contender alike. The order within a round is
    reversed every other round (A, B, then B, A), so no contender always runs right after the
    other (whose freed memory or cache state it would inherit)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_index in range(repeats):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[name]()
            synchronize()
            samples[name].append(time.perf_counter() - start)
    return samples


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 7) -> dict[str, float]:
    """Median seconds per call of each function (see `interleaved_samples`)."""
    return {name: statistics.median(values) for name, values in interleaved_samples(fns, warmup=warmup, repeats=repeats).items()}


def paired_ratio(other: list[float], ours: list[float]) -> dict[str, float]:
    """other / ours for the calls of the same round, summarised: the median and the quartiles.
    Both calls of a round ran within seconds of each other, so their ratio is much less disturbed
    by a shared machine's slow swings than the ratio of two medians."""
    ratios = sorted(o / u for o, u in zip(other, ours))
    if len(ratios) < 2:
        return {"median": ratios[0], "q1": ratios[0], "q3": ratios[0]}
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3}
