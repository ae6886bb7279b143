"""The reliability suite's figures: every hostile or broken checkpoint is tried through
`mim_hub.conversion.convert` and must be refused with a clear error, no payload running and no
output written; then a pre-training run is killed with SIGKILL many times, at points chosen by its
progress (after a logged step, and at each stage of writing a checkpoint: tests/kill_loop.py),
and resumed, and must end with the weights of an uninterrupted run.

The summary counts each class of round two (issue 22) on its own: cases tried / refused clearly
/ wrong (accepted, or refused with an unclear error); and, on a line of its own, each class of
round three (issue 34: the data layer, `tests/hostile_data.py`): cases tried / ok (refused
clearly or handled as documented) / wrong. Other modules' classes join through
`EXTRA_CLASSES`: a list of (name, [(case name, callable(folder) -> (ok, why)), ...]).

    python benchmarks/robustness.py
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from hostile_inputs import FILE_LEVEL, HOSTILE, METHODS, ROUND_TWO, try_one  # noqa: E402
from hostile_inputs_models import WRONG, run_cases, summary  # noqa: E402
from kill_loop import kill_loop  # noqa: E402

# modules of other case classes (each defines CLASSES like EXTRA_CLASSES above); absent ones are skipped
EXTRA_CLASS_MODULES = ("hostile_configs", "hostile_data")  # hostile_data: round three, the data layer (issue 34)
from hostile_inputs import RUN_CLASSES  # noqa: E402


def _extra_classes():
    classes = list(RUN_CLASSES)
    for name in EXTRA_CLASS_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        classes += list(getattr(module, "CLASSES", []))
    return classes


def _data_classes() -> list[str]:
    try:
        from hostile_data import CLASSES
    except ModuleNotFoundError:
        return []
    return [name for name, _ in CLASSES]


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of a pre-training run (at seeded points of its progress)")
    args = parser.parse_args()
    refused = tried_inputs = 0
    round_two = {m: name for name, makers in ROUND_TWO.items() for m in makers}
    counts: dict[str, list[int]] = {}  # class -> [tried, refused clearly, wrong]
    with tempfile.TemporaryDirectory() as folder:
        for method in METHODS:  # every converter: the file-level inputs; MAE also the broken state dicts
            for maker in HOSTILE if method == "mae" else FILE_LEVEL:
                sub = os.path.join(folder, f"{method}-{maker.__name__}")
                os.makedirs(sub)
                ok, why = try_one(maker, sub, method)
                refused += ok
                tried_inputs += 1
                if maker in round_two:
                    row = counts.setdefault(round_two[maker], [0, 0, 0])
                    row[0], row[1], row[2] = row[0] + 1, row[1] + ok, row[2] + (not ok)
                print(f"{'refused' if ok else 'FAILED '} {getattr(maker, 'method', method):10s} {maker.__name__:32s} {why}")
        for class_name, cases in _extra_classes():
            row = counts.setdefault(class_name, [0, 0, 0])
            for case_name, case in cases:
                sub = os.path.join(folder, f"extra-{class_name}-{case_name}".replace("/", "_").replace(" ", "_"))
                os.makedirs(sub)
                ok, why = case(sub)
                row[0], row[1], row[2] = row[0] + 1, row[1] + ok, row[2] + (not ok)
                print(f"{'refused' if ok else 'FAILED '} {class_name:10s} {case_name:32s} {why}")
    with tempfile.TemporaryDirectory() as folder:  # configs, image processors, from_pretrained, eval/finetune
        model_results = run_cases(folder)
    for group, name, verdict, why in model_results:
        print(f"{verdict:8s} {group:18s} {name:40s} {why}")
    with tempfile.TemporaryDirectory() as folder:
        survived, tried, identical = kill_loop(folder, kills=args.kills)
    data = _data_classes()  # round three's, printed on their own line
    classes = "; ".join(f"{name} {t}/{r}/{w}" for name, (t, r, w) in counts.items() if name not in data)
    wrong = sum(w for _, _, w in counts.values())
    data_wrong = sum(counts[name][2] for name in data if name in counts)
    print(f"hostile inputs tried / refused cleanly: {refused}/{tried_inputs} ({len(METHODS)} converters); kills survived / tried: {survived}/{tried}; "
          f"resumed run identical to an uninterrupted one: {identical}; nothing written half-way; {summary(model_results)}")
    print(f"round two, cases tried / refused clearly / wrong: {classes}; wrong in all: {wrong - data_wrong}")
    print("round three (the data layer), cases tried / ok / wrong: "
          + "; ".join(f"{name} {counts[name][0]}/{counts[name][1]}/{counts[name][2]}" for name in data if name in counts)
          + f"; wrong in all: {data_wrong}")
    model_ok = not any(r[2] == WRONG for r in model_results)
    return 0 if refused == tried_inputs and survived == tried and identical and wrong == 0 and model_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
