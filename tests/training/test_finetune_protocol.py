"""Fine-tuning's flags reach every method's config or are refused; model selection uses a seeded
validation split carved from train, never the evaluation split; the effective lr is stated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mim_hub.auto import method_classes
from mim_hub.training.finetune_protocol import check_pooling_applies, classifier_config_overrides
from mim_hub.training.label_splits import per_class_subset, stratified_holdout, validation_split
from tiny_models import TINY, method_of


def _saved(key, folder):
    config, _ = TINY[key]()
    torch.manual_seed(0)
    classes = method_classes(method_of(key))
    classes["pretraining"](config).save_pretrained(folder)
    return classes


@pytest.mark.parametrize("key", sorted(TINY))
def test_every_method_s_classifier_pools_as_asked_or_refuses(key, tmp_path):
    classes = _saved(key, tmp_path)
    method = method_of(key)
    for pooling in ("mean", "cls"):
        extra = classifier_config_overrides(method, classes["config"], pooling=pooling, drop_path=None)
        model = classes["classification"].from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True, **extra)
        if getattr(model.base_model, "num_prefix_tokens", 1) == 0 and pooling == "cls":  # Swin, MR-MAE without a cls token
            with pytest.raises(ValueError, match="no cls token"):
                check_pooling_applies(model, pooling)
            continue
        assert check_pooling_applies(model, pooling) == pooling
    # CRATE spells it `pooling`: mean must reach it (it was silently left at "cls")
    if method == "crate_mae":
        assert classifier_config_overrides(method, classes["config"], pooling=None, drop_path=None) == {"pooling": "mean"}


def test_crate_s_classifier_input_follows_the_pooling(tmp_path):
    classes = _saved("crate_mae", tmp_path)
    pixels = torch.randn(2, 3, 32, 32)
    pooled = {}
    for pooling in ("mean", "cls"):
        extra = classifier_config_overrides("crate_mae", classes["config"], pooling=pooling, drop_path=None)
        model = classes["classification"].from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True, **extra).eval()
        with torch.no_grad():
            out = model.base_model(pixels)
        tokens = out.last_hidden_state
        pooled[pooling] = out.pooler_output
        expected = tokens[:, 1:].mean(1) if pooling == "mean" else tokens[:, 0]
        torch.testing.assert_close(out.pooler_output, expected)
    assert not torch.allclose(pooled["mean"], pooled["cls"])


def test_drop_path_reaches_the_config_or_is_refused():
    mae, crate = method_classes("mae")["config"], method_classes("crate_mae")["config"]
    assert classifier_config_overrides("mae", mae, pooling=None, drop_path=None)["drop_path_rate"] == 0.1
    assert classifier_config_overrides("mae", mae, pooling=None, drop_path=0.3)["drop_path_rate"] == 0.3
    assert "drop_path_rate" not in classifier_config_overrides("crate_mae", crate, pooling=None, drop_path=0.0)
    with pytest.raises(ValueError, match="crate_mae models have no stochastic depth"):
        classifier_config_overrides("crate_mae", crate, pooling=None, drop_path=0.2)
    with pytest.raises(ValueError, match="pooling must be"):
        classifier_config_overrides("mae", mae, pooling="max", drop_path=None)


def test_stratified_holdout_is_seeded_disjoint_and_keeps_every_class():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 1])
    kept, held = stratified_holdout(labels, 0.1, seed=3)
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == len(labels)
    assert [int((labels[held] == c).sum()) for c in range(5)] == [1, 2, 3, 4, 0]  # a class of one stays in train
    again, _ = stratified_holdout(labels, 0.1, seed=3)
    other, _ = stratified_holdout(labels, 0.1, seed=4)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)
    with pytest.raises(ValueError, match="fraction"):
        stratified_holdout(labels, 1.0)
    with pytest.raises(ValueError, match="no label"):
        stratified_holdout(np.array([0, 1, -1]), 0.5)


def test_per_class_subset_takes_k_of_every_class_the_same_for_every_caller():
    labels = np.repeat(np.arange(4), 9)
    subset = per_class_subset(labels, 2, seed=0)
    assert np.bincount(labels[subset]).tolist() == [2, 2, 2, 2]
    assert np.array_equal(subset, per_class_subset(labels, 2, seed=0))
    assert not np.array_equal(subset, per_class_subset(labels, 2, seed=1))  # another seed, other images
    with pytest.raises(ValueError, match="fewer than the 10 per class"):
        per_class_subset(labels, 10)


class CountingImages:
    """An ImageDataset wrapper that counts the images read (to see when a split is looked at)."""

    def __init__(self, images):
        self.images, self.reads = images, 0

    def __getattr__(self, name):
        return getattr(self.images, name)

    def __len__(self):
        return len(self.images)

    def with_image(self, index, function):
        self.reads += 1
        return self.images.with_image(index, function)


def test_finetune_selects_on_validation_and_reads_the_test_split_once(tmp_path):
    from mim_hub import MAEImageProcessor
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    _saved("mae", tmp_path / "mae")
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "mae")
    train = load_digits_dataset("train").subset(range(100))
    test = CountingImages(load_digits_dataset("test").subset(range(24)))
    _, metrics = finetune(str(tmp_path / "mae"), train, test, output_dir=str(tmp_path / "ft"), epochs=2, batch_size=32, base_lr=1e-3,
                          validation_fraction=0.2, log_to_console=False)
    assert test.reads == len(test)  # evaluated once, at the end: two epochs never consulted it
    assert 0 <= metrics["validation_accuracy"] <= 1 and 0 <= metrics["eval_accuracy"] <= 1
    settings = json.loads((tmp_path / "ft" / "finetune_settings.json").read_text())
    assert metrics["learning_rate"] == pytest.approx(1e-3 * 32 / 256) == pytest.approx(settings["lr"])
    held = len(stratified_holdout(train.labels, 0.2, 0)[1])
    assert settings["train_images"] == 100 - held and "validation" in settings["model_selection"] and settings["pooling"] == "mean"
    _, validation = validation_split(train, 0.2, 0)
    assert len(validation) == held and "seed 0" in validation.name


def test_cli_refuses_a_pooling_the_model_cannot_take_and_states_the_lr(tmp_path, capsys):
    from mim_hub import MRMAEImageProcessor
    from mim_hub.cli import main

    _saved("mr_mae", tmp_path / "mr")
    MRMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "mr")
    assert main(["finetune", "--model", str(tmp_path / "mr"), "--output-dir", str(tmp_path / "ft"), "--pooling", "cls",
                 "--epochs", "1"]) == 2
    assert "no cls token" in capsys.readouterr().err
    assert not (tmp_path / "ft" / "model.safetensors").exists()
    assert main(["finetune", "--model", str(tmp_path / "mr"), "--output-dir", str(tmp_path / "ft"), "--epochs", "0.05",
                 "--batch-size", "32", "--base-lr", "1e-3", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "lr used: 0.000125 (blr/256 of base lr 0.001, effective batch 32)" in printed and "eval accuracy:" in printed
