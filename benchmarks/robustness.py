"""The reliability suite's figures: every hostile or broken checkpoint is tried through
`mim_hub.conversion.convert` and must be refused with a clear error, no payload running and no
output written; then a pre-training run is killed with SIGKILL at random moments and resumed,
and must end with the weights of an uninterrupted run.

    python benchmarks/robustness.py
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from hostile_inputs import FILE_LEVEL, HOSTILE, METHODS, try_one  # noqa: E402
from hostile_inputs_models import WRONG, run_cases, summary  # noqa: E402
from kill_loop import kill_loop  # noqa: E402


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of a pre-training run")
    args = parser.parse_args()
    refused = tried_inputs = 0
    with tempfile.TemporaryDirectory() as folder:
        for method in METHODS:  # every converter: the file-level inputs; MAE also the broken state dicts
            for maker in HOSTILE if method == "mae" else FILE_LEVEL:
                sub = os.path.join(folder, f"{method}-{maker.__name__}")
                os.makedirs(sub)
                ok, why = try_one(maker, sub, method)
                refused += ok
                tried_inputs += 1
                print(f"{'refused' if ok else 'FAILED '} {method:10s} {maker.__name__:32s} {why}")
    with tempfile.TemporaryDirectory() as folder:  # configs, image processors, from_pretrained, eval/finetune
        model_results = run_cases(folder)
    for group, name, verdict, why in model_results:
        print(f"{verdict:8s} {group:18s} {name:40s} {why}")
    with tempfile.TemporaryDirectory() as folder:
        survived, tried, identical = kill_loop(folder, kills=args.kills)
    print(f"hostile inputs tried / refused cleanly: {refused}/{tried_inputs} ({len(METHODS)} converters); kills survived / tried: {survived}/{tried}; "
          f"resumed run identical to an uninterrupted one: {identical}; nothing written half-way; {summary(model_results)}")
    model_ok = not any(r[2] == WRONG for r in model_results)
    return 0 if refused == tried_inputs and survived == tried and identical and model_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
