"""The GPU session: the CUDA tests, the throughput table, the data-bound check and the digits-seg
learning result, in that order, each in its own process under its own time budget, the report
rewritten after every step (so a run cut off anywhere returns what it finished).

Run it through `benchmarks/gpu/run.sh` (which installs the carried wheels first); see docs/gpu.md.

    benchmarks/gpu/run.sh [--dry-run] [--step tests,throughput,data,segmentation] [--out DIR] [--budget SECONDS]

Writes into --out (default $OUT, else benchmarks/gpu/out) four files: BENCHMARKS_cuda.md,
results_cuda.json (every step's raw results), run.log (everything the steps printed) and
segmentation.tar (the segmentation pictures and report); the steps work in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from report import write_report  # noqa: E402

# name -> (script, seconds on the GPU, what it does). Together 9 minutes less the install and the report.
STEPS = {
    "tests": ("cuda_tests.py", 95, "pytest -m cuda (tests/test_cuda.py)"),
    "throughput": ("throughput.py", 140, "every method's pre-training step, bf16 autocast, batch 64/128/256, eager and compiled"),
    "data": ("data_bound.py", 85, "MAE ViT-B bf16 from prepare-shards webdataset shards: the data-wait fraction"),
    "segmentation": ("digits_seg.py", 220, "digits-seg: UperNet on the pre-trained MAE against random init, 3 seeds"),
}
DRY_RUN_BUDGET = 600  # per step, on a loaded 2-core CPU: generous, the dry run's sizes finish far inside it


def run_step(name: str, argv: list[str], budget: float, log) -> dict:
    """Run one step's process (a new process group: its workers and jobs go with it when the budget
    runs out); its output goes to the log and to stdout."""
    started = time.time()
    log.write(f"\n===== step {name}: {' '.join(argv)} (budget {budget:.0f} s)\n")
    log.flush()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    status = "done"
    try:
        deadline = started + budget
        for line in _lines_until(process, deadline):
            sys.stdout.write(line)
            log.write(line)
        if process.poll() is None:
            status = "cut at its budget"
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        elif process.returncode != 0:
            status = f"failed (exit {process.returncode})"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    seconds = round(time.time() - started, 1)
    log.write(f"===== step {name}: {status} after {seconds} s\n")
    log.flush()
    return {"status": status, "seconds": seconds, "budget_s": budget}


def _lines_until(process, deadline: float):
    """The process's output lines until it exits or the deadline passes (a reader thread, so a
    silent process cannot hold the deadline)."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            return
        try:
            line = lines.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if line is None:
            process.wait()
            return
        yield line


def step_argv(name: str, work: str, dry_run: bool, backbone: str | None) -> list[str]:
    argv = [sys.executable, os.path.join(HERE, STEPS[name][0]), "--out", work, *(["--dry-run"] if dry_run else [])]
    if name == "segmentation" and backbone:
        argv += ["--backbone", backbone]
    return argv


def machine(commit: str | None) -> dict:
    import platform

    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "commit": commit or _git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    multiprocessors=properties.multi_processor_count, driver=_driver())
    else:
        info["gpu"] = None
    return info


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes and a few iterations")
    parser.add_argument("--step", default=",".join(STEPS), help=f"comma-separated steps to run, of {', '.join(STEPS)}")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"), help="where the results go")
    parser.add_argument("--work", default=None, help="the steps' scratch folder (default: OUT/../mim-gpu-work, else a temporary one)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the steps together (default: their budgets, 540 s in all); each keeps its share")
    parser.add_argument("--backbone", default=os.path.join(ROOT, "outputs", "gpu-carry", "mae-digits"),
                        help="a carried pre-trained digits MAE for the segmentation step (default: pre-trained there if absent)")
    parser.add_argument("--commit", default=None, help="the commit measured (default: git's HEAD; the device copy has no .git)")
    args = parser.parse_args()
    steps = [s for s in args.step.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEPS)}")
    out = os.path.abspath(args.out)
    work = os.path.abspath(args.work or os.path.join(tempfile.gettempdir(), "mim-gpu-work"))
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    started = time.time()
    scale = 1.0 if args.budget is None else args.budget / sum(STEPS[s][1] for s in steps)
    session_path = os.path.join(work, "session.json")
    session = {"machine": machine(args.commit), "dry_run": args.dry_run, "steps": {}}
    if os.path.isfile(session_path) and len(steps) < len(STEPS):  # a single step re-run: keep the others' status
        with open(session_path) as handle:
            session["steps"] = {k: v for k, v in json.load(handle).get("steps", {}).items() if k not in steps}
    with open(os.path.join(out, "run.log"), "a") as log:
        log.write(f"\n##### session {session['machine']['date']} on {session['machine'].get('gpu') or 'the CPU (dry run)'}\n")
        for name in steps:
            script, seconds, what = STEPS[name]
            budget = DRY_RUN_BUDGET if args.dry_run else seconds * scale
            session["steps"][name] = {"what": what, **run_step(name, step_argv(name, work, args.dry_run, args.backbone), budget, log)}
            session["elapsed_s"] = round(time.time() - started, 1)
            with open(session_path, "w") as handle:
                json.dump(session, handle, indent=2)
            write_report(work, out)  # after every step: a session cut off later still returns this step's table
    failed = [f"{n} ({session['steps'][n]['status']})" for n in steps if session["steps"][n]["status"] != "done"]
    print(f"session: {len(steps) - len(failed)}/{len(steps)} steps done in {time.time() - started:.0f} s"
          + (f"; not done: {', '.join(failed)}" if failed else "") + f"; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
