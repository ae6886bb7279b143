"""Broken features or labels are refused instead of giving a confident answer: NaN weights or
features in `eval` (chance-level accuracy, exit code 0 before), and fine-tuning or evaluating on a
single class (loss 0 and a num_labels 1 regression model before)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mim_hub import MAEConfig, MAEForPreTraining, MAEImageProcessor, MAEModel
from mim_hub.cli import main as cli
from mim_hub.data import load_digits_dataset
from mim_hub.training.evaluate import evaluate_model, extract_features, knn_accuracy, linear_probe_accuracy

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)


def _save(folder, poison=None):
    torch.manual_seed(0)
    model = MAEForPreTraining(MAEConfig(**TINY))
    if poison is not None:
        with torch.no_grad():
            dict(model.named_parameters())[poison].view(-1)[0] = poison_value(poison)
    model.save_pretrained(folder)
    MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(folder)
    return str(folder)


def poison_value(name):
    return float("inf") if "bias" in name else float("nan")


@pytest.mark.parametrize("weight", ["mae.encoder.layers.0.attn.qkv_proj.weight", "mae.encoder.layers.0.mlp.fc1.bias"])
def test_eval_of_a_model_with_non_finite_weights_exits_2_naming_them(tmp_path, capsys, weight):
    folder = _save(tmp_path / "broken", poison=weight)
    capsys.readouterr()
    code = cli(["eval", "--model", folder, "--dataset", "digits", "--protocol", "knn"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite" in err and weight.split("mae.", 1)[1] in err, err
    assert err.count("mim-hub eval: error:") == 1 and "Traceback" not in err  # one line (beside transformers' progress bars)


def test_nan_features_are_refused_by_extraction_and_by_both_protocols():
    torch.manual_seed(0)
    model = MAEModel(MAEConfig(**TINY)).eval()
    with torch.no_grad():
        model.encoder.layers[0].attn.qkv_proj.weight[0, 0] = float("nan")
    images = load_digits_dataset("train").subset(range(8))
    processor = MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        extract_features(model, processor, images, batch_size=4)
    features = torch.randn(8, 4)
    broken = features.clone()
    broken[3, 1] = float("nan")
    labels = [0, 1] * 4
    for probe in (knn_accuracy, linear_probe_accuracy):
        with pytest.raises(ValueError, match="NaN or infinite.*image 3"):
            probe(broken, labels, features, labels)
        with pytest.raises(ValueError, match="NaN or infinite"):
            probe(features, labels, broken * float("inf"), labels)
        with pytest.raises(ValueError, match="same feature vector"):
            probe(torch.ones(8, 4), labels, features, labels)


def test_evaluating_a_single_class_is_refused(tmp_path):
    torch.manual_seed(0)
    model = MAEModel(MAEConfig(**TINY)).eval()
    train = load_digits_dataset("train")
    ones = train.subset([i for i, label in enumerate(train.labels) if label == 1][:10])
    processor = MAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        evaluate_model(model, processor, ones, ones, protocol="knn")


def _one_class_folder(root):
    rng = np.random.RandomState(0)
    (root / "cats").mkdir(parents=True)
    for i in range(4):
        Image.fromarray((rng.rand(24, 28, 3) * 255).astype(np.uint8)).save(root / "cats" / f"{i}.png")
    return root


def test_finetune_on_a_single_class_is_refused(tmp_path, capsys):
    from mim_hub.training.finetune import finetune

    folder = _save(tmp_path / "model")
    root = _one_class_folder(tmp_path / "images")
    out = tmp_path / "ft"
    capsys.readouterr()
    code = cli(["finetune", "--model", folder, "--dataset", f"imagefolder:{root}", "--output-dir", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "1 class" in err and "at least 2" in err, err
    assert not out.exists() or not os.listdir(out)
    train = load_digits_dataset("train")
    sevens = train.subset([i for i, label in enumerate(train.labels) if label == 7][:8])
    with pytest.raises(ValueError, match="1 class"):
        finetune(folder, sevens, output_dir=str(tmp_path / "ft2"), epochs=1, log_to_console=False)
