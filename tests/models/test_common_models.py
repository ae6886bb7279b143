"""The checks every model class of every method passes, in the spirit of transformers' own common
model tests (`ModelTesterMixin`), written for our models: one list of classes (`MODEL_CLASSES`),
one set of checks.

Adding a model class is one line in `MODEL_CLASSES`: (the `tests/tiny_models.py` key of its tiny
config, its class name in `mim_hub`). A new method first adds its tiny config to `TINY` there
(config, extra pre-training inputs for a batch of 2 images of 32x32).

The checks: save/load round trips (a folder; `from_pretrained(None, config=, state_dict=)`),
every parameter and buffer set by `_init_weights` (deterministically, nothing left from memory),
missing keys initialised on loading, no trainable parameter the forward leaves unused (one
forward and backward; and real DDP with `find_unused_parameters=False` for every classifier and
backbone), training
with gradient checkpointing, the recorded hidden states and attention weights per stack,
determinism with fixed masks, batching equivalence, eager and sdpa attention equal, loading in
bfloat16 / float16, building on the meta device.
"""

from __future__ import annotations

import gc
import inspect
import os

import pytest
import torch
import torch.distributed as dist
from transformers.modeling_layers import GradientCheckpointingLayer

import mim_hub
from tiny_models import other_stacks, tiny

# (tiny config key, class name): every model class of every method, one line each
MODEL_CLASSES = [
    ("mae", "MAEModel"), ("mae", "MAEForPreTraining"), ("mae", "MAEForImageClassification"), ("mae", "MAEBackbone"),
    ("simmim", "SimMIMModel"), ("simmim", "SimMIMForPreTraining"), ("simmim", "SimMIMForImageClassification"), ("simmim", "SimMIMBackbone"),
    ("simmim_swin", "SimMIMModel"), ("simmim_swin", "SimMIMForPreTraining"), ("simmim_swin", "SimMIMForImageClassification"),
    ("simmim_swin", "SimMIMBackbone"),
    ("cae", "CAEModel"), ("cae", "CAEForPreTraining"), ("cae", "CAEForImageClassification"), ("cae", "CAEBackbone"),
    ("mr_mae", "MRMAEModel"), ("mr_mae", "MRMAEForPreTraining"), ("mr_mae", "MRMAEForImageClassification"), ("mr_mae", "MRMAEBackbone"),
    ("color_mae", "ColorMAEModel"), ("color_mae", "ColorMAEForPreTraining"), ("color_mae", "ColorMAEForImageClassification"),
    ("color_mae", "ColorMAEBackbone"),
    ("crate_mae", "CrateMAEModel"), ("crate_mae", "CrateMAEForPreTraining"), ("crate_mae", "CrateMAEForImageClassification"),
    ("crate_mae", "CrateMAEBackbone"),
    ("hpm", "HPMModel"), ("hpm", "HPMForPreTraining"), ("hpm", "HPMForImageClassification"), ("hpm", "HPMBackbone"),
    ("spark", "SparKModel"), ("spark", "SparKForPreTraining"), ("spark", "SparKForImageClassification"), ("spark", "SparKBackbone"),
]
IDS = [f"{key}-{name}" for key, name in MODEL_CLASSES]
BATCH = 2


def kind_of(name: str) -> str:
    for kind in ("ForPreTraining", "ForImageClassification", "Backbone"):
        if name.endswith(kind):
            return kind
    return "Model"


def build(key: str, name: str, seed: int = 0):
    """(model in eval mode, its config, the keyword inputs of a batch of 2)."""
    config, extra = tiny(key)
    torch.manual_seed(seed)
    model = getattr(mim_hub, name)(config).eval()
    return model, config, inputs_for(model, name, extra)


