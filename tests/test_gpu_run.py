"""The prepared GPU run (benchmarks/gpu/run.sh, docs/gpu.md) cannot rot between the sessions that
have a GPU: its dry run runs every step on the CPU here, and the session's budget and report logic
are checked on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "gpu"))


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu", "run.sh"), "--dry-run", "--out", str(out), "--work", str(work),
                           "--commit", "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["BENCHMARKS_cuda.md", "results_cuda.json", "run.log", "segmentation.tar"]
    results = json.loads((out / "results_cuda.json").read_text())
    assert results["session"]["dry_run"] and results["session"]["machine"]["commit"] == "test"
    assert {k: v["status"] for k, v in results["session"]["steps"].items()} == dict.fromkeys(("tests", "throughput", "data", "segmentation"), "done")
    tests = results["tests"]
    assert tests["counts"]["passed"] >= 10 and tests["counts"]["failed"] == tests["counts"]["error"] == tests["counts"]["skipped"] == 0
    rows = results["throughput"]["rows"]
    assert not [r for r in rows if "error" in r]
    from throughput import BUILDERS

    assert {r["method"] for r in rows} == set(BUILDERS)
    assert any(r["contender"] == "ours compiled" for r in rows)
    assert all(r["flops_per_step"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert results["data"]["runs"][0]["steady"]["data_wait_fraction"] is not None
    assert results["segmentation"]["runs"]["pretrained"] and results["segmentation"]["runs"]["scratch"]
    report = (out / "BENCHMARKS_cuda.md").read_text()
    assert "DRY RUN" in report and "## 4. digits-seg" in report and "Not run." not in report


def test_a_step_past_its_budget_is_stopped_with_its_children(tmp_path):
    """The budget is enforced on the step's whole process group, and the session goes on."""
    from session import run_step

    marker = tmp_path / "child.pid"
    code = ("import os, subprocess, sys, time; "
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); open({str(marker)!r}, 'w').write(str(child.pid)); "
            "print('started', flush=True); time.sleep(600)")
    with open(tmp_path / "log", "w") as log:
        result = run_step("sleeper", [sys.executable, "-c", code], 3.0, log)
    assert result["status"] == "cut at its budget"
    pid = int(marker.read_text())
    for _ in range(100):  # SIGTERM is sent to the group; give the grandchild a moment to go
        if not running(pid):
            break
        subprocess.run([sys.executable, "-c", "pass"])
    assert not running(pid)
    assert "started" in (tmp_path / "log").read_text()


def running(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_failed_step_is_reported_and_targets_say_by_how_much(tmp_path):
    from report import markdown, throughput_targets
    from session import run_step

    with open(tmp_path / "log", "w") as log:
        assert run_step("bad", [sys.executable, "-c", "raise SystemExit(3)"], 60, log)["status"] == "failed (exit 3)"
    rows = [{"method": "mae", "batch": 256, "contender": "ours", "fraction_of_bf16_ceiling": 0.25, "reference": "transformers ViTMAEForPreTraining",
             "speedup_vs_reference": {"median": 1.5, "q1": 1.4, "q3": 1.6}},
            {"method": "mae", "batch": 256, "contender": "transformers ViTMAEForPreTraining", "fraction_of_bf16_ceiling": 0.17,
             "reference": "transformers ViTMAEForPreTraining"}]
    lines = "\n".join(throughput_targets(rows))
    assert "best 25.0%" in lines and "missed by 15.0%" in lines and "best 1.50x" in lines and "missed by 0.50x" in lines
    text = markdown({"session": {"dry_run": False, "machine": {"gpu": "H200"}, "steps": {}}, "tests": None, "throughput": None, "data": None,
                     "segmentation": None})
    assert text.count("Not run.") == 4
