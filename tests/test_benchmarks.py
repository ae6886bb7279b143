"""The benchmark harness: interleaving order, paired ratios, and one method's rows end to end
(tiny sizes: these check the harness, not the speed)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import timing  # noqa: E402


def test_rounds_alternate_their_order_and_ratios_are_paired():
    calls = []
    samples = timing.interleaved_samples({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=4)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(samples["a"]) == len(samples["b"]) == 4
    # a slow swing of the machine that hits both calls of a round cancels in the paired ratio
    ours = [1.0, 2.0, 1.0, 4.0, 1.0]
    other = [1.1, 2.2, 1.1, 4.4, 1.1]
    summary = timing.paired_ratio(other, ours)
    assert summary["median"] == pytest.approx(1.1) and summary["q1"] == pytest.approx(1.1) and summary["q3"] == pytest.approx(1.1)
    assert timing.paired_ratio([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == {"median": 2.0, "q1": 1.5, "q3": 2.5}


@pytest.mark.slow
def test_a_method_s_rows_carry_ratios_quartiles_peak_memory_and_the_bf16_step(tmp_path):
    import run
    from pairs import BF16_STEP, bf16_autocast_supported

    ceiling = {"fp32": 1e11, "bf16": 2e11}
    # aot_eager: the harness's compiled row without inductor's C++ build (minutes on 2 cores)
    rows = run.measure_method("mae", batch=2, device="cpu", quick=True, repeats=2, ceiling=ceiling, compile_backend="aot_eager")
    step = rows["pre-training step (fwd+bwd)"]
    other = "transformers ViTMAEForPreTraining"
    assert step["ratio"][other] > 0 and step["ratio_quartiles"][other][0] <= step["ratio"][other] <= step["ratio_quartiles"][other][1]
    assert step["ours"]["peak_gib"] > 0 and 0 < step["ours"]["flops_fraction_of_ceiling"]
    assert (BF16_STEP in rows) == bf16_autocast_supported("cpu")
    if BF16_STEP in rows:  # the same FLOPs, each against the ceiling of its own precision
        bf16 = rows[BF16_STEP]["ours"]
        assert bf16["flops_fraction_of_ceiling"] * bf16["ms"] * ceiling["bf16"] == pytest.approx(
            step["ours"]["flops_fraction_of_ceiling"] * step["ours"]["ms"] * ceiling["fp32"])
    report = {"machine": {"processor": "x", "threads": 2, "platform": "p", "torch": "t", "device": "cpu"}, "batch": 2, "repeats": 2,
              "matmul_ceiling_flops": ceiling, "models": {"mae": rows}}
    run.write_markdown(report, str(tmp_path / "B.md"))
    table = (tmp_path / "B.md").read_text()
    assert "| mae | pre-training step (fwd+bwd) |" in table and f"{step['ratio'][other]:.2f} (" in table
    # the A/A row: ours against an identical copy, reported as the run's noise floor
    from pairs import NOISE_FLOOR, NOISE_FLOOR_TWIN

    floor = rows[NOISE_FLOOR]
    assert set(floor) >= {"ours", NOISE_FLOOR_TWIN, "ratio", "ratio_quartiles"}
    assert f"Noise floor of this run: the MAE step against an identical copy of itself (a ratio of 1 by construction) measured {floor['ratio'][NOISE_FLOOR_TWIN]:.2f}" in table
    # the compiled step: against our eager step and transformers' eager ViTMAE, in one run, its compile time stated
    from pairs import COMPILED_STEP

    compiled = rows[COMPILED_STEP]
    assert set(compiled["ratio"]) == {"ours eager", other} and all(r > 0 for r in compiled["ratio"].values())
    assert compiled["compile_s"] > 0 and compiled["compiled_blocks"] > 0 and compiled["backend"] == "aot_eager"
    assert f"| mae | {COMPILED_STEP}, aot_eager, {compiled['compiled_blocks']} blocks, compiled in {compiled['compile_s']:.1f} s |" in table
    assert f"| ours eager | {compiled['ours eager']['ms']:.1f}" in table


def test_the_table_keeps_the_sections_other_scripts_wrote_into_it(tmp_path):
    import run

    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\nold table\n\n## Data at scale (`benchmarks/data_scale.py`)\n\n| format |\n\n## Later\n\nkept\n")
    report = {"machine": {"processor": "x", "threads": 2, "platform": "p", "torch": "t", "device": "cpu"}, "batch": 2, "repeats": 2,
              "matmul_ceiling_flops": {"fp32": 1e11},
              "backbone": {"b": {"ours_s": 1.0, "transformers_s": 1.1, "speedup_vs_transformers": 1.1, "q1": 1.0, "q3": 1.2, "feature_maps": [[8, 4, 4]]}}}
    run.write_markdown(report, str(path))
    text = path.read_text()
    assert "old table" not in text and "| b | 8x4x4 | 1.000 | 1.100 | 1.10 (1.00-1.20) |" in text
    assert text.endswith("\n## Data at scale (`benchmarks/data_scale.py`)\n\n| format |\n\n## Later\n\nkept\n")
    run.write_markdown(report, str(path))  # again: the same file, nothing doubled
    assert path.read_text() == text


def test_measures_filter_runs_only_the_rows_asked_for():
    import run
    from pairs import COMPILED_STEP

    rows = run.measure_method("mae", batch=2, device="cpu", quick=True, repeats=2, ceiling={"fp32": 1e11}, measures="compiled",
                              compile_backend="aot_eager")
    assert list(rows) == [COMPILED_STEP]


def test_the_six_method_budget_reads_the_steady_rate_and_scales_steps_by_rate_ratios(tmp_path, monkeypatch):
    import json

    import learning_methods

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 20, "elapsed_s": 30.0},  # the first record holds start-up and the workers' start: left out
        {"step": 40, "elapsed_s": 34.0}, {"step": 60, "elapsed_s": 38.0})))
    assert learning_methods.steady_rate(str(log)) == pytest.approx(40 / 8.0)
    log.write_text(json.dumps({"step": 20, "elapsed_s": 30.0}) + "\n")
    with pytest.raises(ValueError, match="two records"):
        learning_methods.steady_rate(str(log))

    # rounds alternate their order, and every method's rate is relative to MAE's median rate
    order, rate = [], {"mae": [4.0, 6.0], "cae": [2.0, 3.0]}

    def fake_pretrain(method, init_dir, out, steps, seed, log_every=50):
        order.append(method)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "log.jsonl"), "w") as handle:
            r = rate[method][len([m for m in order if m == method]) - 1]
            handle.write(json.dumps({"step": 0, "elapsed_s": 0.0}) + "\n" + json.dumps({"step": steps, "elapsed_s": steps / r}) + "\n")
        return 0.0

    monkeypatch.setattr(learning_methods, "_pretrain", fake_pretrain)
    monkeypatch.setattr(learning_methods, "_initial_model", lambda method, folder, seed: folder)
    rates = learning_methods.relative_rates(("mae", "cae"), str(tmp_path), steps=8, rounds=2)
    assert order == ["mae", "cae", "cae", "mae"]
    assert rates["mae"]["vs_reference"] == 1.0 and rates["cae"]["vs_reference"] == pytest.approx(2.5 / 5.0)