def inputs_for(model, name: str, extra: dict) -> dict:
    """pixel_values plus what the class takes of the tiny config's fixed masks (so every forward is
    deterministic), and labels for a classifier."""
    accepted = set(inspect.signature(model.forward).parameters)
    kwargs = {"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    for field, value in extra.items():
        if field not in accepted or (field == "labels" and kind_of(name) != "ForPreTraining"):
            continue
        if field == "bool_masked_pos" and kind_of(name) == "Model" and getattr(getattr(model, "embeddings", None), "mask_token", 0) is None:
            continue  # (SimMIM's base model masks only when built with a mask token)
        kwargs[field] = value
    if kind_of(name) == "ForImageClassification":
        kwargs["labels"] = torch.tensor([0, 2])
    return kwargs


def tensors_of(output) -> dict[str, torch.Tensor]:
    """Every tensor of a model output by name (tuples of tensors flattened as name.i)."""
    found = {}
    for field, value in output.items():
        if isinstance(value, torch.Tensor):
            found[field] = value
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                if isinstance(item, torch.Tensor):
                    found[f"{field}.{i}"] = item
    return found


def assert_same_outputs(a, b, atol: float = 0.0, rtol: float = 0.0):
    first, second = tensors_of(a), tensors_of(b)
    assert first.keys() == second.keys()
    for field in first:
        torch.testing.assert_close(first[field].float(), second[field].float(), atol=atol, rtol=rtol, msg=lambda m: f"{field}: {m}")


def scalar_objective(output) -> torch.Tensor:
    """The loss when the model gives one, else the sum of every floating output (so each output
    counts): what one training step back-propagates."""
    if getattr(output, "loss", None) is not None:
        return output.loss
    return sum(t.float().sum() for t in tensors_of(output).values() if t.is_floating_point())


def named_tensors(model) -> dict[str, torch.Tensor]:
    found = dict(model.named_parameters())
    found.update(model.named_buffers())
    return found


# ---- loading ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_save_and_load_round_trip(key, name, tmp_path):
    model, config, kwargs = build(key, name)
    model.save_pretrained(tmp_path)
    loaded, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert type(loaded) is type(model) and not loaded.training
    assert named_tensors(loaded).keys() == named_tensors(model).keys()
    for field, tensor in named_tensors(model).items():
        assert torch.equal(named_tensors(loaded)[field], tensor), field
        assert named_tensors(loaded)[field].requires_grad == tensor.requires_grad, field  # (frozen tables stay frozen)
    with torch.no_grad():
        assert_same_outputs(model(**kwargs), loaded(**kwargs))


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_load_from_a_state_dict_without_a_folder(key, name, monkeypatch):
    """transformers' documented `from_pretrained(None, config=config, state_dict=sd)`, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, config, kwargs = build(key, name)
    loaded, info = type(model).from_pretrained(None, config=config, state_dict=model.state_dict(), output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        assert_same_outputs(model(**kwargs), loaded.eval()(**kwargs))


def _forget_initialisation(model) -> None:
    """Fill every floating parameter and buffer with NaN (integer ones with a huge value) and clear
    transformers' "already initialised" marks, as memory a loader hands over could hold."""
    for tensor in named_tensors(model).values():
        with torch.no_grad():
            tensor.fill_(float("nan") if tensor.is_floating_point() else 2**30)
        if hasattr(tensor, "_is_hf_initialized"):
            del tensor._is_hf_initialized
    for module in model.modules():
        if hasattr(module, "_is_hf_initialized"):
            del module._is_hf_initialized


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_init_weights_sets_every_parameter_and_buffer_deterministically(key, name):
    states = []
    for _ in range(2):
        model, _, _ = build(key, name)
        _forget_initialisation(model)
        torch.manual_seed(7)
        model.initialize_weights()
        unset = [field for field, t in named_tensors(model).items()
                 if (t.is_floating_point() and not torch.isfinite(t).all()) or (not t.is_floating_point() and (t == 2**30).any())]
        assert not unset, f"{name}: _init_weights leaves {unset} as they were"
        states.append(named_tensors(model))
    for field, tensor in states[0].items():
        assert torch.equal(tensor, states[1][field]), f"{name}: {field} is not initialised deterministically"


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_keys_missing_on_loading_are_initialised(key, name):
    """Half the keys left out of a state dict: reported missing, initialised by `_init_weights`
    (the same with the same seed, finite), the other half loaded as given."""
    model, config, kwargs = build(key, name)
    state = model.state_dict()
    kept = {k: v for i, (k, v) in enumerate(state.items()) if i % 2 == 0}
    loads = []
    for _ in range(2):
        torch.manual_seed(11)
        loaded, info = type(model).from_pretrained(None, config=config, state_dict=kept, output_loading_info=True)
        parameters = {k for k, _ in model.named_parameters()}  # and persistent buffers (BatchNorm's statistics) may be reported
        assert (set(state) - set(kept)) & parameters <= set(info["missing_keys"]) <= set(state) - set(kept)
        loads.append(loaded.state_dict())
    for field, tensor in loads[0].items():
        assert torch.equal(tensor, loads[1][field]), f"{field}: not initialised deterministically"
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all() and tensor.abs().max() < 1e4, f"{field}: {tensor.abs().max()}"
        if field in kept:
            assert torch.equal(tensor, kept[field]), field


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_builds_on_the_meta_device_and_loads_off_it(key, name, tmp_path):
    model, config, kwargs = build(key, name)
    with torch.device("meta"):
        empty = type(model)(config)
    assert all(t.is_meta for t in named_tensors(empty).values())
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)  # (transformers builds on the meta device, then loads)
    assert not [field for field, t in named_tensors(loaded).items() if t.is_meta]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_loads_and_runs_in_half_precision(key, name, dtype, tmp_path):
    model, config, kwargs = build(key, name)
    model.save_pretrained(tmp_path)
    half = type(model).from_pretrained(tmp_path, dtype=dtype).eval()
    assert {p.dtype for p in half.parameters()} == {dtype}
    assert half.dtype == dtype
    if dtype == torch.float16:
        return  # (the float16 arithmetic of CPU kernels is incomplete; the accelerator run checks it)
    kwargs = {k: v.to(dtype) if v.is_floating_point() and k == "pixel_values" else v for k, v in kwargs.items()}
    with torch.no_grad():
        out = half(**kwargs)
        reference = model(**{k: v.float() if k == "pixel_values" else v for k, v in kwargs.items()})
    main = "logits" if "logits" in out else "feature_maps" if "feature_maps" in out else "last_hidden_state"
    low, high = (out[main][0], reference[main][0]) if main == "feature_maps" else (out[main], reference[main])
    assert torch.isfinite(low.float()).all()
    assert (low.float() - high).abs().max() <= 0.1 * high.abs().max() + 0.1, main


