"""Peak memory of one call.

- GPU: CUDA's allocator statistics (`cuda_peak_bytes`).
- CPU, a model call in this process (`cpu_call_peak_bytes`): torch's profiler records every tensor
  allocation and free with its time; their running sum gives the peak above what was held when
  the (second, steady-state) call began. It is exact for tensors and needs no child process, so
  two contenders measured side by side are measured alike.
- CPU, a whole job such as loading or converting a checkpoint (`cpu_peak_bytes`): the peak
  resident set size of a fresh child process that runs only that job, which also counts memory
  that is not a tensor (file buffers, pickles)."""

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


def cpu_call_peak_bytes(fn) -> int:
    """Peak bytes of CPU tensor memory held during `fn()` above what was held when it began.

    `fn` runs twice under one profiler session and the second call is measured: the profiler
    only knows the size of blocks allocated while it records, so in the second call the frees
    of the first call's tensors (a training step frees the last step's gradients first) are
    counted too, the same way for every contender."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
        with record_function("measured call"):
            fn()
    events = prof.profiler.kineto_results.events()
    begin = min(event.start_ns() for event in events if event.name() == "measured call")
    # every allocation (+bytes) and free (-bytes) the allocator reported, in time order
    changes = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    held, start_level, peak = 0, None, 0
    for time_ns, change in changes:
        if start_level is None and time_ns >= begin:
            start_level = peak = held
        held += change
        if start_level is not None:
            peak = max(peak, held)
    return 0 if start_level is None else peak - start_level


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
