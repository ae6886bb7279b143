"""The learning protocol's pieces: the patch-shuffle position check, the probe's progress, and one
method's protocol end to end in quick mode (tiny epochs: this checks the harness and its records,
not the numbers); the figures where matplotlib is installed."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

from mim_hub.training.position_check import shuffle_patches  # noqa: E402


def test_shuffle_patches_permutes_whole_patches_per_image():
    pixels = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    shuffled = shuffle_patches(pixels, 4, torch.Generator().manual_seed(0))

    def patches(x):
        return x.reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 4, -1)

    for image in range(2):  # the same patches, each intact, in another order
        original = {tuple(p.tolist()) for p in patches(pixels)[image]}
        assert {tuple(p.tolist()) for p in patches(shuffled)[image]} == original
    assert not torch.equal(shuffled, pixels)
    with pytest.raises(ValueError, match="does not tile"):
        shuffle_patches(pixels, 3, torch.Generator())


def test_mean_pooled_features_without_positions_ignore_the_shuffle_and_mae_s_do_not():
    """The check measures what it says: a model with no position information (SimMIM's ViT at
    init: no absolute positions, its relative table zero) gives the same features for shuffled
    patches; MAE (sin-cos positions) does not."""
    from mim_hub.auto import method_classes
    from tiny_models import TINY

    pixels = torch.randn(4, 3, 32, 32)
    shuffled = shuffle_patches(pixels, 4, torch.Generator().manual_seed(1))
    change = {}
    for method in ("simmim", "mae"):
        torch.manual_seed(0)
        config, _ = TINY[method]()
        model = method_classes(method)["model"](config).eval()
        with torch.no_grad():
            a = model(pixels).last_hidden_state[:, model.num_prefix_tokens:].mean(1)
            b = model(shuffled).last_hidden_state[:, model.num_prefix_tokens:].mean(1)
        change[method] = (a - b).abs().max().item() / a.abs().max().item()
    assert change["simmim"] < 1e-4 and change["mae"] > 1e-2


def test_the_probe_s_cross_validation_shows_progress(capsys):
    from mim_hub.training.evaluate import select_probe_weight_decay

    x, y = torch.randn(60, 4), torch.arange(60) % 3
    select_probe_weight_decay(x, y, grid=(0.0, 0.1), epochs=1, progress=True)
    assert "probe weight decay (5-fold CV x 3)" in capsys.readouterr().err


def test_one_method_s_protocol_runs_resumes_and_writes_its_tables(tmp_path, monkeypatch):
    import learning_methods
    import learning_protocol
    import learning_report

    real_splits = learning_protocol.splits

    def small_splits():  # a small test split keeps the quick run quick
        train, test, pool, validation = real_splits()
        return train, test.subset(range(30)), pool, validation.subset(range(20))

    monkeypatch.setattr(learning_protocol, "splits", small_splits)
    out = tmp_path / "run"
    out.mkdir()
    (out / "rates.json").write_text(json.dumps({"mae": {"vs_reference": 1.0}}))  # no rate measurement
    assert learning_methods.run_all(("mae",), [0], str(out), 20, None, quick=True) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    units = sorted((r["unit"], r.get("init", "")) for r in records)
    assert units == sorted([("frozen", "")] + [(u, i) for u in ("full", "full30", "full-preset", "10%", "1%") for i in ("pre-trained", "random init")])
    frozen = next(r for r in records if r["unit"] == "frozen")
    assert {"knn", "linear", "knn_shuffled_patches"} <= set(frozen["pre-trained"]) and frozen["pretrain_loss"]
    low = next(r for r in records if r["unit"] == "1%" and r["init"] == "random init")
    assert low["train_images"] == 20 and low["lr"] == pytest.approx(low["base_lr"] * 64 / 256)
    reused = [r for r in records if r["unit"] == "10%"]  # seed 0's 10% models are the sweep's chosen ones, scored on test
    assert all(r["from_sweep"] and 0 <= r["accuracy"] <= 1 and "validation_accuracy" in r for r in reused)
    sweep = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert len(sweep) == 2 * (len(learning_protocol.SWEEP_GRID) + len(learning_protocol.FULL_SWEEP_GRID))
    whole_pool = [r for r in sweep if r["budget"] == "all"]  # the all-labels sweep: the whole pool, scored on validation
    assert {r["train_images"] for r in whole_pool} == {len(real_splits()[2])} and {r["point"] for r in whole_pool} == set(learning_protocol.FULL_SWEEP_GRID)
    for init in ("pre-trained", "random init"):  # the full-preset unit: every training label, at the settings its own sweep chose
        cell = {r["point"]: r for r in whole_pool if r["init"] == init}
        assert all(r["validation_loss"] > 0 for r in cell.values())
        points = list(learning_protocol.FULL_SWEEP_GRID)
        best = learning_protocol.best_point(cell, points)
        tuned = next(r for r in records if r["unit"] == "full-preset" and r["init"] == init)
        assert tuned["train_images"] == 1347 and tuned["preset"] == learning_protocol.preset_name("mae", "all", init)
        assert tuned["layer_decay"] == learning_protocol.FULL_SWEEP_GRID[best]["layer_decay"] and "from_sweep" not in tuned
    # resumed: nothing is run again, not even the pre-training whose models are gone
    monkeypatch.setattr(learning_protocol, "fine_tune", lambda *a, **k: pytest.fail("a finished fine-tune ran again"))
    monkeypatch.setattr(learning_methods, "_pretrain", lambda *a, **k: pytest.fail("a finished method-seed was pre-trained again"))
    shutil.rmtree(out / "mae-seed0" / "pretrained")
    assert learning_methods.run_all(("mae",), [0], str(out), 20, None, quick=True) == 0
    markdown = tmp_path / "learning.md"
    markdown.write_text("# prose kept\n")
    learning_report.write_report(str(out), str(markdown), records_dir=str(tmp_path))
    text = markdown.read_text()
    assert text.startswith("# prose kept") and "| mae | 10% (130) | 0 |" in text and "digits-small-mae-10pct-pretrained" in text
    presets = json.loads((tmp_path / "learning_presets.json").read_text())
    assert presets["digits-small-mae-10pct-random-init"]["chosen_from"].keys() == learning_protocol.SWEEP_GRID.keys()
    assert presets["digits-small-mae-all-pretrained"]["chosen_from"].keys() == learning_protocol.FULL_SWEEP_GRID.keys()
    assert presets["digits-small-mae-all-pretrained"]["epochs"] in {g["epochs"] for g in learning_protocol.FULL_SWEEP_GRID.values()}
    assert "| mae | all (1347), the method's swept preset | 0 |" in text and "60ep-ld1.0 (validation)" in text
    learning_report.write_report(str(out), str(markdown), records_dir=str(tmp_path))  # rewritten in place, not appended
    assert markdown.read_text().count(learning_report.BEGIN) == 1


def test_a_sweep_breaks_accuracy_ties_by_validation_loss_then_grid_order():
    import learning_protocol

    records = [{"budget": "all", "method": "cae", "init": "pre-trained", "point": point, "accuracy": accuracy, **extra}
               for point, accuracy, extra in (("30ep-ld0.75", 1.0, {"validation_loss": 0.05}), ("60ep-ld0.75", 1.0, {"validation_loss": 0.02}),
                                              ("60ep-ld1.0", 0.99, {"validation_loss": 0.01}))]
    [(_, _, _, best)] = learning_protocol._swept_cells(records, "all")
    assert best == "60ep-ld0.75"  # 100% twice: the lower loss; the lowest loss loses on accuracy
    without_loss = [{k: v for k, v in r.items() if k != "validation_loss"} for r in records]  # records from before losses were kept
    assert list(learning_protocol._swept_cells(without_loss, "all"))[0][3] == "30ep-ld0.75"
    presets = learning_protocol.presets_from_sweep(records)
    assert presets["digits-small-cae-all-pretrained"]["epochs"] == 60 and presets["digits-small-cae-all-pretrained"]["layer_decay"] == 0.75
    assert "100.0 (0.020)" in learning_protocol.sweep_table(records, "all")


def test_a_method_s_extra_points_join_its_sweep_and_a_changed_preset_is_fine_tuned_again(tmp_path, monkeypatch):
    import learning_protocol

    monkeypatch.setattr(learning_protocol, "EXTRA_POINTS", {("cae", "all"): {"90ep-ld1.0": dict(base_lr=1e-2, layer_decay=1.0, epochs=90)}})
    assert list(learning_protocol.grid_of("cae", "all"))[-1] == "90ep-ld1.0" and "90ep-ld1.0" not in learning_protocol.grid_of("mae", "all")
    records = [{"budget": "all", "method": method, "init": "pre-trained", "point": point, "accuracy": 0.9 + 0.01 * k, "validation_loss": 0.1}
               for method in ("cae", "mae") for k, point in enumerate(learning_protocol.grid_of(method, "all"))]
    table = learning_protocol.sweep_table(records, "all")
    assert "90ep-ld1.0 (validation)" in table and table.splitlines()[-1].count(" - ") == 1  # mae: no such point
    assert learning_protocol.presets_from_sweep(records)["digits-small-cae-all-pretrained"]["epochs"] == 90

    calls = []

    def fake_fine_tune(model_dir, train, evaluation, out, *, seed, unit, settings, quick=False):
        calls.append(settings["epochs"])
        return {"accuracy": 0.97, "lr": 2.5e-3, "epochs": settings["epochs"], "train_images": len(train), "seconds": 1.0,
                **{k: v for k, v in settings.items() if k != "epochs"}}

    monkeypatch.setattr(learning_protocol, "fine_tune", fake_fine_tune)
    path = tmp_path / "records.jsonl"
    preset = {"cae": {"all": {init: {"name": "60ep-ld1.0", **learning_protocol.FULL_SWEEP_GRID["60ep-ld1.0"]} for init in learning_protocol.INITS}}}
    learning_protocol.run_seed("cae", 1, str(tmp_path), preset, units=("full-preset",))
    learning_protocol.run_seed("cae", 0, str(tmp_path), preset, units=("full-preset",))
    learning_protocol.run_seed("cae", 0, str(tmp_path), preset, units=("full-preset",))  # done: nothing again
    grown = {"cae": {"all": {init: {"name": "90ep-ld1.0", "base_lr": 1e-2, "layer_decay": 1.0, "epochs": 90} for init in learning_protocol.INITS}}}
    learning_protocol.run_seed("cae", 0, str(tmp_path), grown, units=("full-preset",))  # the sweep grew and chose another point
    assert calls == [60, 60, 60, 60, 90, 90]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["epochs"] for r in rows] == [60, 60, 60, 60, 90, 90]
    # the table's row: the newest preset only (seed 1 ran before the sweep grew and is left out)
    assert "| cae | all (1347), the method's swept preset | 0 | 97.0 | 97.0 | +0.0 | 0.0025 / 0.0025 | 1.0 / 1.0 | 90 / 90 |" \
        in learning_protocol.finetune_table(rows)


def test_a_method_added_to_a_resumed_run_is_timed_beside_mae_again(tmp_path, monkeypatch):
    import learning_methods

    kept = {"mae": {"steps_per_s": 4.0, "vs_reference": 1.0}, "cae": {"steps_per_s": 3.0, "vs_reference": 0.75}}
    (tmp_path / "rates.json").write_text(json.dumps(kept))
    calls = []

    def fake_rates(methods, output_dir, **_):
        calls.append(list(methods))
        return {"mae": {"steps_per_s": 2.0, "vs_reference": 1.0}, "spark": {"steps_per_s": 1.0, "vs_reference": 0.5}}

    monkeypatch.setattr(learning_methods, "relative_rates", fake_rates)
    rates = learning_methods.measured_rates(("mae", "cae", "spark"), str(tmp_path))
    assert calls == [["mae", "spark"]]  # the reference measured again, side by side with the new method
    assert rates["mae"] == kept["mae"] and rates["cae"] == kept["cae"]  # the budget the run started with
    assert rates["spark"]["vs_reference"] == 0.5 and rates["spark"]["measured_with"] == ["mae", "spark"]
    assert json.loads((tmp_path / "rates.json").read_text()) == rates
    assert learning_methods.measured_rates(("mae", "cae", "spark"), str(tmp_path)) == rates and len(calls) == 1


def _synthetic_records():
    records = []
    for method in ("mae", "cae"):
        for seed in (0, 1):
            frozen = {init: {"knn": 0.9 - 0.2 * k, "linear": 0.95 - 0.1 * k, "knn_shuffled_patches": 0.2 + 0.1 * seed} for k, init in
                      enumerate(("pre-trained", "random init"))}
            records.append({"method": method, "seed": seed, "unit": "frozen", **frozen, "pretrain_loss": [[50, 1.0], [100, 0.7]]})
            units = (("full", 0.98), ("10%", 0.8), ("1%", 0.5)) + ((("full-preset", 0.99),) if method == "cae" else ())
            for unit, accuracy in units:
                for k, init in enumerate(("pre-trained", "random init")):
                    records.append({"method": method, "seed": seed, "unit": unit, "init": init, "accuracy": accuracy - 0.1 * k,
                                    "lr": 2.5e-3, "base_lr": 1e-2, "layer_decay": 0.75, "epochs": 10, "train_images": 20})
    return records


def test_the_figures_are_drawn_from_records(tmp_path):
    from PIL import Image

    import learning_figures

    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _synthetic_records()))
    assert learning_figures.main(str(path), str(tmp_path / "figures")) == 0
    for name in ("methods.png", "label_budget.png", "pretraining_loss.png"):
        with Image.open(tmp_path / "figures" / name) as image:
            assert image.width > 400 and image.height > 300
    with Image.open(tmp_path / "figures" / "methods.png") as image:  # one panel a measure: CAE's swept all-labels preset is the sixth
        assert image.width == 6 * 4 * 120
    superseded = dict(_synthetic_records()[-1], unit="full-preset", method="cae", init="pre-trained", seed=0, accuracy=0.5, epochs=5)
    newest = [superseded] + [r for r in _synthetic_records() if r["unit"] == "full-preset"]  # an older preset's record first
    assert learning_figures._values(newest, "cae", "full-preset", "pre-trained") == [99.0, 99.0]  # the bar: the newest preset only
