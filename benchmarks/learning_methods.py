"""One learning protocol for all six methods (`python benchmarks/learning.py --method all`).

Each method's small digits model (32 px, patch 4 or 8, 64 wide, 3-4 layers) is pre-trained with
`mim-hub pretrain --method M` and the demo's recipe (batch 32, lr 5e-4, crop 0.5-1, no flips) for
the same wall-clock budget: MAE's `--mae-steps` steps. The budget is set by rates measured side by
side: every method runs a short `mim-hub pretrain` in alternating order (two rounds), its steady
rate is read from the training log (steps between the first and the last record, start-up left
out), and a method gets `mae_steps x its rate / MAE's rate` steps. Measured that way the ratios
hold on a loaded machine, where wall-clock seconds do not. Then, on frozen mean-pooled features:
kNN (k 20, T 0.07) and the linear probe with its weight decay chosen by 5-fold cross-validation on
the training split, against the same architecture at random initialisation and raw pixels; and the
fine-tuned accuracy (Trainer, the demo's fine-tuning recipe, 10 epochs). Per method and seed, a JSON
record.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import torch

from mim_hub.models.catalogue import METHODS

_RAW: dict[int, dict] = {}
VIT = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128)
DECODER = dict(decoder_hidden_size=64, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=128)


def small_config(method: str):
    import mim_hub

    if method == "mae":
        return mim_hub.MAEConfig(**VIT, **DECODER, norm_pix_loss=True)
    if method == "color_mae":  # generated green-noise masks (no download)
        return mim_hub.ColorMAEConfig(**VIT, **DECODER, norm_pix_loss=True, noise_pattern_count=8, noise_pattern_size=16)
    if method == "simmim":
        return mim_hub.SimMIMConfig(backbone="vit", mask_patch_size=8, **VIT)
    if method == "cae":  # the weightless colour quantiser stands in for the DALL-E tokenizer
        return mim_hub.CAEConfig(**VIT, **DECODER, regressor_num_hidden_layers=1, regressor_num_attention_heads=2, vocab_size=64,
                                 num_masking_patches=32)
    if method == "mr_mae":  # no mimic teachers offline: its pixel branch only
        return mim_hub.MRMAEConfig(image_size=32, patch_size=8, conv_hidden_sizes=[16, 32], conv_depths=[1, 1], conv_patch_sizes=[2, 2],
                                   conv_intermediate_sizes=[32, 64], hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                                   intermediate_size=128, **DECODER, norm_pix_loss=True)
    if method == "crate_mae":
        return mim_hub.CrateMAEConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                                      decoder_num_hidden_layers=1, decoder_num_attention_heads=2)
    if method == "hpm":  # HPM's scripts: no norm_pix_loss; the hard-patch share rises over the run's epochs
        return mim_hub.HPMConfig(**VIT, **DECODER)
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def _pretrain(method: str, init_dir: str, out: str, steps: int, seed: int, log_every: int = 50) -> float:
    from mim_hub.cli import main

    started = time.time()
    code = main(["pretrain", "--method", method, "--model", init_dir, "--output-dir", out, "--dataset", "digits", "--max-steps", str(steps),
                 "--batch-size", "32", "--lr", "5e-4", "--warmup-steps", str(max(1, steps // 20)), "--crop-min-scale", "0.5", "--no-flip",
                 "--seed", str(seed), "--save-every", "0", "--log-every", str(log_every)])
    if code != 0:
        raise RuntimeError(f"pre-training {method} failed (exit {code})")
    return time.time() - started


def _initial_model(method: str, folder: str, seed: int) -> str:
    """The method's small model at random initialisation (seeded), saved with its processor."""
    from mim_hub.auto import method_classes
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.pretrain import dataset_statistics

    init_dir = os.path.join(folder, "init")
    torch.manual_seed(seed)
    model = method_classes(method)["pretraining"](small_config(method))
    model.save_pretrained(init_dir)
    mean, std = dataset_statistics(load_digits_dataset("train"))
    # the demo's preprocessing, stated: a plain resize to 32 x 32 (crop_pct 1.0), the digits' own statistics;
    # pre-training from init_dir keeps this processor and its mean/std
    method_classes(method)["image_processor"].for_image_size(model.config.image_size, crop_pct=1.0, crop_mode="squash", image_mean=list(mean),
                                                             image_std=list(std)).save_pretrained(init_dir)
    return init_dir


