"""Attention dispatch: every model runs the implementation `config._attn_implementation` names,
through transformers' attention interface, and every implementation gives the same numbers."""

import pytest
import torch
from transformers import AutoModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

import mim_hub
import mim_hub.layers.attention as attention
import mim_hub.layers.attention_cpu as attention_cpu
from mim_hub.auto import method_classes
from tiny_models import TINY, method_of, tiny

IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "mim_cpu_fused")
ROLES = {"model": "last_hidden_state", "pretraining": "loss", "classification": "logits"}


def _variants():
    """The tiny models, plus the attention biases they leave out: SimMIM's ViT already has its
    shared relative position table; CAE with one per block; Swin with shifted (masked) windows."""
    variants = {key: (lambda key=key: tiny(key)) for key in TINY}

    def cae_relative():
        config, extra = tiny("cae")
        config.use_relative_position_bias = True
        return config, extra

    def swin_shifted():
        config, extra = tiny("simmim_swin")
        config.depths = [2, 2]
        return config, extra

    variants.update({"cae_relative_position": cae_relative, "simmim_swin_shifted": swin_shifted})
    return variants


VARIANTS = _variants()


@pytest.fixture
def counted(monkeypatch):
    """Calls per implementation, counted where the interface hands them out; flex_attention runs
    uncompiled (torch's own reference path: inductor's CPU build of it takes a minute)."""
    import transformers.integrations.flex_attention as flex
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setattr(flex, "compile_friendly_flex_attention", lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw))
    calls = {name: 0 for name in IMPLEMENTATIONS}

    def counting(name, function):
        def run(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return run

    for name in IMPLEMENTATIONS[1:]:
        monkeypatch.setitem(AttentionInterface._global_mapping, name, counting(name, AttentionInterface._global_mapping[name]))
    monkeypatch.setattr(attention, "eager_attention_forward", counting("eager", attention.eager_attention_forward))
    return calls


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_implementation_runs_and_agrees(variant, role, counted):
    config, extra = VARIANTS[variant]()
    torch.manual_seed(0)
    model = method_classes(method_of(variant.split("_relative")[0].split("_shifted")[0]))[role](config).eval()
    x = torch.randn(2, config.num_channels, 32, 32)
    kwargs = extra if role == "pretraining" else {}
    outputs, attentions = {}, {}
    for name in IMPLEMENTATIONS:
        model.set_attn_implementation(name)
        assert model.config._attn_implementation == name
        before = dict(counted)
        with torch.no_grad():
            outputs[name] = model(x, **kwargs)[ROLES[role]]
            if role == "model":
                attentions[name] = model(x, output_attentions=True).attentions
        assert counted[name] > before[name], f"{name} never ran"
        assert all(counted[other] == before[other] for other in IMPLEMENTATIONS if other not in (name, "eager")), \
            f"{name} asked for, another implementation ran"
        if name != "eager" and role != "model":
            assert counted["eager"] == before["eager"], f"{name} asked for, eager ran"
    for name in IMPLEMENTATIONS[1:]:
        torch.testing.assert_close(outputs[name], outputs["eager"], rtol=1e-5, atol=1e-5, msg=f"{name} vs eager")
    if role == "model":  # output_attentions: the weights, whatever the implementation (eager computes them)
        for name in IMPLEMENTATIONS:
            assert len(attentions[name]) >= 1 and all(a is not None for a in attentions[name])
            for a, b in zip(attentions[name], attentions["eager"]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(attentions["eager"][0].sum(-1), torch.ones(attentions["eager"][0].shape[:-1]))


@pytest.mark.parametrize("variant", ["simmim", "cae_relative_position", "simmim_swin_shifted", "crate_mae"])
def test_gradients_agree_between_implementations(variant, monkeypatch):
    """Fine-tuning gradients, a learned bias (relative position tables) included: the fused CPU kernel serves these
    short tiny sequences too (its minimum length lowered), with the same gradients as eager."""
    monkeypatch.setattr(attention_cpu, "FUSED_BIAS_GRAD_MIN_TOKENS", 1)
    config, extra = VARIANTS[variant]()
    torch.manual_seed(0)
    model = method_classes(method_of(variant.split("_relative")[0].split("_shifted")[0]))["classification"](config).eval()
    x = torch.randn(2, config.num_channels, 32, 32)
    grads = {}
    for name in ("eager", "sdpa", "mim_cpu_fused"):
        model.set_attn_implementation(name)
        model.zero_grad(set_to_none=True)
        model(x, labels=torch.tensor([0, 2])).loss.backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any("relative_position" in n for n in grads["eager"]) or variant == "crate_mae"
    for name in ("sdpa", "mim_cpu_fused"):
        assert grads[name].keys() == grads["eager"].keys()
        for n, g in grads["eager"].items():
            torch.testing.assert_close(grads[name][n], g, rtol=1e-4, atol=1e-5, msg=f"{name}: {n}")


def test_eager_runs_no_scaled_dot_product_attention():
    """What the profiler shows: eager is the written-out formula, sdpa the aten op."""
    config, _ = tiny("mae")
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    for name in ("eager", "sdpa"):
        model = mim_hub.MAEModel(config)
        model.set_attn_implementation(name)
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            model(x)
        seen[name] = {event.name for event in profile.events()}
    assert "aten::scaled_dot_product_attention" not in seen["eager"]
    assert "aten::scaled_dot_product_attention" in seen["sdpa"]


@pytest.mark.parametrize("method", ["mae", "simmim", "cae", "mr_mae", "color_mae", "crate_mae"])
def test_attn_implementation_at_loading_and_set_after_loading(method, tmp_path):
    config, _ = tiny(method)
    method_classes(method)["classification"](config).save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    layers = [m for m in model.modules() if isinstance(m, attention.InterfaceAttention)]
    assert layers and all(layer.config is model.config for layer in layers)
    x = torch.randn(2, config.num_channels, 32, 32)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        reference = model(x).last_hidden_state
    assert "aten::scaled_dot_product_attention" not in {event.name for event in profile.events()}
    for name in ("sdpa", "mim_cpu_fused", "eager"):
        model.set_attn_implementation(name)  # CAE's cross-attention included
        assert model.config._attn_implementation == name
        with torch.no_grad():
            torch.testing.assert_close(model(x).last_hidden_state, reference, rtol=1e-5, atol=1e-5)
    assert AutoModel.from_pretrained(tmp_path).config._attn_implementation == "sdpa"  # the default
    with pytest.raises(ValueError, match="not supported"):
        AutoModel.from_pretrained(tmp_path, attn_implementation="no_such_attention")


def test_flash_attention_refuses_an_attention_bias():
    """flash attention has no additive bias: a layer with one (relative positions, Swin windows)
    says so instead of dropping it."""
    layer = attention.Attention(8, 2)
    layer.config = mim_hub.MAEConfig()
    layer.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="takes no additive attention bias"):
        layer(torch.randn(1, 4, 8), attention_bias=torch.zeros(2, 4, 4))


def test_the_cpu_kernel_is_a_registered_implementation_and_never_the_default(monkeypatch):
    """"mim_cpu_fused" runs where it is asked for, and only there (never instead of sdpa)."""
    monkeypatch.setattr(attention_cpu, "FUSED_BIAS_GRAD_MIN_TOKENS", 1)  # (the tiny sequences are short)
    assert "mim_cpu_fused" in ALL_ATTENTION_FUNCTIONS.valid_keys()
    assert ALL_ATTENTION_FUNCTIONS["mim_cpu_fused"] is attention_cpu.cpu_flash_attention_forward
    config, extra = tiny("simmim")
    model = method_classes("simmim")["pretraining"](config)
    x = torch.randn(2, 3, 32, 32)
    assert model.config._attn_implementation == "sdpa"

    def kernel_nodes():
        return [n for n in _autograd_nodes(model(x, **extra).loss) if type(n).__name__.startswith("_CPUFlashAttention")]

    assert not kernel_nodes()
    model.set_attn_implementation("mim_cpu_fused")
    assert len(kernel_nodes()) == config.num_hidden_layers


def _autograd_nodes(tensor):
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return seen
