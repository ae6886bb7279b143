"""from_pretrained refuses, before building anything, a config.json whose sizes are absurd for
the weights file beside it (a 1,000,000-layer config grew memory until killed); without weights a
model is built as asked, and real models of every method are far inside the bound."""

import json

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoModel

import mim_hub
import tiny_models
from mim_hub.auto import METHODS, method_classes
from mim_hub.models.size_bounds import MAX_PARAMETER_RATIO, check_config_fits_weights, estimated_parameters, weights_parameters

TINY = {"mae": tiny_models._mae, "simmim": tiny_models._simmim, "cae": tiny_models._cae, "mr_mae": tiny_models._mr_mae,
        "color_mae": tiny_models._color_mae, "crate_mae": tiny_models._crate_mae, "hpm": tiny_models._hpm}


@pytest.fixture
def saved(tmp_path):
    config, _ = tiny_models._mae()
    mim_hub.MAEModel(config).save_pretrained(tmp_path)
    return tmp_path, json.loads((tmp_path / "config.json").read_text())


HUGE = {"layers": {"num_hidden_layers": 1_000_000}, "decoder layers": {"decoder_num_hidden_layers": 1_000_000},
        "width": {"hidden_size": 2**20}, "mlp": {"intermediate_size": 10**9}, "image": {"image_size": 32 * 4000}}


@pytest.mark.parametrize("change", HUGE, ids=list(HUGE))
def test_absurd_sizes_for_the_weights_are_refused_before_building(saved, change, monkeypatch):
    folder, good = saved
    (folder / "config.json").write_text(json.dumps({**good, **HUGE[change]}))
    built = []
    monkeypatch.setattr(mim_hub.MAEModel, "__init__", lambda self, *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError("built")))
    loaders = [mim_hub.MAEForPreTraining.from_pretrained]
    if "decoder" not in change:  # (the base model builds no decoder: its size does not matter to it)
        loaders += [mim_hub.MAEModel.from_pretrained, AutoModel.from_pretrained]
    for load in loaders:
        with pytest.raises(ValueError, match="refusing to build a model more than"):
            load(folder)
    assert not built


def test_absurd_overrides_are_refused_too(saved):
    folder, _ = saved
    with pytest.raises(ValueError, match="refusing to build"):
        mim_hub.MAEModel.from_pretrained(folder, num_hidden_layers=100_000)


def test_plausible_configs_load(saved):
    folder, _ = saved
    model = mim_hub.MAEForPreTraining.from_pretrained(folder)  # the decoder is not in the file: still far inside the bound
    assert isinstance(model, mim_hub.MAEForPreTraining)


def test_without_weights_the_model_is_built_as_asked(tmp_path):
    config, _ = tiny_models._mae()
    config.save_pretrained(tmp_path)
    assert weights_parameters(str(tmp_path)) is None
    config.num_hidden_layers = 40
    check_config_fits_weights(config, str(tmp_path))  # nothing to compare with
    assert len(mim_hub.MAEModel(config).encoder.layers) == 40


@pytest.mark.parametrize("method", METHODS)
def test_estimate_is_close_to_the_real_count_of_every_method(method):
    configs = [tiny_models.tiny(method)[0], method_classes(method)["config"]()]
    if method == "simmim":
        configs += [tiny_models._simmim_swin()[0], mim_hub.SimMIMConfig(backbone="swin")]
    for config in configs:
        for role in ("model", "pretraining", "classification"):
            with init_empty_weights(include_buffers=False):
                model = method_classes(method)[role](config)
            real = sum(p.numel() for p in model.parameters())
            estimate = estimated_parameters(config, pretraining=role == "pretraining")
            # a legitimate folder (weights of any role of this config) is never refused
            assert estimate <= MAX_PARAMETER_RATIO * real + 2**22, (method, role, estimate, real)
            assert estimate >= real / 4, (method, role, estimate, real)


def test_weights_count_comes_from_the_header_alone(saved):
    folder, _ = saved
    state = mim_hub.MAEModel.from_pretrained(folder).state_dict()
    assert weights_parameters(str(folder))[0] == sum(t.numel() for t in state.values() if t.is_floating_point())
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        mim_hub.MAEModel.from_pretrained(folder)


def test_a_classifier_whose_config_keeps_the_default_decoder_fields_loads(tmp_path):
    """A converted classifier's config holds MAEConfig's default decoder (8 x 512 wide) that no
    classifier builds: it is not counted against its (tiny) weights."""
    config = mim_hub.MAEConfig(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=256, num_labels=5, use_mean_pooling=True)
    mim_hub.MAEForImageClassification(config).save_pretrained(tmp_path)
    assert isinstance(mim_hub.MAEForImageClassification.from_pretrained(tmp_path), mim_hub.MAEForImageClassification)
    assert isinstance(AutoModel.from_pretrained(tmp_path), mim_hub.MAEModel)
    with pytest.raises(ValueError, match="refusing to build"):  # a pre-training model of it would build that decoder
        mim_hub.MAEForPreTraining.from_pretrained(tmp_path, decoder_num_hidden_layers=64)
