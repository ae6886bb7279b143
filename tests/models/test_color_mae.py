"""ColorMAE: parity with the original (mmpretrain layout), colour-noise masks bit for bit, pattern
generation, the pre-training recipe, errors."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from mim_hub import ColorMAEConfig, ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEModel, MAEForPreTraining, MAEConfig
from mim_hub.conversion import CheckpointError, convert_checkpoint
from mim_hub.masking import ColorNoiseMaskGenerator, generate_noise_patterns, random_masking

from conftest import FIXTURES, assert_close, load_fixture

TINY = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
            noise_pattern_count=4, noise_pattern_size=16)


def test_pretrain_fixture_parity():
    path, inputs, expected, meta = load_fixture("color_mae", "pretrain-full")
    model, _ = convert_checkpoint("color_mae", path, meta["bars_overrides"])
    assert isinstance(model, ColorMAEForPreTraining)
    noise = -inputs["windows"].flatten(1)  # the original keeps the LARGEST window values
    with torch.no_grad():
        out = model(inputs["pixel_values"], noise=noise)
        unmasked = model.mae(inputs["pixel_values"]).last_hidden_state
    assert_close(out.loss, expected["loss"], "loss")
    assert_close(out.logits, expected["pred"], "pred")
    assert torch.equal(out.mask, expected["mask"].float())
    assert torch.equal(out.ids_restore, expected["ids_restore"])
    assert_close(out.last_hidden_state, expected["latent"], "latent")
    assert_close(unmasked, expected["last_hidden_state_unmasked"], "extract_feat")
    # the stored (row-first) sin-cos table was taken, not MAE's recomputed one
    stored = torch.load(path, weights_only=True)["state_dict"]["backbone.pos_embed"]
    assert torch.equal(model.mae.embeddings.pos_embed.data, stored)


def test_finetune_fixture_parity():
    path, inputs, expected, meta = load_fixture("color_mae", "finetune-classifier")
    model, _ = convert_checkpoint("color_mae", path, meta["bars_overrides"])
    assert isinstance(model, ColorMAEForImageClassification) and model.config.use_mean_pooling
    with torch.no_grad():
        encoded = model.mae(inputs["pixel_values"], output_hidden_states=True)
        assert_close(model(inputs["pixel_values"]).logits, expected["logits"], "logits")
    assert_close(encoded.pooler_output, expected["features"], "features")
    assert_close(encoded.hidden_states[-1], expected["hidden_states_before_pool"], "blocks")


@pytest.mark.parametrize("color", ["red", "blue", "green", "purple"])
def test_masks_reproduce_the_original_bit_for_bit(color):
    folder = os.path.join(FIXTURES, "color_mae", "masks")
    inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
    expected = torch.load(os.path.join(folder, "expected.pt"), weights_only=True)
    gen = ColorNoiseMaskGenerator(inputs[f"{color}_noise_patterns"], grid_size=8, mask_ratio=0.75)
    generator = torch.Generator().manual_seed(int(inputs[f"{color}_seed"]))
    windows = gen.windows(5, generator=generator)
    assert torch.equal(windows, expected[f"{color}_windows"])
    generator = torch.Generator().manual_seed(int(inputs[f"{color}_seed"]))
    ids_keep, mask, ids_restore = random_masking(gen(5, generator=generator), 0.75)
    assert torch.equal(mask, expected[f"{color}_mask"].float())
    assert torch.equal(ids_restore, expected[f"{color}_ids_restore"])
    assert torch.equal(ids_keep, expected[f"{color}_ids_keep"])


@pytest.mark.parametrize("grid,ratio,count,batch", [(14, 0.75, 3, 7), (7, 0.5, 1, 2), (4, 0.9, 5, 5)])
def test_any_grid_ratio_and_stack_hits_the_count(grid, ratio, count, batch):
    patterns = generate_noise_patterns("green", count=count, size=grid + 5, seed=1)
    gen = ColorNoiseMaskGenerator(patterns, grid, ratio)
    noise = gen(batch, generator=torch.Generator().manual_seed(0))
    keep = int(grid * grid * (1 - ratio))
    _, mask, _ = random_masking(noise, ratio)
    assert (mask.sum(1) == grid * grid - keep).all()
    # sample b uses pattern b mod P: with no crop freedom the windows repeat with period P
    exact = ColorNoiseMaskGenerator(patterns[:, :grid, :grid], grid, ratio)
    w = exact.windows(batch, generator=torch.Generator().manual_seed(0))
    for b in range(batch):
        base = torch.as_tensor(patterns[b % count, :grid, :grid])
        candidates = [base, base.flip(-1), base.flip(-2), base.flip(-1).flip(-2)]
        assert any(torch.allclose(w[b], c / c.max()) for c in candidates)


def test_generator_errors():
    with pytest.raises(ValueError, match="smaller than the 8x8"):
        ColorNoiseMaskGenerator(np.zeros((2, 6, 6)), 8, 0.75)
    with pytest.raises(ValueError, match="keeps no patch"):
        ColorNoiseMaskGenerator(np.ones((2, 8, 8)), 2, 0.9)
    with pytest.raises(ValueError, match="noise_color"):
        ColorMAEConfig(**{**TINY, "noise_color": "pink"})


def test_generated_colours_have_their_spectra():
    from mim_hub.layers.mask_color_noise import radial_power_spectrum

    spectra = {c: radial_power_spectrum(generate_noise_patterns(c, count=8, size=64, seed=0)) for c in ("red", "blue", "green", "purple")}
    low, high = slice(1, 4), slice(24, 32)
    assert spectra["red"][low].mean() > 10 * spectra["red"][high].mean()  # low-pass
    assert spectra["blue"][high].mean() > 10 * spectra["blue"][low].mean()  # high-pass
    peak = int(np.argmax(spectra["green"][1:])) + 1
    assert 2 <= peak <= 12  # band-pass: a peak in the middle
    assert spectra["purple"][peak] < spectra["purple"][low].mean() and spectra["purple"][peak] < spectra["purple"][high].mean()
    assert np.array_equal(generate_noise_patterns("red", 2, 16, 5), generate_noise_patterns("red", 2, 16, 5))


def test_pretraining_draws_its_own_masks_and_mae_models_accept_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_HUB_CACHE", str(tmp_path))
    model = ColorMAEForPreTraining(ColorMAEConfig(**TINY)).eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x, generator=torch.Generator().manual_seed(0))
    again = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, again.mask) and (out.mask.sum(1) == 48).all()
    assert os.listdir(tmp_path / "color_noise")  # the generated stack was cached
    # the same masks drive a plain MAE model
    mae = MAEForPreTraining(MAEConfig(**{k: v for k, v in TINY.items() if not k.startswith("noise")})).eval()
    noise = model.mask_generator(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mae(x, noise=noise).mask, out.mask)


def test_round_trip_auto_classes_and_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("MIM_HUB_CACHE", str(tmp_path / "cache"))
    model = ColorMAEForPreTraining(ColorMAEConfig(**TINY, noise_color="red"))
    model.save_pretrained(tmp_path / "m")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), ColorMAEConfig)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "m")) is ColorMAEForPreTraining
    assert type(AutoModel.from_pretrained(tmp_path / "m")) is ColorMAEModel
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path / "m", num_labels=2)) is ColorMAEForImageClassification
    import argparse

    from mim_hub.training.recipes import build_recipe, configure_model

    options = argparse.Namespace(noise_color="blue", noise_patterns=None)
    configure_model("color_mae", model, options)
    recipe = build_recipe("color_mae", model, options)
    assert model.config.noise_color == "blue"
    rng = np.random.default_rng(0)
    samples = [{"pixel_values": torch.randn(3, 32, 32), **recipe.sample_inputs(rng)} for _ in range(4)]
    batch = recipe.collate(samples)
    assert batch["noise"].shape == (4, 64) and torch.equal(batch["noise"], recipe.collate(samples)["noise"])
    assert torch.isfinite(model(**batch).loss)


def test_not_an_mmpretrain_checkpoint(tmp_path):
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="backbone"):
        convert_checkpoint("color_mae", str(tmp_path / "x.pth"), {})
    path, _, _, meta = load_fixture("color_mae", "finetune-classifier")
    state = torch.load(path, weights_only=True)
    state["state_dict"]["backbone.layers.0.ffn.layers.2.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        convert_checkpoint("color_mae", str(tmp_path / "y.pth"), meta["bars_overrides"])


def test_safetensors_release_converts(tmp_path):
    """The authors publish .safetensors files with the same flat mmpretrain keys."""
    from safetensors.torch import save_file

    path, inputs, expected, meta = load_fixture("color_mae", "finetune-classifier")
    state = torch.load(path, weights_only=True)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "epoch_99.safetensors")
    model, _ = convert_checkpoint("color_mae", str(tmp_path / "epoch_99.safetensors"), meta["bars_overrides"])
    with torch.no_grad():
        assert_close(model(inputs["pixel_values"]).logits, expected["logits"], "logits")


@pytest.mark.slow
def test_pretrain_command_with_a_noise_colour(tmp_path):
    import subprocess
    import sys

    model = ColorMAEForPreTraining(ColorMAEConfig(**TINY))
    model.save_pretrained(tmp_path / "m")
    from mim_hub import ColorMAEImageProcessor

    ColorMAEImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path / "m")
    env = {**os.environ, "MIM_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mim_hub", "pretrain", "--method", "color_mae", "--model", str(tmp_path / "m"),
                           "--output-dir", str(tmp_path / "run"), "--dataset", "digits", "--max-steps", "2", "--batch-size", "8",
                           "--noise-color", "purple", "--save-every", "0"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_type"] == "color_mae" and saved["noise_color"] == "purple"


def test_pre_training_at_a_grid_larger_than_the_pattern_stack(tmp_path, monkeypatch):
    """A model made at 32 px (12x12 patterns, an 8x8 grid) pre-trained at 64 px (16x16 grid):
    patterns of the colour are made at the needed size with the config's seed, cached, and give
    masks of the config's ratio, the same for the same generator seed."""
    from mim_hub import ColorMAEConfig, ColorMAEForPreTraining
    from mim_hub.layers.mask_color_noise import generate_noise_patterns

    monkeypatch.setenv("MIM_HUB_CACHE", str(tmp_path / "cache"))
    config = ColorMAEConfig(**{**TINY, "noise_pattern_count": 2, "noise_pattern_size": 12})
    model = ColorMAEForPreTraining(config).eval()
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model(pixels, interpolate_pos_encoding=True, generator=torch.Generator().manual_seed(4))
        again = model(pixels, interpolate_pos_encoding=True, generator=torch.Generator().manual_seed(4))
    assert out.mask.shape == (3, 256) and (out.mask.sum(1) == 256 - int(256 * 0.25)).all()
    assert torch.equal(out.mask, again.mask)
    cached = sorted(os.listdir(tmp_path / "cache" / "color_noise"))
    assert any("2x16x16_seed0" in name for name in cached), cached
    generator = model.mask_generator_for_grid((16, 16))
    assert torch.equal(generator.patterns, torch.as_tensor(generate_noise_patterns(config.noise_color, 2, 16, 0)))
    # a file of the authors' with patterns smaller than the grid: generated ones of its colour, said
    small = tmp_path / "green_noise_data_small.npz"
    np.savez(small, patterns=generate_noise_patterns("green", 2, 12, 5))
    config.noise_pattern_path = str(small)
    with pytest.warns(UserWarning, match="smaller than the 16x16 patch grid"):
        model = ColorMAEForPreTraining(config).eval()
        with torch.no_grad():
            assert model(pixels, interpolate_pos_encoding=True).mask.shape == (3, 256)
