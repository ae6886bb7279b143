"""The methods' learning protocol on digits (`python benchmarks/learning.py --method all`).

Per method and seed, on the small digits models that `learning_methods.py` pre-trains:

- frozen features (mean-pooled): kNN (k 20, T 0.07), the linear probe (weight decay by 5-fold CV
  on train), and the position check: kNN with each test image's patches shuffled; pre-trained and
  the same architecture at random init (the seed's init, the one pre-training started from);
- fine-tuning, pre-trained and random init side by side, at three label budgets: all 1347
  training labels, and 13 and 2 labelled images per class (130 and 20 images: "10%" and "1%" of
  the labels), the rest of the set unlabelled. The low-label subsets are drawn (seeded, the same
  for every method) from the training split less a validation split of 10% (stratified, seed 0);
- the hyper-parameters: a preset per method, label budget and init, chosen by `sweep` on that
  validation split with the same grid (the same search budget) for pre-trained and random init:
  the 10% budget on its subset of the pool (SWEEP_GRID: layer decay), and all labels on the whole
  pool (FULL_SWEEP_GRID: epochs and layer decay), whose preset is the "full-preset" unit (every
  training label, the test split read once).

Fine-tunes keep their last epoch (no checkpoint selection) and read the test split once, at the
end. Seed 0's 10% runs are the sweep's chosen runs (the same seed, subset and settings: the same
model), scored once on the test split rather than trained again. Every finished unit (frozen features, or one fine-tune) is appended to `records.jsonl` in the
output folder, so a cut-off run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import time

LABEL_BUDGETS = {"10%": 13, "1%": 2}  # labelled images per class (130 and 20 of 1347: 9.7% and 1.5%)
VALIDATION_FRACTION, SPLIT_SEED = 0.1, 0
INITS = ("pre-trained", "random init")
# fine-tuning settings every run shares (the demo's augmentation: crop 0.5-1, no flips, batch 64);
# base lr is scaled by batch / 256: base 1e-2 is lr 2.5e-3
COMMON = dict(batch_size=64, weight_decay=0.05, label_smoothing=0.1, warmup_ratio=0.1, crop_min_scale=0.5, flip=False)
# the budget-dependent length: 220 and 660 steps for all labels, 120 and 100 for the low-label subsets
# ("full-preset": all labels at the epochs of the method's swept preset, None here)
EPOCHS = {"full": 10, "full30": 30, "10%": 40, "1%": 100, "full-preset": None}
QUICK_EPOCHS = {"full": 0.05, "full30": 0.05, "10%": 1, "1%": 1, "full-preset": 0.05}  # --quick: a smoke run of every path, no numbers
FIXED_FULL_UNITS = ("full", "full30")  # all labels at 10 and 30 epochs, one preset (FULL_PRESET); "full-preset": the method's swept one
# the sweeps' grids, the same for every method and init: the 10% budget's (its epochs: EPOCHS["10%"]) and all labels'
SWEEP_GRID = {"ld0.75": dict(base_lr=1e-2, layer_decay=0.75), "ld1.0": dict(base_lr=1e-2, layer_decay=1.0)}
FULL_SWEEP_GRID = {"30ep-ld0.75": dict(base_lr=1e-2, layer_decay=0.75, epochs=30), "60ep-ld0.75": dict(base_lr=1e-2, layer_decay=0.75, epochs=60),
                   "60ep-ld1.0": dict(base_lr=1e-2, layer_decay=1.0, epochs=60)}
GRIDS = {"10%": SWEEP_GRID, "all": FULL_SWEEP_GRID}  # sweep budget -> its grid
# a method's points beyond the shared grid, pre-trained and random init alike. SimMIM's: its ViT's only
# position signal is a relative table per block that fine-tuning grows from the pre-training's shared
# one, and its validation accuracy was still climbing at the shared grid's longest point (learning.md)
EXTRA_POINTS = {("simmim", "all"): {"100ep-ld1.0": dict(base_lr=1e-2, layer_decay=1.0, epochs=100)}}


def grid_of(method: str, budget: str) -> dict:
    """The sweep's grid for `method` at `budget`: the shared grid, then the method's extra points."""
    return {**GRIDS[budget], **EXTRA_POINTS.get((method, budget), {})}
FULL_PRESET = dict(base_lr=1e-2, layer_decay=0.75)  # the "full" and "full30" units: one preset for every method


def _records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _append(path: str, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _done(records, **key) -> dict | None:
    return next((r for r in records if all(r.get(k) == v for k, v in key.items())), None)


def splits():
    """(train, test, pool, validation): the digits splits, and the training split cut into the
    low-label pool and the validation split the sweep scores on."""
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.label_splits import validation_split

    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    pool, validation = validation_split(train, VALIDATION_FRACTION, SPLIT_SEED)
    return train, test, pool, validation


def labelled_subset(pool, budget: str, seed: int):
    """The `budget`'s labelled images of `pool` for `seed` (the same for every method)."""
    from mim_hub.training.label_splits import per_class_subset

    return pool.subset(per_class_subset(pool.labels, LABEL_BUDGETS[budget], seed))