def steady_rate(log_path: str) -> float:
    """Steps per second between the first and the last record of a pre-training log (the
    start-up and the first steps, which hold the workers' start, left out)."""
    with open(log_path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    first, last = records[0], records[-1]
    if last["step"] <= first["step"]:
        raise ValueError(f"{log_path}: needs two records at different steps to give a rate")
    return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def relative_rates(methods, output_dir: str, *, steps: int = 80, rounds: int = 2) -> dict[str, dict]:
    """Each method's steady pre-training rate, measured side by side: `rounds` short runs per
    method in alternating order; per method the median rate and its ratio to MAE's (or to the
    first method's, without MAE)."""
    folder = os.path.join(output_dir, "rates")
    inits = {method: _initial_model(method, os.path.join(folder, method), 0) for method in methods}
    rates: dict[str, list[float]] = {method: [] for method in methods}
    for round_index in range(rounds):
        order = list(methods) if round_index % 2 == 0 else list(reversed(methods))
        for method in order:
            run = os.path.join(folder, method, f"round{round_index}")
            _pretrain(method, inits[method], run, steps, 0, log_every=steps // 4)
            rates[method].append(steady_rate(os.path.join(run, "log.jsonl")))
    reference = "mae" if "mae" in rates else methods[0]
    median = {method: statistics.median(values) for method, values in rates.items()}
    return {method: {"steps_per_s": median[method], "rounds": values, "vs_reference": median[method] / median[reference]}
            for method, values in rates.items()}


def run_method(method: str, output_dir: str, *, steps: int, seed: int, finetune_epochs: float = 10, quick: bool = False) -> dict:
    """One method and seed, pre-trained for `steps`. `quick`: a smoke run of the code path (probe
    5 epochs, no CV, 0.2 fine-tuning epochs), no numbers."""
    from transformers import AutoModel

    from mim_hub.data import load_digits_dataset
    from mim_hub.training.demo import pixel_features
    from mim_hub.training.evaluate import evaluate_model, knn_accuracy, linear_probe
    from mim_hub.training.finetune import finetune

    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    folder = os.path.join(output_dir, f"{method}-seed{seed}")
    init_dir = _initial_model(method, folder, seed)
    pretrained = os.path.join(folder, "pretrained")
    if os.path.exists(os.path.join(pretrained, "model.safetensors")):  # a finished pre-training (saved atomically) of a resumed run
        with open(os.path.join(pretrained, "log.jsonl")) as handle:
            seconds = [json.loads(line) for line in handle if line.strip()][-1]["elapsed_s"]
    else:
        seconds = _pretrain(method, init_dir, pretrained, steps, seed)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(init_dir)
    record = {"method": method, "seed": seed, "steps": steps, "pretrain_s": round(seconds, 1)}
    for name, path in (("pre-trained", os.path.join(folder, "pretrained")), ("random init", init_dir)):
        record[name] = evaluate_model(AutoModel.from_pretrained(path), processor, train, test, seed=seed,
                                      **(dict(linear_epochs=5, linear_weight_decay=0.0) if quick else {}))
    if seed not in _RAW:  # the same for every method: computed once per seed
        raw_train, raw_test = pixel_features(train), pixel_features(test)
        _RAW[seed] = {"knn": knn_accuracy(raw_train, train.labels, raw_test, test.labels),
                      **linear_probe(raw_train, train.labels, raw_test, test.labels, seed=seed,
                                     **(dict(epochs=5, weight_decay=0.0) if quick else {}))}
    record["raw pixels"] = _RAW[seed]
    _, metrics = finetune(os.path.join(folder, "pretrained"), train, test, output_dir=os.path.join(folder, "finetuned"),
                          epochs=0.2 if quick else finetune_epochs, batch_size=64, base_lr=2e-3, layer_decay=0.75, drop_path=0.1, crop_min_scale=0.5,
                          flip=False, seed=seed,
                          log_to_console=False)
    record["fine-tuned"] = metrics.get("eval_accuracy")
    return record


def table(records: list[dict]) -> str:
    lines = ["| method | steps (s) | kNN pre-trained | kNN random init | linear pre-trained | linear random init | fine-tuned | ahead of random init? |",
             "|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]

        def m(key, metric):
            values = [100 * r[key][metric] for r in rs]
            return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

        knn, knn0, lin, lin0 = m("pre-trained", "knn"), m("random init", "knn"), m("pre-trained", "linear"), m("random init", "linear")
        ft = statistics.mean(100 * r["fine-tuned"] for r in rs)
        ahead = ("yes" if knn[0] > knn0[0] and lin[0] > lin0[0] else
                 f"no ({'kNN' if knn[0] <= knn0[0] else ''}{' and ' if knn[0] <= knn0[0] and lin[0] <= lin0[0] else ''}"
                 f"{'linear' if lin[0] <= lin0[0] else ''} at or below random init)")
        steps = "/".join(str(r["steps"]) for r in rs)
        secs = "/".join(f"{r['pretrain_s']:.0f}" for r in rs)
        lines.append(f"| {method} | {steps} ({secs}) | {knn[0]:.1f} +- {knn[1]:.1f} | {knn0[0]:.1f} +- {knn0[1]:.1f} | "
                     f"{lin[0]:.1f} +- {lin[1]:.1f} | {lin0[0]:.1f} +- {lin0[1]:.1f} | {ft:.1f} | {ahead} |")
    raw = records[0]["raw pixels"]
    lines.append(f"| raw pixels | | {100 * raw['knn']:.1f} | | {100 * raw['linear']:.1f} | | | |")
    return "\n".join(lines)


def run_all(methods, seeds, output_dir: str, mae_steps: int, markdown: str, quick: bool = False) -> int:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "learning_methods.jsonl")
    rates_path = os.path.join(output_dir, "rates.json")
    if os.path.exists(rates_path):  # a resumed run keeps the budget it started with
        with open(rates_path) as handle:
            rates = json.load(handle)
    else:
        rates = relative_rates(methods, output_dir, steps=20 if quick else 80, rounds=1 if quick else 2)
        with open(rates_path, "w") as handle:
            json.dump(rates, handle, indent=1)
    done = []
    if os.path.exists(path):  # resume: the (method, seed) pairs already recorded are not run again
        with open(path) as handle:
            done = [json.loads(line) for line in handle if line.strip()]
    records = [r for r in done if r["method"] in methods and r["seed"] in seeds]
    for seed in seeds:
        for method in methods:
            if any(r["method"] == method and r["seed"] == seed for r in records):
                continue
            steps = max(5, round((20 if quick else mae_steps) * rates[method]["vs_reference"]))
            record = run_method(method, output_dir, steps=steps, seed=seed, quick=quick)
            record["vs_mae_rate"] = round(rates[method]["vs_reference"], 3)
            records.append(record)
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    if quick:
        print(table(records))
        return 0
    rate_line = ", ".join(f"{m} {rates[m]['vs_reference']:.2f}" for m in methods)
    text = (f"\n## All six methods, one protocol (`benchmarks/learning.py --method all`)\n\n"
            f"Seeds {list(seeds)}; each method's small digits model (64 wide) pre-trained for the wall-clock budget of {mae_steps} MAE "
            f"steps (batch 32, lr 5e-4, crop 0.5-1, no flips): a method gets {mae_steps} x its steady pre-training rate / MAE's, the rates "
            f"measured side by side in alternating short runs ({rate_line}). kNN (k 20, T 0.07) and linear probe (weight decay by "
            f"5-fold CV on train) on frozen mean-pooled features; fine-tuned: Trainer, the demo's recipe (10 epochs, lr 2e-3, layer decay 0.75, drop path 0.1). Mean +- std over seeds; the steps "
            f"column gives each seed's steps and pre-training seconds.\n\n" + table(records) + "\n")
    print(text)
    with open(markdown, "a") as handle:
        handle.write(text)
    return 0
