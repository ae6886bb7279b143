"""Peak memory of one call: CUDA's allocator statistics on GPU; on CPU, the peak resident set
size of a fresh child process that runs only that call (the honest number on CPU, where torch
does not track allocations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def cuda_peak_bytes(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def cpu_peak_bytes(code: str, setup: str = "") -> int:
    """Peak RSS increase (bytes) caused by running `code` after `setup`, in a child process."""
    script = (
        "import resource, json, gc\n"
        f"{setup}\n"
        "gc.collect()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps((peak - base) * 1024))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__)] + sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))
