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
    """Peak resident-memory increase (bytes) while `code` runs after `setup`, in a child process:
    a thread samples VmRSS every 2 ms (ru_maxrss would also count the imports' own peak)."""
    script = (
        "import json, gc, threading, time\n"
        "def rss():\n"
        "    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024\n"
        f"{setup}\n"
        "gc.collect()\n"
        "base = rss(); peak = [base]; done = [False]\n"
        "def watch():\n"
        "    while not done[0]:\n"
        "        peak[0] = max(peak[0], rss()); time.sleep(0.002)\n"
        "t = threading.Thread(target=watch); t.start()\n"
        f"{code}\n"
        "peak[0] = max(peak[0], rss()); done[0] = True; t.join()\n"
        "print(json.dumps(peak[0] - base))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__)] + sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))
