"""The offline end-to-end demo, on scikit-learn's bundled digits (no network):

1. pre-train a small MAE (ViT 192 wide, 6 layers, patch 4, 32 px, mask 0.75, norm_pix_loss);
2. evaluate frozen features (kNN k=20 T=0.07, linear probe with its weight decay chosen by 5-fold
   cross-validation on the training split) against the same architecture at random
   initialisation and against raw pixels;
3. fine-tune the pre-trained encoder with transformers' Trainer;
4. write reconstruction pictures, model cards and a summary table (summary.md, summary.json).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import torch
from transformers import AutoImageProcessor

from ..data import load_digits_dataset
from ..models.mae import MAEForPreTraining
from ..reconstruction import compose_picture, reconstruct
from .evaluate import evaluate_model, knn_accuracy, linear_probe
from .finetune import finetune
from .presets import preset_config
from .pretrain import pretrain
from .settings import DataSettings, PretrainSettings

logger = logging.getLogger("mim_hub.demo")

# The pre-training recipe measured by benchmarks/learning.py (digits protocol, 2 CPU cores), chosen
# with benchmarks/learning_sweep.py: at a fixed budget of images (steps x batch), small batches with
# more steps learned better and more stably across seeds than batch 128 (see docs/training.md).
DEMO_RECIPE = {"batch_size": 32, "steps": 2400, "lr": 5e-4, "warmup_steps": 80, "crop_min_scale": 0.5}


def demo_pretrain_arguments(*, batch_size: int, lr: float, warmup_steps: int, crop_min_scale: float) -> list[str]:
    """`mim-hub pretrain` arguments of the demo's recipe (no flips: digits are not mirror-symmetric)."""
    return ["--batch-size", str(batch_size), "--lr", str(lr), "--warmup-steps", str(warmup_steps),
            "--crop-min-scale", str(crop_min_scale), "--no-flip"]


def pixel_features(images) -> torch.Tensor:
    return torch.tensor(np.stack([np.asarray(images.image(i), dtype=np.float32).ravel() / 255 for i in range(len(images))]))


