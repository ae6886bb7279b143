"""GPU session, step 1: `pytest -m cuda` (tests/test_cuda.py), with every test's outcome, time and
failure message recorded as it ends (OUT/tests.jsonl, by the `pytest_record` plugin beside this
file), summed up in OUT/tests.json, and the whole output in OUT/cuda_tests.log.

    python benchmarks/gpu/cuda_tests.py --out DIR [--dry-run]

--dry-run runs the same checks on the CPU (MIM_HUB_CUDA_TESTS_ON_CPU=1: aot_eager for inductor,
gloo for NCCL, two methods instead of every one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def summary(record_path: str, exit_code: int | None, device: str) -> dict:
    """tests.json's content from the plugin's records (exit_code None: the run was cut off)."""
    rows = []
    if os.path.isfile(record_path):
        with open(record_path) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "error", "skipped")}
    return {"exit_code": exit_code, "counts": counts, "tests": rows, "device": device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    record = os.path.join(args.out, "tests.jsonl")
    if os.path.exists(record):
        os.remove(record)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MIM_HUB_TEST_RECORD": record,
           "PYTHONPATH": os.path.dirname(os.path.abspath(__file__)) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.dry_run:
        env["MIM_HUB_CUDA_TESTS_ON_CPU"] = "1"
    argv = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-rfE", "-p", "no:cacheprovider", "-p", "no:logging",
            "-p", "pytest_record"]
    with open(os.path.join(args.out, "cuda_tests.log"), "w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
    result = summary(record, code, "cpu (dry run)" if args.dry_run else "cuda")
    with open(os.path.join(args.out, "tests.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"cuda tests: {result['counts']}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
