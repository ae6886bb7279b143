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

from hostile_inputs import HOSTILE, try_one  # noqa: E402
from kill_loop import kill_loop  # noqa: E402


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of a pre-training run")
    args = parser.parse_args()
    refused = 0
    with tempfile.TemporaryDirectory() as folder:
        for maker in HOSTILE:
            ok, why = try_one(maker, folder)
            refused += ok
            print(f"{'refused' if ok else 'FAILED '} {maker.__name__:32s} {why}")
    with tempfile.TemporaryDirectory() as folder:
        survived, tried, identical = kill_loop(folder, kills=args.kills)
    print(f"hostile inputs tried / refused cleanly: {refused}/{len(HOSTILE)}; kills survived / tried: {survived}/{tried}; "
          f"resumed run identical to an uninterrupted one: {identical}; nothing written half-way")
    return 0 if refused == len(HOSTILE) and survived == tried and identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
