"""What generic code asks of every model: `prepare_for_finetuning` (called by finetune on every
classifier) and `reconstruction_of` (what `reconstruct` draws, by the model's own loss code)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageClassification, AutoModelForPreTraining

import mim_hub
from mim_hub.reconstruction import predicts_pixels
from tiny_models import TINY as TINY_MODELS

PIXEL_METHODS = ["mae", "color_mae", "crate_mae", "mr_mae", "simmim", "simmim_swin"]


@pytest.mark.parametrize("method", sorted(TINY_MODELS))
def test_prepare_for_finetuning_keeps_the_function_and_is_idempotent(method):
    config, _ = TINY_MODELS[method]()
    if method == "simmim":
        config.use_shared_relative_position_bias = True
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_()
        before = model(x).logits
        assert model.prepare_for_finetuning() is model
        keys = set(model.state_dict())
        assert model.prepare_for_finetuning() is model and set(model.state_dict()) == keys  # again: nothing changes
        torch.testing.assert_close(model(x).logits, before)
    if method == "simmim":  # SimMIM's ViT: the shared table became one per block
        assert model.simmim.relative_position_bias is None and not model.config.use_shared_relative_position_bias
        assert all(layer.relative_position_bias is not None for layer in model.simmim.encoder.layers)


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_reconstruction_of_is_the_models_own_loss_per_image(method):
    config, extra = TINY_MODELS[method]()
    torch.manual_seed(0)
    model = AutoModelForPreTraining.from_config(config).eval()
    assert predicts_pixels(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, **extra)
        patches, per_image = model.reconstruction_of(x, out)
    assert per_image.shape == (2,) and patches.shape[:2] == out.mask.shape
    counts = out.mask.float().sum(1)
    torch.testing.assert_close((per_image * counts).sum() / counts.sum(), out.loss.float())  # the batch loss, weighted by masked patches


def test_models_that_predict_no_pixels_are_refused():
    config, _ = TINY_MODELS["cae"]()
    model = AutoModelForPreTraining.from_config(config)
    assert not predicts_pixels(model)
    with pytest.raises(ValueError, match="does not predict pixels"):
        mim_hub.reconstruction.reconstruct(model, torch.randn(1, 3, 32, 32))


def test_cae_fine_tuning_start_reads_the_saved_config_where_the_weights_are(tmp_path):
    """One list of Hub arguments: CAE's fc_norm <- layernorm start honours `subfolder` (and the
    rest) when it reads the saved config, as the weights' loading does."""
    from mim_hub import CAEForImageClassification, CAEModel

    config, _ = TINY_MODELS["cae"]()
    config.use_mean_pooling = False
    encoder = CAEModel(config)
    with torch.no_grad():
        encoder.layernorm.weight.normal_()
    encoder.save_pretrained(tmp_path / "repo" / "encoder")
    tuned = CAEForImageClassification.from_pretrained(tmp_path / "repo", subfolder="encoder", use_mean_pooling=True, num_labels=3)
    assert tuned.cae.layernorm is None and torch.equal(tuned.cae.fc_norm.weight, encoder.layernorm.weight)
    tuned.save_pretrained(tmp_path / "tuned")  # under its own names: it resumes and reloads as it is
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "tuned" / "model.safetensors"))
    assert {"cae.fc_norm.weight", "cae.fc_norm.bias"} <= keys and not any("layernorm" in k for k in keys)
