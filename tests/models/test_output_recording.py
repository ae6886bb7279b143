"""Hidden states and attention weights are recorded by transformers' output capture, declared once
per model family in `_can_record_outputs` (models/encoder.py); these tests pin what they hold."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils.output_capturing import OutputRecorder

import mim_hub
from tiny_models import TINY, method_of, other_stacks, tiny

_PREFIX = {"mae": "MAE", "color_mae": "ColorMAE", "simmim": "SimMIM", "cae": "CAE", "mr_mae": "MRMAE", "crate_mae": "CrateMAE", "hpm": "HPM"}
MODEL_CLASSES = sorted(
    (name for name in mim_hub.__all__ if inspect.isclass(getattr(mim_hub, name)) and issubclass(getattr(mim_hub, name), PreTrainedModel)),
)


def _model(key: str, kind: str):
    config, extra = tiny(key)
    torch.manual_seed(0)
    model = getattr(mim_hub, _PREFIX[method_of(key)] + kind)(config).eval()
    return model, config, extra


def _pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", MODEL_CLASSES)
def test_every_model_class_declares_what_it_records(name):
    cls = getattr(mim_hub, name)
    declared = cls._can_record_outputs
    if declared == {} and not cls._supports_sdpa:  # a convnet (SparK): no attention; its forward collects its stage maps itself
        return
    assert isinstance(declared, dict) and set(declared) == {"hidden_states", "attentions"}, name
    for key, recorders in declared.items():
        recorders = recorders if isinstance(recorders, list) else [recorders]
        assert recorders, (name, key)
        for recorder in recorders:
            assert isinstance(recorder, OutputRecorder) and issubclass(recorder.target_class, torch.nn.Module)
            assert recorder.index == (0 if key == "hidden_states" else 1)  # blocks return (hidden, weights)


@pytest.mark.parametrize("name", [n for n in MODEL_CLASSES if not n.endswith("PreTrainedModel")])
def test_output_flags_travel_in_kwargs(name):
    """As transformers v5: no forward and no recorded block names an output flag; they arrive in
    `**kwargs` (TransformersKwargs) and are handed on, down to the attention."""
    cls = getattr(mim_hub, name)
    forwards = [cls.forward] + [r.target_class.forward for r in cls._can_record_outputs.get("hidden_states", [])]
    for forward in forwards:
        parameters = inspect.signature(forward).parameters
        assert not {"output_attentions", "output_hidden_states"} & set(parameters), (name, forward.__qualname__)
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()), (name, forward.__qualname__)


def test_model_classes_cover_every_method():
    assert len(MODEL_CLASSES) >= 6 * 4 and {"SimMIMBackbone", "CrateMAEForImageClassification", "CAEForPreTraining"} <= set(MODEL_CLASSES)


@pytest.mark.parametrize("key", sorted(TINY))
def test_every_recorded_block_class_is_in_the_models(key):
    """Each family's recorders name the blocks its models run (no stale declaration)."""
    for kind in ("Model", "ForPreTraining"):
        model, _, _ = _model(key, kind)
        present = {type(m) for m in model.modules()}
        for recorders in model._can_record_outputs.values():
            assert any(r.target_class in present for r in recorders), (key, kind)


@pytest.mark.parametrize("key", sorted(TINY))
def test_base_model_hidden_states_are_every_blocks_output(key):
    """Counts and shapes; hidden_states[-1] is the last block's output before the final norm;
    the final norm of it is last_hidden_state; attentions are each block's softmax rows."""
    model, config, _ = _model(key, "Model")
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True, output_attentions=True)
        plain = model(_pixels())
    blocks = [m for m in model.modules() if type(m) in {r.target_class for r in model._can_record_outputs["hidden_states"]}]
    assert len(out.hidden_states) == len(blocks) + 1 and len(out.attentions) == len(blocks)
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state)
    for weights in out.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    last = out.hidden_states[-1]
    fusion = getattr(model.embeddings, "fusion", None)
    if model.layernorm is not None and fusion is None and not key.startswith("simmim_swin"):
        torch.testing.assert_close(model.layernorm(last), out.last_hidden_state)
    elif model.layernorm is None:
        torch.testing.assert_close(last, out.last_hidden_state)


@pytest.mark.parametrize("key", ["mae", "crate_mae"])
def test_hidden_states_chain_block_by_block(key):
    """hidden_states[i + 1] is block i applied to hidden_states[i]; attentions[i] is block i's weights."""
    model, _, _ = _model(key, "Model")
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True, output_attentions=True)
        layers = model.encoder.layers if key == "mae" else model.layers
        for i, layer in enumerate(layers):
            args = (out.hidden_states[i], None) if key == "mae" else (out.hidden_states[i],)
            hidden, weights = layer(*args, output_attentions=True)
            torch.testing.assert_close(hidden, out.hidden_states[i + 1])
            torch.testing.assert_close(weights, out.attentions[i])