def run_demo(output_dir: str, *, pretrain_steps: int = DEMO_RECIPE["steps"], pretrain_batch_size: int = DEMO_RECIPE["batch_size"],
             pretrain_lr: float = DEMO_RECIPE["lr"], finetune_epochs: float = 8, seed: int = 0, quick: bool = False,
             overwrite: bool = False, num_workers: int = 0) -> dict:
    started = time.time()
    os.makedirs(output_dir, exist_ok=True)
    pretrained_dir = os.path.join(output_dir, "mae-digits")
    train, test = load_digits_dataset("train"), load_digits_dataset("test")
    steps = 4 if quick else pretrain_steps
    batch_size = 32 if quick else pretrain_batch_size
    summary: dict = {"dataset": "digits (scikit-learn), stratified 1347/450 split, 32x32", "seed": seed, "pretrain_steps": steps,
                     "pretrain_batch_size": batch_size, "pretrain_lr": pretrain_lr}

    # 1. pre-train
    logger.info("1/4 pre-training MAE on digits for %d steps", steps)
    if overwrite or not os.path.isfile(os.path.join(pretrained_dir, "model.safetensors")):
        resume = os.path.isdir(os.path.join(pretrained_dir, "checkpoints")) and not overwrite
        pretrain(PretrainSettings(
            output_dir=pretrained_dir, model="mae-tiny-digits", data=DataSettings("digits"), max_steps=steps, seed=seed,
            save_every=max(50, steps // 4), log_every=10, batch_size=batch_size, lr=pretrain_lr,
            warmup_steps=min(DEMO_RECIPE["warmup_steps"], steps // 10), crop_min_scale=DEMO_RECIPE["crop_min_scale"], no_flip=True,
            num_workers=num_workers, resume=resume))
    summary["pretrain_minutes"] = round((time.time() - started) / 60, 2)

    # 2. frozen-feature evaluation: pre-trained vs random init vs raw pixels
    logger.info("2/4 evaluating frozen features (kNN, linear probe)")
    processor = AutoImageProcessor.from_pretrained(pretrained_dir)
    pretrained = MAEForPreTraining.from_pretrained(pretrained_dir)
    torch.manual_seed(seed)
    _, config = preset_config("mae-tiny-digits")
    random_init = MAEForPreTraining(config)
    epochs = 5 if quick else 100
    results = {
        "pre-trained MAE": evaluate_model(pretrained.mae, processor, train, test, linear_epochs=epochs, seed=seed, progress=True),
        "random init (same architecture)": evaluate_model(random_init.mae, processor, train, test, linear_epochs=epochs, seed=seed,
                                                          progress=True),
    }
    raw_train, raw_test = pixel_features(train), pixel_features(test)
    results["raw pixels"] = {"knn": knn_accuracy(raw_train, train.labels, raw_test, test.labels),
                             **linear_probe(raw_train, train.labels, raw_test, test.labels, epochs=epochs, seed=seed, progress=True)}
    # held-out masked-reconstruction loss (same masks for both models)
    pixels = processor([test.image(i) for i in range(len(test))], return_tensors="pt").pixel_values
    noise = torch.rand(len(test), 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        results["pre-trained MAE"]["heldout_loss"] = pretrained.eval()(pixels, noise=noise).loss.item()
        results["random init (same architecture)"]["heldout_loss"] = random_init.eval()(pixels, noise=noise).loss.item()
    summary["frozen_features"] = results

    # 3. fine-tune with transformers' Trainer
    logger.info("3/4 fine-tuning with transformers' Trainer")
    finetuned_dir = os.path.join(output_dir, "mae-digits-finetuned")
    _, metrics = finetune(
        pretrained_dir, train, test, output_dir=finetuned_dir, epochs=1 if quick else finetune_epochs, batch_size=64,
        base_lr=2e-3, layer_decay=0.75, drop_path=0.1, crop_min_scale=0.5, flip=False, seed=seed, log_to_console=True)
    summary["finetuned_accuracy"] = metrics.get("eval_accuracy")

    # 4. reconstruction pictures
    logger.info("4/4 writing reconstruction pictures")
    result = reconstruct(pretrained, pixels[:8], seed=seed)
    for i in range(4):
        compose_picture(result, i, processor.image_mean, processor.image_std).save(os.path.join(output_dir, f"reconstruction_{i}.png"))
    summary["minutes"] = round((time.time() - started) / 60, 2)
    write_summary(summary, output_dir)
    return summary


def write_summary(summary: dict, output_dir: str) -> None:
    with open(os.path.join(output_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    lines = ["# mim_hub demo: MAE on digits", "", f"{summary['dataset']}; {summary['pretrain_steps']} pre-training steps of batch "
             f"{summary.get('pretrain_batch_size')}; "
             f"{summary['minutes']} minutes in all.", "", "| features | kNN (k=20, T=0.07) | linear probe | probe weight decay (5-fold CV on train) "
             "| linear probe, no weight decay | held-out masked loss |", "|---|---|---|---|---|---|"]
    for name, row in summary["frozen_features"].items():
        loss = f"{row['heldout_loss']:.3f}" if "heldout_loss" in row else ""
        weight_decay = f"{row['linear_weight_decay']:g}" if "linear_weight_decay" in row else ""
        unregularised = f"{100 * row['linear_unregularised']:.1f}%" if "linear_unregularised" in row else ""
        lines.append(f"| {name} | {100 * row['knn']:.1f}% | {100 * row['linear']:.1f}% | {weight_decay} | {unregularised} | {loss} |")
    if summary.get("finetuned_accuracy") is not None:
        lines += ["", f"Fine-tuned with transformers' Trainer: {100 * summary['finetuned_accuracy']:.1f}% test accuracy."]
    lines += ["", "Pictures: reconstruction_0.png ... reconstruction_3.png. Models: mae-digits/ (pre-trained, with card), "
              "mae-digits-finetuned/ (classifier, with card)."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(output_dir, "summary.md"), "w") as handle:
        handle.write(text)
    print(text)