def model_dirs(output_dir: str, method: str, seed: int) -> dict[str, str]:
    folder = os.path.join(output_dir, f"{method}-seed{seed}")
    return {"pre-trained": os.path.join(folder, "pretrained"), "random init": os.path.join(folder, "init")}


def fine_tune(model_dir: str, train, evaluation, out: str, *, seed: int, unit: str, settings: dict, quick: bool = False) -> dict:
    """One fine-tune of the protocol: `unit` ("full", "full30", "10%", "1%") sets the epochs,
    unless `settings` (a preset's) carries its own."""
    settings = dict(settings)
    epochs = settings.pop("epochs", None) or EPOCHS[unit]
    if quick:
        epochs = QUICK_EPOCHS[unit]
    from mim_hub.training.finetune import finetune

    started = time.time()
    _, metrics = finetune(model_dir, train, evaluation, output_dir=out, epochs=epochs, seed=seed, log_to_console=False, save_checkpoints=False,
                          **COMMON, **settings)
    return {"accuracy": metrics["eval_accuracy"], "lr": metrics["learning_rate"], "epochs": epochs,
            "train_images": len(train), "seconds": round(time.time() - started, 1), "output_dir": out, **settings}


def classifier_scores(model_dir: str, images) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a saved classifier on `images` (its own image processor,
    batches of 128; the plain loss, no label smoothing)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model, processor = AutoModelForImageClassification.from_pretrained(model_dir).eval(), AutoImageProcessor.from_pretrained(model_dir)
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(images), 128):
            indices = range(start, min(len(images), start + 128))
            pixels = processor([images.image(i) for i in indices], return_tensors="pt").pixel_values
            logits, labels = model(pixel_values=pixels).logits, torch.as_tensor(images.labels[start:start + len(indices)])
            correct += int((logits.argmax(-1) == labels).sum())
            loss += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
    return correct / len(images), loss / len(images)


def test_accuracy(model_dir: str, test) -> float:
    """Accuracy of a saved classifier on `test`."""
    return classifier_scores(model_dir, test)[0]


def _selection_key(record: dict, index: int) -> tuple:
    """How a sweep ranks its grid points: validation accuracy, then (on a tie: 136 images give ties
    once a budget nears 100%) the lower validation loss, then the earlier grid point."""
    return record["accuracy"], -record.get("validation_loss", 0.0), -index


def best_point(cell: dict[str, dict], points: list[str]) -> str:
    """The grid point a sweep cell ({point: record}) chooses (`_selection_key`)."""
    return max(points, key=lambda name: _selection_key(cell[name], points.index(name)))


