"""How long the command line takes to start, side by side with `python -c "import torch"`.

Each round runs every command once in a fresh process (interleaved, the order alternating from
round to round, as `timing.interleaved_samples` does), so a swing of the machine hits all of a
round alike; the ratios are paired per round (median and quartiles). What is timed is the whole
process: interpreter start, imports, building the parser, printing the help.

    python benchmarks/cli_startup.py --repeats 7 --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

import timing  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = "python -c \"import torch\""
COMMANDS = {
    BASELINE: [sys.executable, "-c", "import torch"],
    "python -c \"import mim_hub\"": [sys.executable, "-c", "import mim_hub"],  # a user's import: registration imports transformers' modelling code
    "mim-hub --help": [sys.executable, "-m", "mim_hub", "--help"],
    "mim-hub pretrain --help": [sys.executable, "-m", "mim_hub", "pretrain", "--help"],
    "mim-hub finetune --help": [sys.executable, "-m", "mim_hub", "finetune", "--help"],
}
TARGET = 1.5  # docs/architecture.md: `mim-hub --help` at most 1.5x the import of torch


def run(command: list[str]):
    return lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})


def measure(repeats: int) -> dict:
    samples = timing.interleaved_samples({name: run(command) for name, command in COMMANDS.items()}, warmup=1, repeats=repeats)
    rows = {}
    for name, values in samples.items():
        seconds = statistics.median(values)
        rows[name] = {"seconds": seconds, "ratio_to_import_torch": timing.paired_ratio(values, samples[BASELINE])}
    return {"repeats": repeats, "rows": rows}


def markdown(report: dict) -> str:
    lines = ["## Command-line start-up (`benchmarks/cli_startup.py`)", "",
             f"Each command in a fresh process, {report['repeats']} interleaved rounds; the ratio is paired per round against "
             f"`{BASELINE}` (median, quartiles). Target for `mim-hub --help`: at most {TARGET}x. A user's `import mim_hub` "
             "registers every model with transformers' Auto classes, so imports transformers' modelling code; the command "
             "line's own process leaves that to the moment a command runs (docs/architecture.md, \"Why imports are where "
             "they are\"), and its parser is built from tables, so `--help` imports neither torch nor transformers.", "",
             "| command | median s | ratio to `import torch` |", "|---|---|---|"]
    for name, row in report["rows"].items():
        ratio = row["ratio_to_import_torch"]
        lines.append(f"| `{name}` | {row['seconds']:.2f} | {ratio['median']:.2f} ({ratio['q1']:.2f}-{ratio['q3']:.2f}) |")
    lines.append("")
    return "\n".join(lines)


def write_section(table: str, path: str) -> None:
    """Put `table` in place of the file's section of the same title (or at its end)."""
    text = open(path).read() if os.path.exists(path) else ""
    title = table.splitlines()[0]
    start = text.find(title)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + table + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + table
    with open(path, "w") as handle:
        handle.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "cli_startup.json"), help="results as JSON")
    parser.add_argument("--markdown", default=None, help="also write the table into this file's command-line section")
    args = parser.parse_args()
    report = measure(args.repeats)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=1)
    table = markdown(report)
    print(table)
    if args.markdown:
        write_section(table, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