# ---- training ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_every_trainable_parameter_gets_a_gradient(key, name):
    """What DDP with `find_unused_parameters=False` (torch's default, and the Trainer's under
    gradient checkpointing) needs: one forward and backward reach every trainable parameter."""
    model, config, kwargs = build(key, name)
    model.train()
    scalar_objective(model(**kwargs)).backward()
    unused = [field for field, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{name} holds trainable parameters its forward does not use: {unused}"


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_gradient_checkpointing_gives_the_same_gradients(key, name):
    model, config, kwargs = build(key, name)
    assert model.supports_gradient_checkpointing
    model.train()  # (with the tiny configs' stochastic depth: the same draws, seeded, and re-drawn alike when recomputed)
    torch.manual_seed(5)
    scalar_objective(model(**kwargs)).backward()
    plain = {field: p.grad.clone() for field, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(m.gradient_checkpointing for m in layers)
    torch.manual_seed(5)
    scalar_objective(model(**kwargs)).backward()
    for field, grad in plain.items():  # (the same sums, accumulated in another order)
        torch.testing.assert_close(dict(model.named_parameters())[field].grad, grad, atol=1e-4 * (1 + grad.abs().max().item()), rtol=1e-3,
                                   msg=lambda m: f"{field}: {m}")


@pytest.mark.parametrize("key,name", [case for case in MODEL_CLASSES if kind_of(case[1]) in ("ForImageClassification", "Backbone")],
                         ids=[i for i, case in zip(IDS, MODEL_CLASSES) if kind_of(case[1]) in ("ForImageClassification", "Backbone")])
def test_ddp_without_find_unused_parameters(key, name, tmp_path):
    """Real DDP (gloo) with `find_unused_parameters=False`: a parameter no forward uses makes the
    second step raise "Expected to have finished reduction in the prior iteration". One process
    is enough for the reducer to check it (and costs no process start-up)."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        _two_ddp_steps(key, name)
    finally:
        # everything that holds the group (DDP's reducer) is gone with _two_ddp_steps' frame: the
        # group is destroyed here, not later inside the reducer's destructor, which holds the GIL
        # while gloo's threads are joined (seen to hang about one run in three)
        gc.collect()
        dist.destroy_process_group()


def _two_ddp_steps(key: str, name: str) -> None:
    model, config, kwargs = build(key, name)
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        scalar_objective(ddp(**kwargs)).backward()
        optimizer.step()


# ---- outputs -----------------------------------------------------------------------------------------------------------
def _recorded_block_classes(model) -> tuple[type, ...]:
    specs = model._can_record_outputs["hidden_states"]
    return tuple({spec.target_class for spec in (specs if isinstance(specs, list) else [specs])})


def _count_blocks(module, classes) -> int:
    return sum(1 for m in module.modules() if isinstance(m, classes))


def _check_stack(hidden_states, attentions, blocks: int, where: str) -> None:
    assert len(hidden_states) == blocks + 1 and len(attentions) == blocks, where
    for i, weights in enumerate(attentions):
        assert weights.ndim == 4 and weights.shape[0] % BATCH == 0, (where, i, weights.shape)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), msg=lambda m: f"{where} {i}: {m}")
    for i, hidden in enumerate(hidden_states):
        assert hidden.ndim == 3 and hidden.shape[0] == BATCH, (where, i, hidden.shape)
    for i, weights in enumerate(attentions):  # queries: the tokens of the block's output (Swin: of a window)
        tokens = hidden_states[i + 1].shape[1]
        assert weights.shape[-2] == tokens or tokens % weights.shape[-2] == 0, (where, i, weights.shape, tokens)


def _check_stage_maps(model, config, kwargs, name: str) -> None:
    with torch.no_grad():
        plain = model(**kwargs)
        out = model(**kwargs, output_hidden_states=True, output_attentions=True)
    assert plain.get("hidden_states") is None and out.get("attentions") is None, name
    if kind_of(name) == "Backbone":
        assert len(out.feature_maps) == len(model.out_features) and all(m.ndim == 4 for m in out.feature_maps)
        return
    assert len(out.hidden_states) == len(config.depths) + 1, name  # the stem's map, then each stage's
    for i, stage in enumerate(out.hidden_states):
        assert stage.ndim == 4 and stage.shape[0] == BATCH, (name, i, stage.shape)


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_hidden_states_and_attentions_of_each_stack(key, name):
    model, config, kwargs = build(key, name)
    if not model._can_record_outputs:  # a convnet (SparK): its stage maps, as ConvNextModel gives them; no attention
        _check_stage_maps(model, config, kwargs, name)
        return
    classes = _recorded_block_classes(model)
    base = getattr(model, model.base_model_prefix, model)
    with torch.no_grad():
        plain = model(**kwargs)
        out = model(**kwargs, output_hidden_states=True, output_attentions=True)
    assert plain.get("hidden_states") is None and plain.get("attentions") is None
    _check_stack(out.hidden_states, out.attentions, _count_blocks(base, classes), f"{name} encoder")
    for stack_name, stack in other_stacks(model).items():
        blocks = _count_blocks(stack, classes) if kind_of(name) == "ForPreTraining" and stack is not None else 0
        if blocks:
            _check_stack(out[f"{stack_name}_hidden_states"], out[f"{stack_name}_attentions"], blocks, f"{name} {stack_name}")
        else:
            assert out.get(f"{stack_name}_hidden_states") is None, (name, stack_name)
    # the same tensors whatever else is asked for; the encoder's the base model's own
    with torch.no_grad():
        only_hidden = model(**kwargs, output_hidden_states=True)
    assert only_hidden.get("attentions") is None
    for a, b in zip(only_hidden.hidden_states, out.hidden_states):
        torch.testing.assert_close(a, b)
    if base is not model and kind_of(name) != "ForPreTraining":
        with torch.no_grad():
            own = base(kwargs["pixel_values"], output_hidden_states=True)
        for a, b in zip(own.hidden_states, out.hidden_states):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_same_inputs_same_outputs(key, name):
    """With the masks fixed (noise / bool_masked_pos given) a forward is a function of its inputs."""
    model, config, kwargs = build(key, name)
    with torch.no_grad():
        assert_same_outputs(model(**kwargs), model(**kwargs))


def _one_sample(kwargs: dict, index: int) -> dict:
    single = {}
    for field, value in kwargs.items():
        per_sample = value.shape[0] // BATCH
        single[field] = value[index * per_sample:(index + 1) * per_sample]  # (CAE's labels: [B*M], sample-major)
    return single


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_batching_does_not_change_any_sample(key, name):
    model, config, kwargs = build(key, name)
    with torch.no_grad():
        batched = tensors_of(model(**kwargs, output_hidden_states=True))
        for index in range(BATCH):
            single = tensors_of(model(**_one_sample(kwargs, index), output_hidden_states=True))
            compared = 0
            for field, value in single.items():
                whole = batched[field]
                if whole.ndim == 0 or whole.shape[0] != BATCH * value.shape[0] or "loss" in field:
                    continue  # (batch means)
                part = whole[index * value.shape[0]:(index + 1) * value.shape[0]]
                torch.testing.assert_close(part, value, atol=1e-5, rtol=1e-4, msg=lambda m: f"{field}: {m}")
                compared += 1
            assert compared >= 2, (name, sorted(single))


@pytest.mark.parametrize("key,name", MODEL_CLASSES, ids=IDS)
def test_eager_and_sdpa_attention_agree(key, name):
    model, config, kwargs = build(key, name)
    if not model._supports_sdpa:  # no attention (a convnet): asked for one, it says so, as transformers' ConvNextModel
        with pytest.raises(ValueError, match="does not support"):
            model.set_attn_implementation("sdpa")
        return
    results = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            results[implementation] = model(**kwargs)
    assert_same_outputs(results["eager"], results["sdpa"], atol=1e-5, rtol=1e-4)


def test_the_list_covers_every_exported_model_class():
    """A new model class in `mim_hub` is a new line in MODEL_CLASSES."""
    from transformers import PreTrainedModel

    exported = {n for n in mim_hub.__all__ if inspect.isclass(getattr(mim_hub, n)) and issubclass(getattr(mim_hub, n), PreTrainedModel)
                and not n.endswith("PreTrainedModel")}
    assert exported == {name for _, name in MODEL_CLASSES}
