"""The learning protocol's tables in benchmarks/learning.md, from the records of a run.

    python benchmarks/learning_report.py outputs/learning_methods [benchmarks/learning.md]

Rewrites only the block between the BEGIN and END markers of the markdown (the prose around it is
written by hand from the numbers), and copies the run's records beside it: learning_protocol_records.jsonl
(frozen features and fine-tunes, one record per finished unit), learning_protocol_sweep.jsonl and
learning_presets.json (the named presets the sweep chose).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

from learning_protocol import (EPOCHS, EXTRA_POINTS, GRIDS, LABEL_BUDGETS, VALIDATION_FRACTION, _records, finetune_table,  # noqa: E402
                               frozen_table, presets_from_sweep, sweep_table)

BEGIN, END = "<!-- learning_protocol: BEGIN (written by benchmarks/learning_report.py) -->", "<!-- learning_protocol: END -->"
HERE = os.path.dirname(os.path.abspath(__file__))


def _copy_records(output_dir: str, records_dir: str) -> tuple[list[dict], list[dict]]:
    records = _records(os.path.join(output_dir, "records.jsonl"))
    sweep_records = _records(os.path.join(output_dir, "sweep.jsonl"))
    for name, target in (("records.jsonl", "learning_protocol_records.jsonl"), ("sweep.jsonl", "learning_protocol_sweep.jsonl")):
        source = os.path.join(output_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(records_dir, target))
    with open(os.path.join(records_dir, "learning_presets.json"), "w") as handle:
        json.dump(presets_from_sweep(sweep_records), handle, indent=1)
    return records, sweep_records


def block(records: list[dict], sweep_records: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in records})
    budgets = ", ".join(f"{b}: {k} per class" for b, k in LABEL_BUDGETS.items())
    epochs = ", ".join(f"{unit}: {'the swept preset' if n is None else n}" for unit, n in EPOCHS.items())
    return "\n".join([
        BEGIN, "",
        f"Seeds with records: {seeds}. Epochs: {epochs} (last epoch kept, test read once). Label budgets: {budgets}, drawn from "
        f"the training split less its {VALIDATION_FRACTION:.0%} validation split. Sweep grids: "
        + "; ".join(f"{budget}: " + ", ".join(f"{n} = {g}" for n, g in grid.items()) for budget, grid in GRIDS.items())
        + "".join(f"; {method}'s extra points ({budget}): {extra}" for (method, budget), extra in EXTRA_POINTS.items()) + ".", "",
        "### Frozen features (kNN, linear probe, position check)", "", frozen_table(records), "",
        "### Fine-tuning, pre-trained beside random init", "", finetune_table(records), "",
        "### The sweeps (seed 0, validation split) and the presets they chose", "",
        *[line for budget in GRIDS if any(r["budget"] == budget for r in sweep_records) for line in (sweep_table(sweep_records, budget), "")],
        END])


def write_report(output_dir: str, markdown: str, records_dir: str = HERE) -> str:
    """Rewrite the generated block of `markdown`; the records go to `records_dir`."""
    records, sweep_records = _copy_records(output_dir, records_dir)
    text = open(markdown).read() if os.path.exists(markdown) else ""
    generated = block(records, sweep_records)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + generated + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    with open(markdown, "w") as handle:
        handle.write(text)
    return generated


if __name__ == "__main__":
    print(write_report(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "learning.md")))
