"""Fine-tuning resumed from a Trainer checkpoint ends with the uninterrupted run's weights, bit for
bit: the augmentation of a sample depends on (seed, epoch, index) only and MixUp/CutMix on the
batch's samples, so neither the resume nor the number of data workers changes a draw."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import save_tiny_mae
from mim_hub.cli import main as cli
from mim_hub.training.augment import Mixup, MixupCollator
from mim_hub.training.finetune import ClassificationData, DataEpochCallback


class _Images:  # the few methods ClassificationData reads
    def __init__(self, count):
        from PIL import Image

        self.labels = [i % 2 for i in range(count)]
        self.pictures = [Image.fromarray(np.full((8, 8, 3), 20 * i, dtype=np.uint8)) for i in range(count)]

    def __len__(self):
        return len(self.labels)

    def with_image(self, index, transform):
        return transform(self.pictures[index]), index


def _draw(image, rng):
    return np.asarray([rng.random()], dtype=np.float32)


def test_a_sample_s_draw_depends_on_seed_epoch_and_index_only():
    data = ClassificationData(_Images(4), _draw, seed=3, train=True, with_keys=True)
    first = [data[i]["pixel_values"] for i in range(4)]
    assert torch.equal(data[2]["pixel_values"], first[2])  # read again, or by another worker: the same draw
    assert len({float(x) for x in first}) == 4
    state = type("State", (), {"epoch": 2 - 1e-9})()  # the Trainer's float epoch at an epoch's end, rounded below
    DataEpochCallback(data).on_epoch_begin(None, state, None)
    assert data.epoch == 2
    state.epoch = 1.5  # resumed mid-epoch: that epoch's draws
    DataEpochCallback(data).on_epoch_begin(None, state, None)
    assert data.epoch == 1 and not torch.equal(data[2]["pixel_values"], first[2])
    assert data[2]["sample_key"].tolist() == [1, 2]
    collate = MixupCollator(Mixup(num_classes=2, mixup_alpha=0.8, cutmix_alpha=0.0), seed=0)
    batch = [data[i] for i in range(4)]
    a, b = collate(batch), MixupCollator(Mixup(num_classes=2, mixup_alpha=0.8, cutmix_alpha=0.0), seed=0)(batch)
    assert "sample_key" not in a and torch.equal(a["labels"], b["labels"])  # keyed: not a stream that depends on the order


@pytest.mark.slow
def test_finetune_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    folder = save_tiny_mae(tmp_path / "tiny", num_hidden_layers=1)
    common = ["finetune", "--model", folder, "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--seed", "0",
              "--mixup", "0.8", "--cutmix", "1.0", "--drop-path", "0.1"]
    assert cli([*common, "--output-dir", str(tmp_path / "straight")]) == 0
    checkpoints = sorted(p.name for p in (tmp_path / "straight").glob("checkpoint-*"))
    assert len(checkpoints) == 2, checkpoints
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight" / checkpoints[0], resumed / checkpoints[0])
    # resumed after the first epoch, and with two data workers where the first run had none
    assert cli([*common, "--output-dir", str(resumed), "--resume-from-checkpoint", str(resumed / checkpoints[0]), "--num-workers", "2"]) == 0
    want, got = load_file(tmp_path / "straight" / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_the_same_seed_fine_tunes_the_same_model_whatever_the_process_drew_before(tmp_path):
    """The head is initialised from the seed: a sweep's tenth fine-tune in one process equals the
    same fine-tune run alone."""
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    folder = save_tiny_mae(tmp_path / "tiny", num_hidden_layers=1)
    train, test = load_digits_dataset("train").subset(range(64)), load_digits_dataset("test").subset(range(16))
    weights = []
    for run, draws in enumerate((0, 1000)):
        torch.rand(draws)  # what earlier work in the process took from the global generator
        finetune(folder, train, test, output_dir=str(tmp_path / f"run{run}"), epochs=1, batch_size=32, seed=3, log_to_console=False,
                 save_checkpoints=False)
        weights.append(load_file(tmp_path / f"run{run}" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
