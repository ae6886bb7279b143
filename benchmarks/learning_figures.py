"""The learning protocol's figures, from its records (matplotlib: `pip install 'mim-hub[plot]'`).

    python benchmarks/learning_figures.py [RECORDS.jsonl] [OUT_DIR]

Defaults: benchmarks/learning_protocol_records.jsonl -> benchmarks/figures/. Writes
- methods.png: per method, kNN, linear probe and full fine-tuning, pre-trained beside random init
  (bar: mean over seeds; dots: the seeds; error bar: the standard deviation);
- label_budget.png: per method, test accuracy against labelled images per class (2, 13, all),
  pre-trained against random init (line: mean; dots: seeds);
- pretraining_loss.png: per method, the pre-training loss (its own objective) against the step.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from learning_protocol import INITS, cell_records  # noqa: E402

COLOURS = {"pre-trained": "#1f77b4", "random init": "#ff7f0e"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the figures need matplotlib: pip install 'mim-hub[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _methods(records) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in records))


def _values(records, method: str, measure: str, init: str) -> list[float]:
    """Per-seed percentages of one bar: measure is 'knn', 'linear' (frozen) or a fine-tuning unit."""
    if measure in ("knn", "linear", "knn_shuffled_patches"):
        return [100 * r[init][measure] for r in records if r["method"] == method and r["unit"] == "frozen"]
    tuned = [r for r in records if r["unit"] != "frozen"]
    return [100 * r["accuracy"] for r in cell_records(tuned, method, measure, init)]  # (the swept preset: its newest settings, as the table)


def _saved(plt, fig, path: str) -> str:
    """`fig` laid out, written to `path` (120 dpi) and closed; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def methods_figure(records, path: str) -> str:
    plt = _pyplot()
    methods = _methods(records)
    full = "full30" if any(r["unit"] == "full30" for r in records) else "full"  # the longer all-labels fine-tune where it ran
    measures = [("knn", "kNN"), ("linear", "linear probe"), ("knn_shuffled_patches", "kNN, shuffled patches"),
                (full, f"fine-tuned, all labels ({'30' if full == 'full30' else '10'} epochs)"),
                ("10%", "fine-tuned, 13 labels/class")]
    if any(r["unit"] == "full-preset" for r in records):  # where a method's own all-labels preset was swept (no bar elsewhere)
        measures.insert(4, ("full-preset", "fine-tuned, all labels (swept preset)"))
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 4), sharey=True)
    width = 0.38
    for ax, (measure, title) in zip(axes, measures):
        for k, init in enumerate(INITS):
            for i, method in enumerate(methods):
                values = _values(records, method, measure, init)
                if not values:
                    continue
                x = i + (k - 0.5) * width
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.bar(x, statistics.mean(values), width, yerr=std, color=COLOURS[init], capsize=2, label=init if i == 0 else None)
                ax.scatter([x] * len(values), values, s=8, color="black", zorder=3)
        ax.set_title(title)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy on digits (%)")
    axes[0].legend(loc="lower left")
    seeds = sorted({r["seed"] for r in records})
    fig.suptitle(f"{len(methods)} methods, small digits models: pre-trained against random init (seeds {seeds}; bar = mean, dots = seeds, "
                 "error bar = std)")
    return _saved(plt, fig, path)


def label_budget_figure(records, path: str) -> str:
    plt = _pyplot()
    methods = _methods(records)
    full = "full30" if any(r["unit"] == "full30" for r in records) else "full"
    units = [("1%", 2), ("10%", 13), (full, 134.7)]  # labelled images per class (all: 1347 / 10 classes)
    fig, axes = plt.subplots(2, (len(methods) + 1) // 2, figsize=(max(9, 4 * ((len(methods) + 1) // 2)), 7), sharey=True,
                             squeeze=False)
    for ax, method in zip(axes.flat, methods):
        for init in INITS:
            xs, means = [], []
            for unit, per_class in units:
                values = _values(records, method, unit, init)
                if values:
                    xs.append(per_class)
                    means.append(statistics.mean(values))
                    ax.scatter([per_class] * len(values), values, s=10, color=COLOURS[init], alpha=0.6)
            ax.plot(xs, means, marker="o", color=COLOURS[init], label=init)
        ax.set_xscale("log")
        ax.set_xticks([2, 13, 134.7], ["2", "13", "all (135)"])
        ax.set_title(method)
        ax.set_xlabel("labelled training images per class (log scale)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("test accuracy after fine-tuning (%)")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower right")
    fig.suptitle("Fine-tuning as the labels grow: pre-trained against random init\n(line = mean over seeds, dots = seeds)")
    return _saved(plt, fig, path)


def pretraining_loss_figure(records, path: str) -> str:
    plt = _pyplot()
    frozen = [r for r in records if r["unit"] == "frozen" and r.get("pretrain_loss")]
    methods = _methods(frozen)
    fig, axes = plt.subplots(2, (len(methods) + 1) // 2, figsize=(max(9, 4 * ((len(methods) + 1) // 2)), 7), squeeze=False)
    for ax, method in zip(axes.flat, methods):
        for r in (r for r in frozen if r["method"] == method):
            steps, losses = zip(*r["pretrain_loss"])
            ax.plot(steps, losses, label=f"seed {r['seed']}")
        ax.set_title(method)
        ax.set_xlabel("pre-training step (batch 32)")
        ax.set_ylabel("training loss (the method's own objective)")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    fig.suptitle("Pre-training loss per method\n(logged every 50 steps; the objectives differ, so the scales are not comparable)")
    return _saved(plt, fig, path)


def main(records_path: str, out_dir: str) -> int:
    if os.path.isdir(records_path):  # a run's output folder
        records_path = os.path.join(records_path, "records.jsonl")
    records = _load(records_path)
    os.makedirs(out_dir, exist_ok=True)
    for draw, name in ((methods_figure, "methods.png"), (label_budget_figure, "label_budget.png"),
                       (pretraining_loss_figure, "pretraining_loss.png")):
        print(draw(records, os.path.join(out_dir, name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "learning_protocol_records.jsonl"),
                  sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "figures")))
