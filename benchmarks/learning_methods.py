"""The eight methods' small digits models and their pre-training, for the learning protocol
(`python benchmarks/learning.py --method all`; the evaluations are learning_protocol.py's).

Each method's small digits model (32 px, patch 4 or 8, 64 wide, 3-4 layers; SparK: a small ResNet
at 64 px) is pre-trained with `mim-hub pretrain --method M` and the demo's recipe (AdamW at batch 32
and lr 5e-4, crop 0.5-1, no flips; the rest, such as betas and weight decay, the method's own:
SparK's LAMB is replaced by AdamW here, as its lr would mean another thing, a step relative to each
weight's norm) for the same wall-clock budget: MAE's `--mae-steps` steps. The budget is set by rates measured side by
side: every method runs a short `mim-hub pretrain` in alternating order (two rounds), its steady
rate is read from the training log (steps between the first and the last record, start-up left
out), and a method gets `mae_steps x its rate / MAE's rate` steps. Measured that way the ratios
hold on a loaded machine, where wall-clock seconds do not. The random init every comparison uses
is the seed's init that pre-training started from (`<method>-seed<S>/init`)."""

from __future__ import annotations

import json
import os
import statistics
import time

import torch

from mim_hub.models.catalogue import METHODS

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
    if method == "spark":  # a small ResNet (basic blocks, 1 per stage); its mask lives on the 1/32 grid, so 64 px gives
        # 2 x 2 mask cells (60%: 2 of the 4 masked) where 32 px would give one
        return mim_hub.SparKConfig(backbone="resnet", image_size=64, layer_type="basic", embedding_size=16, depths=[1, 1, 1, 1],
                                   hidden_sizes=[32, 64, 128, 128], decoder_hidden_size=64)
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def _pretrain(method: str, init_dir: str, out: str, steps: int, seed: int, log_every: int = 50) -> float:
    from mim_hub.cli import main

    started = time.time()
    code = main(["pretrain", "--method", method, "--model", init_dir, "--output-dir", out, "--dataset", "digits", "--max-steps", str(steps),
                 "--batch-size", "32", "--lr", "5e-4", "--optimizer", "adamw", "--warmup-steps", str(max(1, steps // 20)), "--crop-min-scale", "0.5", "--no-flip",
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


def ensure_pretrained(method: str, output_dir: str, *, steps: int, seed: int) -> float:
    """The method's seeded random init and its pre-training for `steps` (skipped if a finished
    one is there: it is saved atomically); returns the pre-training seconds."""
    folder = os.path.join(output_dir, f"{method}-seed{seed}")
    pretrained = os.path.join(folder, "pretrained")
    if os.path.exists(os.path.join(pretrained, "model.safetensors")):
        with open(os.path.join(pretrained, "log.jsonl")) as handle:
            return [json.loads(line) for line in handle if line.strip()][-1]["elapsed_s"]
    init_dir = _initial_model(method, folder, seed)
    return _pretrain(method, init_dir, pretrained, steps, seed)


def measured_rates(methods, output_dir: str, *, quick: bool = False) -> dict[str, dict]:
    """rates.json of `output_dir`: a resumed run keeps the budget it started with; methods added
    since are measured side by side with the reference (MAE) again, and their ratio is to that
    new measurement of MAE (the machine's load then, not the first run's)."""
    path = os.path.join(output_dir, "rates.json")
    rates = {}
    if os.path.exists(path):
        with open(path) as handle:
            rates = json.load(handle)
    missing = [method for method in methods if method not in rates]
    if missing:
        measured = relative_rates((["mae"] if "mae" not in missing and rates else []) + missing, output_dir,
                                  steps=20 if quick else 80, rounds=1 if quick else 2)
        rates.update({method: {**measured[method], "measured_with": sorted(measured)} for method in missing})
        with open(path, "w") as handle:
            json.dump(rates, handle, indent=1)
    return rates


def finished(output_dir: str, method: str, seed: int) -> bool:
    """Whether records.jsonl holds every unit of `method` and `seed` (frozen features and each
    fine-tune of both inits)."""
    from learning_protocol import EPOCHS, INITS, _records

    done = {(r["unit"], r.get("init")) for r in _records(os.path.join(output_dir, "records.jsonl")) if r["method"] == method and r["seed"] == seed}
    return ("frozen", None) in done and all((unit, init) in done for unit in EPOCHS for init in INITS)


def run_all(methods, seeds, output_dir: str, mae_steps: int, markdown: str | None = None, quick: bool = False) -> int:
    """Rates (measured once, kept in rates.json for a resumed run), then per seed: every method's
    pre-training and the protocol of learning_protocol.py (the sweep on seed 0). Records append to
    output_dir as they finish; with `markdown`, the tables are written there at the end."""
    from learning_protocol import run_protocol

    os.makedirs(output_dir, exist_ok=True)
    rates = measured_rates(methods, output_dir, quick=quick)

    def pretrained(method, seed):
        if finished(output_dir, method, seed):  # every unit recorded: its models are not needed again
            return
        steps = max(5, round((20 if quick else mae_steps) * rates[method]["vs_reference"]))
        seconds = ensure_pretrained(method, output_dir, steps=steps, seed=seed)
        print(f"{method} seed {seed}: pre-trained {steps} steps ({seconds:.0f} s)", flush=True)

    presets = None
    for seed in sorted(seeds, key=lambda s: s != 0):  # seed 0 first: its sweep sets the presets
        if seed == 0:  # the sweep compares all methods: every one pre-trained first
            for method in methods:
                pretrained(method, seed)
            presets = run_protocol(methods, seed, output_dir, presets=presets, quick=quick)
            continue
        for method in methods:  # later seeds method by method, so a cut-off run leaves whole methods
            pretrained(method, seed)
            run_protocol([method], seed, output_dir, presets=None, quick=quick)  # (the presets: read back from the seed-0 sweep)
    if markdown and not quick:
        from learning_report import write_report

        write_report(output_dir, markdown)
    return 0