def sweep(methods, output_dir: str, *, seed: int = 0, budgets=("10%", "all"), quick: bool = False) -> dict:
    """The sweep: every point of the budget's grid (GRIDS) fine-tuned on the seed's labelled images
    of the pool (the 10% subset; "all": the whole pool) and scored on the validation split, per
    method, budget and init; returns the presets {method: {budget: {init: {"name": grid point,
    **settings}}}} (the best validation accuracy; a tie goes to the lower validation loss, then to
    the first grid point)."""
    _, _, pool, validation = splits()
    path = os.path.join(output_dir, "sweep.jsonl")
    presets: dict = {}
    for budget in budgets:
        train = pool if budget == "all" else labelled_subset(pool, budget, seed)
        for method in methods:
            grid = grid_of(method, budget)
            for init, model_dir in model_dirs(output_dir, method, seed).items():
                cell = {}
                for name, settings in grid.items():
                    key = dict(method=method, seed=seed, budget=budget, init=init, point=name)
                    record = _done(_records(path), **key)
                    if record is None:
                        out = os.path.join(output_dir, "sweep", f"{method}-{budget}-{init.replace(' ', '-')}-{name}")
                        record = {**key, **fine_tune(model_dir, train, validation, out, seed=seed,
                                                     unit="full-preset" if budget == "all" else budget, settings=settings, quick=quick)}
                        record["validation_loss"] = classifier_scores(out, validation)[1]
                        _append(path, record)
                        print(f"sweep {method} {budget} {init} {name}: validation {100 * record['accuracy']:.1f} "
                              f"(loss {record['validation_loss']:.3f})", flush=True)
                    cell[name] = record
                best = best_point(cell, list(grid))
                presets.setdefault(method, {}).setdefault(budget, {})[init] = {"name": best, **grid[best]}
    return presets


def preset_name(method: str, budget: str, init: str) -> str:
    """The preset's name: budget "10%" (or "1%", which uses the 10% one) or "all" (the full-preset unit)."""
    labels = "all" if budget in ("all", "full-preset") else f"{budget.rstrip('%')}pct"
    return f"digits-small-{method}-{labels}-{'pretrained' if init == 'pre-trained' else 'random-init'}"


def run_seed(method: str, seed: int, output_dir: str, presets: dict, *, units=("frozen", "full", "10%", "1%", "full30"),
             quick: bool = False) -> list[dict]:
    """Every unit of `method` and `seed` not yet in records.jsonl, each appended when done."""
    from transformers import AutoImageProcessor, AutoModel

    from mim_hub.training.evaluate import evaluate_model, extract_features
    from mim_hub.training.position_check import shuffled_patch_knn

    train, test, pool, _ = splits()
    path = os.path.join(output_dir, "records.jsonl")
    dirs = model_dirs(output_dir, method, seed)
    new = []
    for unit in units:
        if unit == "frozen":
            if _done(_records(path), method=method, seed=seed, unit="frozen"):
                continue
            processor = AutoImageProcessor.from_pretrained(dirs["random init"])
            record = {"method": method, "seed": seed, "unit": "frozen"}
            for init, folder in dirs.items():
                model = AutoModel.from_pretrained(folder)
                scores = evaluate_model(model, processor, train, test, seed=seed, progress=True,
                                        **(dict(linear_epochs=5, linear_weight_decay=0.0) if quick else {}))
                features = extract_features(model, processor, train, return_labels=True)
                scores["knn_shuffled_patches"] = shuffled_patch_knn(model, processor, train, test, seed=seed, train_features=features)
                record[init] = scores
            record["pretrain_loss"] = pretrain_curve(dirs["pre-trained"])
            new.append(record)
            _append(path, record)
            print(f"{method} seed {seed} frozen: " + ", ".join(f"{i} knn {100 * record[i]['knn']:.1f} linear {100 * record[i]['linear']:.1f} "
                                                               f"shuffled {100 * record[i]['knn_shuffled_patches']:.1f}" for i in INITS), flush=True)
            continue
        for init, folder in dirs.items():
            if unit != "full-preset" and _done(_records(path), method=method, seed=seed, unit=unit, init=init):
                continue
            if unit in FIXED_FULL_UNITS:
                images, settings, name = train, FULL_PRESET, f"digits-small-{unit}"
            elif unit == "full-preset":  # every training label, the epochs and layer decay the "all" sweep chose
                chosen = presets[method]["all"][init]
                images, settings, name = train, {k: v for k, v in chosen.items() if k != "name"}, preset_name(method, "all", init)
                trained = {**settings, "epochs": QUICK_EPOCHS[unit] if quick else settings["epochs"]}  # what its record holds
                if _done(_records(path), method=method, seed=seed, unit=unit, init=init, **trained):
                    continue  # (a record of another preset, from before the sweep grew, stays as history; the table shows the newest)
            else:
                images = labelled_subset(pool, unit, seed)
                chosen = presets[method][unit][init]
                settings, name = {k: v for k, v in chosen.items() if k != "name"}, preset_name(method, unit, init)
            swept = _done(_records(os.path.join(output_dir, "sweep.jsonl")), method=method, seed=seed, budget=unit, init=init,
                          point=presets.get(method, {}).get(unit, {}).get(init, {}).get("name"))
            if swept and os.path.exists(os.path.join(swept.get("output_dir", ""), "model.safetensors")):
                # the sweep trained this very model (same seed, subset and settings): its test accuracy, read once
                record = {"method": method, "seed": seed, "unit": unit, "init": init, "preset": name,
                          **{k: v for k, v in swept.items() if k not in ("method", "seed", "budget", "init", "point", "accuracy")},
                          "accuracy": test_accuracy(swept["output_dir"], test), "validation_accuracy": swept["accuracy"],
                          "from_sweep": True}
            else:
                out = os.path.join(output_dir, f"{method}-seed{seed}", "finetuned", f"{unit.rstrip('%')}-{init.replace(' ', '-')}")
                record = {"method": method, "seed": seed, "unit": unit, "init": init, "preset": name,
                          **fine_tune(folder, images, test, out, seed=seed, unit=unit, settings=settings, quick=quick)}
            new.append(record)
            _append(path, record)
            print(f"{method} seed {seed} {unit} {init}: test {100 * record['accuracy']:.1f} (lr {record['lr']:.3g}, {record['seconds']:.0f} s)",
                  flush=True)
    return new