@pytest.mark.parametrize("key", sorted(TINY))
def test_pre_training_records_the_encoder_and_each_other_stack_apart(key):
    """`hidden_states` / `attentions` are the encoder's alone (transformers' ViTMAE and VideoMAE);
    each stack outside it has its own fields (`decoder_...`, CAE's `regressor_...`), each starting
    with that stack's input; the tuple form holds the same tensors in field order."""
    model, config, extra = _model(key, "ForPreTraining")
    x = _pixels()
    with torch.no_grad():
        torch.manual_seed(3)
        out = model(x, output_hidden_states=True, output_attentions=True, **extra)
        torch.manual_seed(3)
        as_tuple = model(x, output_hidden_states=True, output_attentions=True, return_dict=False, **extra)
        encoded = getattr(model, model.base_model_prefix)
    encoder_blocks = sum(1 for m in encoded.modules() if isinstance(m, GradientCheckpointingLayer))
    assert len(out.hidden_states) == encoder_blocks + 1 and len(out.attentions) == encoder_blocks
    for name, stack in other_stacks(model).items():
        blocks = sum(1 for m in stack.modules() if isinstance(m, GradientCheckpointingLayer)) if stack is not None else 0
        if blocks:
            assert len(out[f"{name}_hidden_states"]) == blocks + 1 and len(out[f"{name}_attentions"]) == blocks, name
        else:
            assert f"{name}_hidden_states" not in out, name
    values = [v for v in out.values()]
    assert len(as_tuple) == len(values)
    for a, b in zip(as_tuple, values):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b)
        else:
            assert len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))


def test_mae_decoder_hidden_states_start_with_the_decoder_input():
    model, config, extra = _model("mae", "ForPreTraining")
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True, **extra)
        decoder_input = out.decoder_hidden_states[0]
        hidden = decoder_input
        for layer in model.decoder.transformer.layers:
            hidden = layer(hidden)[0]
        torch.testing.assert_close(hidden, out.decoder_hidden_states[-1])
        assert decoder_input.shape == (2, 1 + 64, config.decoder_hidden_size)
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        torch.testing.assert_close(model.mae.layernorm(out.hidden_states[-1]), out.last_hidden_state)


def test_a_nested_model_that_recorded_alone_does_not_record_twice():
    """The base model's hooks are installed once, whoever asks first; the decoder's exist for one call."""
    model, config, extra = _model("mae", "ForPreTraining")
    x = _pixels()
    with torch.no_grad():
        alone = model.mae(x, output_hidden_states=True, output_attentions=True)
        both = model(x, output_hidden_states=True, output_attentions=True, **extra)
        again = model.mae(x, output_hidden_states=True, output_attentions=True)
    layers = config.num_hidden_layers
    assert len(alone.hidden_states) == len(again.hidden_states) == len(both.hidden_states) == layers + 1
    assert len(both.attentions) == layers
    assert len(both.decoder_hidden_states) == config.decoder_num_hidden_layers + 1
    assert len(both.decoder_attentions) == config.decoder_num_hidden_layers
    assert not any(m._forward_hooks for m in model.decoder.modules())  # (removed after the call)


def test_nothing_is_hooked_until_something_is_asked_for():
    """The plain forward runs without hooks: they are installed on the first request only."""
    model, _, extra = _model("mae", "ForPreTraining")
    with torch.no_grad():
        model(_pixels(), **extra)
        assert not any(m._forward_hooks for m in model.modules())
        model(_pixels(), output_attentions=True, **extra)
    assert any(m._forward_hooks for m in model.modules())


def test_the_config_flags_and_none_mean_the_same():
    model, config, _ = _model("cae", "Model")
    model.config.output_hidden_states = True
    with torch.no_grad():
        for out in (model(_pixels()), model(_pixels(), output_hidden_states=None)):
            assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert model(_pixels(), output_hidden_states=False).hidden_states is None


def test_classifier_tuple_and_config_return_dict():
    model, config, _ = _model("simmim", "ForImageClassification")
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True)
        logits, hidden = model(_pixels(), output_hidden_states=True, return_dict=False)
        model.config.return_dict = False  # (transformers' convention for the outer model; its base model is read by name)
        default = model(_pixels())
        base = model.simmim(_pixels())
    torch.testing.assert_close(logits, out.logits)
    assert len(hidden) == config.num_hidden_layers + 1
    assert isinstance(default, tuple) and torch.equal(default[0], out.logits)
    assert base.pooler_output.shape == (2, config.hidden_size)


def test_recording_under_gradient_checkpointing():
    model, config, extra = _model("mae", "ForPreTraining")
    model.train()
    model.gradient_checkpointing_enable()
    out = model(_pixels(), output_hidden_states=True, **extra)
    out.loss.backward()
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert len(out.decoder_hidden_states) == config.decoder_num_hidden_layers + 1
    assert model.mae.embeddings.patch_embed.projection.weight.grad is not None


@pytest.mark.parametrize("key", sorted(TINY))
def test_every_model_finds_its_patch_embedding(key):
    """transformers' `get_input_embeddings` (via `_input_embed_layer`): the base model's patch
    embedding, the same module from every model that wraps the base model."""
    from torch import nn

    config, _ = tiny(key)
    torch.manual_seed(0)
    base = getattr(mim_hub, _PREFIX[method_of(key)] + "Model")(config)
    embedding = base.get_input_embeddings()
    first_conv = next(m for m in embedding.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == config.num_channels, key
    for kind in ("ForPreTraining", "ForImageClassification", "Backbone"):
        model = getattr(mim_hub, _PREFIX[method_of(key)] + kind)(config)
        wrapped = model.base_model.get_input_embeddings()
        assert model.get_input_embeddings() is wrapped and type(wrapped) is type(embedding), (key, kind)
