"""Training and evaluation: every command on tiny configurations, resume after SIGKILL, two
processes under `accelerate launch`, the Trainer path from Python, and clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from kill_loop import run_until_paused
from mim_hub import MAEConfig, MAEForPreTraining
from mim_hub.data import DatasetError, from_hf_dataset, load_images
from mim_hub.training.evaluate import (PROBE_WEIGHT_DECAYS, knn_accuracy, linear_probe, linear_probe_accuracy, probe_accuracies,
                                      select_probe_weight_decay, stratified_folds)

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
            norm_pix_loss=True)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def mim_hub_cli(*args, check=True):
    # no timeout: how long a run takes depends on the machine, and is never part of a verdict
    proc = subprocess.run([sys.executable, "-m", "mim_hub", *args], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    MAEForPreTraining(MAEConfig(**TINY)).save_pretrained(folder)
    from mim_hub import MAEImageProcessor

    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    return str(folder)


PRETRAIN = ["--dataset", "digits", "--batch-size", "16", "--log-every", "1", "--lr", "1e-3"]


@pytest.mark.slow
def test_pretrain_writes_model_log_checkpoints_and_card(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    mim_hub_cli("pretrain", "--model", tiny_model_dir, "--output-dir", str(out), "--max-steps", "6", "--save-every", "3", *PRETRAIN)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in log)
    assert sorted(os.listdir(out / "checkpoints")) == ["step_00000003"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(os.listdir(out))
    assert "Pre-trained with `mim-hub pretrain --method mae`" in (out / "README.md").read_text()
    before, after = load_file(os.path.join(tiny_model_dir, "model.safetensors")), load_file(out / "model.safetensors")
    assert not torch.equal(before["mae.encoder.layers.0.attn.qkv_proj.weight"], after["mae.encoder.layers.0.attn.qkv_proj.weight"])


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_weights(tiny_model_dir, tmp_path):
    common = ["--model", tiny_model_dir, "--max-steps", "12", "--save-every", "2", *PRETRAIN]
    straight = tmp_path / "straight"
    mim_hub_cli("pretrain", "--output-dir", str(straight), *common)
    killed = tmp_path / "killed"
    # killed by progress, not by a clock: the run pauses after step 5 (test_hooks.py), one step past checkpoint 4
    paused, tail = run_until_paused([sys.executable, "-m", "mim_hub", "pretrain", "--output-dir", str(killed), *common], "step", 5)
    assert paused, tail
    assert not (killed / "model.safetensors").exists()
    assert sorted(os.listdir(killed / "checkpoints")) == ["step_00000002", "step_00000004"]
    mim_hub_cli("pretrain", "--output-dir", str(killed), "--resume", *common)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = lambda folder: {r["step"]: r["loss"] for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines())}  # noqa: E731
    assert losses(straight)[12] == losses(killed)[12]


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tiny_model_dir, tmp_path):
    out = tmp_path / "ddp"
    # `--multi_gpu` starts two processes (torchrun), which pretrain joins over gloo on a CPU machine; `--cpu
    # --num_processes 2` would start one (accelerate's simple launcher)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mim_hub", "pretrain", "--model", tiny_model_dir,
           "--output-dir", str(out), "--max-steps", "4", "--save-every", "2", *PRETRAIN]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "step_00000002").is_dir()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # logged once, by the main process
    run = json.loads((out / "checkpoints" / "step_00000002" / "state.json").read_text())["run"]
    assert run["num_processes"] == 2 and run["total_batch"] == 32  # two ranks of one run, not two runs of one


@pytest.mark.slow
def test_eval_and_reconstruct_commands(tiny_model_dir, tmp_path):
    result = tmp_path / "eval.json"
    mim_hub_cli("eval", "--model", tiny_model_dir, "--dataset", "digits", "--protocol", "both", "--linear-epochs", "3", "--output", str(result))
    scores = json.loads(result.read_text())
    assert 0.1 < scores["knn"] <= 1 and 0.1 < scores["linear"] <= 1
    assert scores["linear_weight_decay"] in PROBE_WEIGHT_DECAYS  # chosen by cross-validation (the default)
    proc = mim_hub_cli("eval", "--model", tiny_model_dir, "--dataset", "digits", "--linear-weight-decay", "lots", check=False)
    assert proc.returncode == 2 and "expected a number or 'cv'" in proc.stderr
    image = tmp_path / "digit.png"
    Image.fromarray((np.random.RandomState(0).rand(20, 30) * 255).astype(np.uint8)).save(image)
    picture = tmp_path / "rec.png"
    mim_hub_cli("reconstruct", "--model", tiny_model_dir, "--image", str(image), "--output", str(picture), "--mask-ratio", "0.5", "--seed", "3")
    with Image.open(picture) as shown:
        assert shown.width > 4 * 32 and shown.height > 32


def test_reconstruction_never_uses_the_masked_patches_statistics():
    from mim_hub.reconstruction import reconstruct

    torch.manual_seed(0)
    model = MAEForPreTraining(MAEConfig(**TINY)).eval()
    x = torch.randn(1, 3, 32, 32)
    noise = torch.rand(1, 16)
    first = reconstruct(model, x, noise=noise)
    masked = first.mask[0].reshape(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1).bool()
    changed = x.clone()
    changed[0][:, masked] = changed[0][:, masked] * 5 + 3  # new contents where the mask hides them
    second = reconstruct(model, changed, noise=noise)
    # predictions of masked patches come from visible pixels and visible statistics only
    assert torch.allclose(first.reconstruction[0][:, masked], second.reconstruction[0][:, masked], atol=1e-5)
    assert torch.allclose(first.pasted, second.pasted, atol=1e-5)


@pytest.mark.slow
def test_finetune_with_trainer_from_python(tiny_model_dir, tmp_path):
    from mim_hub.data import load_digits_dataset
    from mim_hub.training.finetune import finetune

    train, test = load_digits_dataset("train").subset(range(96)), load_digits_dataset("test").subset(range(48))
    trainer, metrics = finetune(tiny_model_dir, train, test, output_dir=str(tmp_path / "ft"), epochs=1, batch_size=32, log_to_console=False)
    assert 0 <= metrics["eval_accuracy"] <= 1
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["architectures"] == ["MAEForImageClassification"] and config["id2label"]["3"] == "3"
    assert config["use_mean_pooling"] is True
    card = (tmp_path / "ft" / "README.md").read_text()
    assert "model-index" in card and "accuracy" in card
    # layer-wise lr decay reached the optimizer: the head has the full lr, embeddings the smallest
    scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.65 ** 3)


@pytest.mark.slow
def test_finetune_command_on_an_imagefolder(tiny_model_dir, tmp_path):
    root = tmp_path / "images"
    rng = np.random.RandomState(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            mode = ["RGB", "L", "RGBA", "P"][i % 4]
            Image.fromarray((rng.rand(24, 28, 3) * 255).astype(np.uint8)).convert(mode).save(root / label / f"{i}.png")
    (root / "dogs" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "ft"
    mim_hub_cli("finetune", "--model", tiny_model_dir, "--dataset", f"imagefolder:{root}", "--output-dir", str(out), "--epochs", "1", "--batch-size", "4")
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "cats", "1": "dogs"}
    data = load_images(f"imagefolder:{root}")  # listed, not opened: the broken file is met when decoded
    assert len(data) == 13 and all(data.image(i).mode == "RGB" for i in range(13))
    assert len(data.skipped) == 1 and data.skipped[0].endswith("broken.png")
    strict = load_images(f"imagefolder:{root}", on_bad_image="error")
    with pytest.raises(DatasetError, match="broken.png"):
        [strict.image(i) for i in range(13)]


def test_knn_and_linear_probe_on_a_hand_checked_case():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = [0, 0, 1, 1]
    test = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    assert knn_accuracy(train, labels, test, [0, 1], k=2) == 1.0
    assert knn_accuracy(train, labels, test, [1, 0], k=2) == 0.0
    assert linear_probe_accuracy(train.repeat(8, 1), labels * 8, test, [0, 1], epochs=30) == 1.0


def _noisy_problem(samples, seed):
    """Two classes told apart by the first feature alone, hidden among 300 noise features."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % 2
    features = torch.randn(samples, 301, generator=generator)
    features[:, 0] += 1.5 * (2 * labels - 1)
    return features, labels