def pretrain_curve(pretrained_dir: str, points: int = 40) -> list[list[float]]:
    """[[step, loss], ...] of the pre-training log, at most `points` of them (for the figure)."""
    log = _records(os.path.join(pretrained_dir, "log.jsonl"))
    log = [r for r in log if "loss" in r]
    every = max(1, len(log) // points)
    return [[r["step"], round(r["loss"], 5)] for r in log[::every]]


def _stat(values: list[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def frozen_table(records: list[dict]) -> str:
    lines = ["| method | seeds | kNN pre-trained | kNN random init | linear pre-trained | linear random init | "
             "kNN shuffled patches, pre-trained | kNN shuffled patches, random init |", "|---|---|---|---|---|---|---|---|"]
    frozen = [r for r in records if r["unit"] == "frozen"]
    for method in dict.fromkeys(r["method"] for r in frozen):
        rs = sorted((r for r in frozen if r["method"] == method), key=lambda r: r["seed"])
        cells = [_stat([r[init][m] for r in rs]) for m in ("knn", "linear") for init in INITS]
        cells += [_stat([r[init]["knn_shuffled_patches"] for r in rs]) for init in INITS]
        lines.append(f"| {method} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell_records(tuned: list[dict], method: str, unit: str, init: str) -> list[dict]:
    """The records of one row's cell: for the full-preset unit only those at the settings of its
    newest record (the preset its sweep chose last; seeds run before the sweep grew are left out)."""
    rows = [r for r in tuned if r["method"] == method and r["unit"] == unit and r["init"] == init]
    if unit != "full-preset" or not rows:
        return rows
    keys = ("epochs", "layer_decay", "base_lr")
    return [r for r in rows if all(r[k] == rows[-1][k] for k in keys)]


def finetune_table(records: list[dict]) -> str:
    lines = ["| method | labels | seeds | pre-trained | random init | pre-trained - random init (per seed) | lr (pre-trained / random init) | "
             "layer decay (pre-trained / random init) | epochs (pre-trained / random init) |", "|---|---|---|---|---|---|---|---|---|"]
    tuned = [r for r in records if r["unit"] != "frozen"]
    for method in dict.fromkeys(r["method"] for r in tuned):
        for unit in ("full", "full30", "full-preset", "10%", "1%"):
            by_init = {init: {r["seed"]: r for r in cell_records(tuned, method, unit, init)} for init in INITS}
            seeds = sorted(set(by_init["pre-trained"]) & set(by_init["random init"]))
            if not seeds:
                continue
            pre, rnd = [by_init["pre-trained"][s] for s in seeds], [by_init["random init"][s] for s in seeds]
            gaps = ", ".join(f"{100 * (p['accuracy'] - r['accuracy']):+.1f}" for p, r in zip(pre, rnd))
            label = f"{unit} ({pre[0]['train_images']})"
            if unit in FIXED_FULL_UNITS:
                label = f"all ({pre[0]['train_images']}), {EPOCHS[unit]} epochs"
            elif unit == "full-preset":
                label = f"all ({pre[0]['train_images']}), the method's swept preset"
            lines.append(f"| {method} | {label} | {', '.join(map(str, seeds))} | {_stat([r['accuracy'] for r in pre])} | "
                         f"{_stat([r['accuracy'] for r in rnd])} | {gaps} | {pre[0]['lr']:.3g} / {rnd[0]['lr']:.3g} | "
                         f"{pre[0]['layer_decay']} / {rnd[0]['layer_decay']} | {pre[0]['epochs']:g} / {rnd[0]['epochs']:g} |")
    return "\n".join(lines)


def _swept_cells(sweep_records: list[dict], budget: str):
    """(method, init, {point: record}, best point) of every finished cell of `budget`'s sweep."""
    for method, init in dict.fromkeys((r["method"], r["init"]) for r in sweep_records if r["budget"] == budget):
        points = list(grid_of(method, budget))
        cell = {r["point"]: r for r in sweep_records if (r["method"], r["budget"], r["init"]) == (method, budget, init)}
        if set(points) <= set(cell):
            yield method, init, cell, best_point(cell, points)


def _sweep_cell(record: dict) -> str:
    """A grid point's validation accuracy (and its loss, where the sweep recorded it)."""
    loss = record.get("validation_loss")
    return f"{100 * record['accuracy']:.1f}" + ("" if loss is None else f" ({loss:.3f})")


def sweep_table(sweep_records: list[dict], budget: str = "10%") -> str:
    points = list(GRIDS[budget])  # the shared grid, then every method's extra points ("-" where a method has none)
    points += [p for (method, b), extra in EXTRA_POINTS.items() if b == budget for p in extra if p not in points]
    lines = ["| method | labels | init | " + " | ".join(f"{p} (validation)" for p in points) + " | preset |",
             "|---|---|---|" + "---|" * (len(points) + 1)]
    for method, init, cell, best in _swept_cells(sweep_records, budget):
        lines.append(f"| {method} | {budget} | {init} | " + " | ".join(_sweep_cell(cell[p]) if p in cell else "-" for p in points) +
                     f" | `{preset_name(method, budget, init)}` = {best} |")
    return "\n".join(lines)


def presets_from_sweep(sweep_records: list[dict]) -> dict:
    """{preset name: settings} of every finished sweep cell, plus the shared all-labels presets."""
    presets = {f"digits-small-{unit}": {**COMMON, **FULL_PRESET, "epochs": EPOCHS[unit]} for unit in FIXED_FULL_UNITS}
    for budget in GRIDS:
        for method, init, cell, best in _swept_cells(sweep_records, budget):
            grid = grid_of(method, budget)
            presets[preset_name(method, budget, init)] = {**COMMON, "epochs": EPOCHS.get(budget), **grid[best],
                                                          "chosen_from": {p: round(cell[p]["accuracy"], 4) for p in grid}}
    return presets


def write_presets(output_dir: str) -> dict:
    """presets.json in `output_dir`, from the sweep's records."""
    presets = presets_from_sweep(_records(os.path.join(output_dir, "sweep.jsonl")))
    with open(os.path.join(output_dir, "presets.json"), "w") as handle:
        json.dump(presets, handle, indent=1)
    return presets


def run_protocol(methods, seed: int, output_dir: str, *, presets: dict | None = None, quick: bool = False) -> dict:
    """One seed of the protocol, unit by unit across methods (frozen features of all methods first,
    then the sweeps when `presets` is None, the low-label fine-tunes, the all-labels fine-tunes);
    returns the presets (the 10% sweep's serve the 1% budget too: its 20 images leave too little
    to sweep on; the "all" sweep's, the full-preset unit)."""
    for method in methods:
        run_seed(method, seed, output_dir, {}, units=("frozen",), quick=quick)
    if presets is None:
        presets = sweep(methods, output_dir, seed=0, quick=quick)
        for method in presets:
            presets[method]["1%"] = dict(presets[method]["10%"])
        write_presets(output_dir)
    for units in (("10%", "1%"), ("full",), ("full30",), ("full-preset",)):
        for method in methods:
            run_seed(method, seed, output_dir, presets, units=units, quick=quick)
    return presets
