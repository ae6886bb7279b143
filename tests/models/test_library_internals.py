"""The private attributes of transformers and accelerate that mim_hub touches, each in one function
(`mim_hub.models.library_internals`): these tests fail, naming the attribute, when a release of
either library changes what they rely on."""

from __future__ import annotations

import torch
from torch import nn

import mim_hub
from mim_hub.models.library_internals import accelerate_hooks, forget_key_mapping
from tiny_models import tiny


def test_transformers_records_a_key_mapping_in_weight_conversions(tmp_path):
    """What `forget_key_mapping` clears: transformers keeps the mapping a model was loaded with in
    `_weight_conversions` (a non-empty list), and reverses it on saving unless it is cleared."""
    config, _ = tiny("cae")
    config.use_mean_pooling = False
    mim_hub.CAEForImageClassification(config).save_pretrained(tmp_path / "saved")
    loaded = mim_hub.CAEForImageClassification.from_pretrained(tmp_path / "saved", use_mean_pooling=True,
                                                               key_mapping={r"^cae\.layernorm\.": "cae.fc_norm."})
    assert isinstance(getattr(loaded, "_weight_conversions", None), list) and loaded._weight_conversions, \
        "transformers no longer records a key mapping in `_weight_conversions`: update library_internals.forget_key_mapping"
    forget_key_mapping(loaded)
    assert loaded._weight_conversions == []


def test_the_cae_fine_tuning_start_saves_under_its_own_names(tmp_path):
    """The one use of `forget_key_mapping`: loaded from a pre-trained encoder with mean pooling,
    the final norm becomes `fc_norm` and the saved file holds `cae.fc_norm`, not the old name."""
    from safetensors.torch import load_file

    config, _ = tiny("cae")
    config.use_mean_pooling = False
    mim_hub.CAEForImageClassification(config).save_pretrained(tmp_path / "pretrained")
    tuned = mim_hub.CAEForImageClassification.from_pretrained(tmp_path / "pretrained", use_mean_pooling=True)
    tuned.save_pretrained(tmp_path / "tuned")
    keys = set(load_file(str(tmp_path / "tuned" / "model.safetensors")))
    assert "cae.fc_norm.weight" in keys and not any(k.startswith("cae.layernorm") for k in keys)


def test_accelerate_keeps_a_modules_hooks_in_hf_hook():
    """What `accelerate_hooks` reads: `add_hook_to_module` sets `module._hf_hook`; appended hooks
    become a `SequentialHook`."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    layer = nn.Linear(2, 2)
    assert accelerate_hooks(layer) == []
    first, second = ModelHook(), ModelHook()
    add_hook_to_module(layer, first)
    assert accelerate_hooks(layer) == [first], "accelerate no longer keeps a module's hook in `_hf_hook`"
    add_hook_to_module(layer, second, append=True)
    assert accelerate_hooks(layer) == [first, second]
    remove_hook_from_module(layer)
    assert accelerate_hooks(layer) == [] and torch.equal(layer(torch.ones(1, 2)), layer(torch.ones(1, 2)))
