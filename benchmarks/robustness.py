"""The hostile-input suite's figures: every hostile or broken checkpoint is tried through
`mim_hub.conversion.convert` and must be refused with a clear error, no payload running and no
output written.

    python benchmarks/robustness.py
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from hostile_inputs import HOSTILE, try_one  # noqa: E402


def main() -> int:
    refused = 0
    with tempfile.TemporaryDirectory() as folder:
        for maker in HOSTILE:
            ok, why = try_one(maker, folder)
            refused += ok
            print(f"{'refused' if ok else 'FAILED '} {maker.__name__:32s} {why}")
    print(f"hostile inputs: {refused}/{len(HOSTILE)} refused cleanly, nothing written half-way")
    return 0 if refused == len(HOSTILE) else 1


if __name__ == "__main__":
    raise SystemExit(main())