def test_probe_grid_trains_every_head_as_if_alone_and_leaves_the_global_rng_alone():
    train_x, train_y = _noisy_problem(80, 0)
    test_x, test_y = _noisy_problem(400, 1)
    state = torch.random.get_rng_state()
    together = probe_accuracies(train_x, train_y, test_x, test_y, [0.0, 0.1, 1.0], epochs=20)
    alone = [linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=20, weight_decay=w) for w in (0.0, 0.1, 1.0)]
    assert together == pytest.approx(alone, abs=1 / 400 + 1e-6)  # at most one sample flipped by rounding
    assert len(set(together)) > 1  # the weight decays really differ in effect
    assert torch.equal(torch.random.get_rng_state(), state)


def test_stratified_folds_partition_the_samples_and_spread_every_class():
    labels = torch.tensor([0] * 23 + [1] * 11 + [2] * 6)
    folds = stratified_folds(labels, 5, seed=3)
    assert sorted(torch.cat(folds).tolist()) == list(range(40))
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1
    for label, count in ((0, 23), (1, 11), (2, 6)):
        per_fold = [int((labels[f] == label).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count


def test_probe_weight_decay_is_chosen_by_cross_validation_on_the_training_split_alone():
    train_x, train_y = _noisy_problem(80, 0)
    choice, scores = select_probe_weight_decay(train_x, train_y, epochs=20)
    assert set(scores) == set(PROBE_WEIGHT_DECAYS)
    assert choice == min(w for w, score in scores.items() if score == max(scores.values()))  # ties: the smaller
    # the test split never enters the choice
    first = linear_probe(train_x, train_y, *_noisy_problem(50, 1), epochs=20)
    second = linear_probe(train_x, train_y, *_noisy_problem(50, 2), epochs=20)
    assert first["linear_weight_decay"] == second["linear_weight_decay"] == choice
    fixed = linear_probe(train_x, train_y, *_noisy_problem(50, 1), epochs=20, weight_decay=0.5)
    assert fixed["linear_weight_decay"] == 0.5
    # the unregularised probe is reported beside the chosen one, trained as if alone
    test_x, test_y = _noisy_problem(50, 1)
    assert fixed["linear"] == pytest.approx(linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=20, weight_decay=0.5), abs=1 / 50 + 1e-6)
    assert fixed["linear_unregularised"] == pytest.approx(linear_probe_accuracy(train_x, train_y, test_x, test_y, epochs=20), abs=1 / 50 + 1e-6)
    with pytest.raises(ValueError, match="too few"):
        select_probe_weight_decay(train_x[:3], train_y[:3])


def test_datasets_from_python_and_their_errors(tmp_path):
    import datasets

    images = [Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)) for i in range(4)]
    data = datasets.Dataset.from_dict({"img": images, "y": [0, 1, 0, 1]}).cast_column("img", datasets.Image())
    loaded = from_hf_dataset(data, label_column="y")
    assert len(loaded) == 4 and loaded.labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(DatasetError, match="no column 'label_x'"):
        from_hf_dataset(data, label_column="label_x")
    with pytest.raises(DatasetError, match="no image column"):
        from_hf_dataset(datasets.Dataset.from_dict({"text": ["a", "b"]}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_images(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="cannot load dataset"):
        load_images("no-such-user/no-such-dataset-xyz")


@pytest.mark.slow  # three `mim-hub` processes, each importing everything
def test_clear_errors_on_the_command_line(tmp_path):
    proc = mim_hub_cli("pretrain", "--model", str(tmp_path), "--output-dir", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    proc = mim_hub_cli("eval", "--model", str(tmp_path), check=False)
    assert proc.returncode == 2 and "not a mim_hub model" in proc.stderr
    proc = mim_hub_cli("pretrain", "--model", "no-such-preset", "--output-dir", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "neither a saved model folder nor a known preset" in proc.stderr


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    mim_hub_cli("demo", "--quick", "--output-dir", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["frozen_features"]) == {"pre-trained MAE", "random init (same architecture)", "raw pixels"}
    assert (out / "reconstruction_0.png").exists() and (out / "mae-digits" / "README.md").exists()
    assert (out / "mae-digits-finetuned" / "config.json").exists() and "kNN" in (out / "summary.md").read_text()
    for row in summary["frozen_features"].values():  # both probes on record: weight decay by CV, and none
        assert 0 <= row["linear"] <= 1 and 0 <= row["linear_unregularised"] <= 1 and row["linear_weight_decay"] >= 0
