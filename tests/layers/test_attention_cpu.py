"""The "mim_cpu_fused" attention implementation (layers/attention_cpu.py): SDPA's fused CPU kernel
forward with its own backward pass, against the eager formula."""

import pytest
import torch

import mim_hub.layers.attention_cpu as attention
from mim_hub.layers.attention import eager_attention


def fused(q, k, v, *, scale, bias=None, dropout=0.0):
    """The implementation as a training layer calls it (q/k/v and the output [B, heads, N, d])."""
    if bias is not None and bias.dim() == 3:  # as dispatch_attention passes it
        bias = bias.unsqueeze(0)
    module = torch.nn.Module().train()
    out, weights = attention.cpu_flash_attention_forward(module, q, k, v, None, scaling=scale, dropout=dropout, position_bias=bias,
                                                         is_causal=False)
    return out.transpose(1, 2), weights


def took_kernel(out) -> bool:
    """Whether `_CPUFlashAttention` is in the few autograd nodes behind `out`."""
    nodes = [out.grad_fn]
    for _ in range(4):
        if any(type(n).__name__.startswith("_CPUFlashAttention") for n in nodes):
            return True
        nodes = [m for n in nodes if n is not None for m, _ in n.next_functions if m is not None]
    return False


@pytest.fixture
def fused_for_short_sequences(monkeypatch):
    """The tests' 7-token sequences take the fused path (the model sizes it is meant for are slow here)."""
    monkeypatch.setattr(attention, "FUSED_BIAS_GRAD_MIN_TOKENS", 1)


@pytest.mark.parametrize("bias_shape", [(3, 7, 7), (1, 3, 7, 7), (2, 3, 7, 7), (2, 1, 7, 7), (1, 1, 7, 7)])
def test_learned_bias_takes_the_fused_cpu_kernel_with_exact_gradients(bias_shape, fused_for_short_sequences):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=generator, requires_grad=True) for _ in range(3))
    bias = torch.randn(bias_shape, generator=generator, requires_grad=True)
    out, weights = fused(q, k, v, scale=0.5, bias=bias)
    assert weights is None
    # the fused kernel with the bias gradient, not SDPA's math fallback that keeps the weights
    assert took_kernel(out)
    reference, _ = eager_attention(q, k, v, scale=0.5, bias=bias)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    upstream = torch.randn(out.shape, generator=generator)
    ours = torch.autograd.grad(out, (q, k, v, bias), upstream)
    theirs = torch.autograd.grad(reference, (q, k, v, bias), upstream)
    for name, a, b in zip("qkv", ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"grad of {name}")
    assert ours[3].shape == bias.shape
    torch.testing.assert_close(ours[3], theirs[3], rtol=1e-5, atol=1e-5)


def test_fixed_bias_and_no_grad_use_plain_sdpa():
    q = k = v = torch.randn(2, 3, 7, 4)
    bias = torch.randn(3, 7, 7)
    out, _ = fused(q, k, v, scale=0.5, bias=bias)
    torch.testing.assert_close(out, eager_attention(q, k, v, scale=0.5, bias=bias)[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        out = fused(q, k, v, scale=0.5, bias=bias.requires_grad_())[0]
    assert out.grad_fn is None


def test_dropout_while_training_falls_back_to_sdpa(fused_for_short_sequences):
    q = torch.randn(2, 3, 7, 4, requires_grad=True)
    bias = torch.randn(1, 3, 7, 7, requires_grad=True)
    out, _ = fused(q, q, q, scale=0.5, bias=bias, dropout=0.5)
    assert not took_kernel(out)
    out.sum().backward()
    assert bias.grad is not None and bias.grad.shape == bias.shape


def test_learned_bias_in_bfloat16_follows_float32(fused_for_short_sequences):
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=generator) for _ in range(3))
    bias = torch.randn(1, 3, 7, 7, generator=generator)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        inputs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v, bias)]
        out, _ = fused(*inputs[:3], scale=0.5, bias=inputs[3])
        assert out.dtype == dtype
        out.float().square().sum().backward()
        grads[dtype] = [t.grad.float() for t in inputs]
    for a, b in zip(grads[torch.bfloat16], grads[torch.float32]):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_short_sequences_keep_sdpa_math_path_for_a_learned_bias():
    q = torch.randn(2, 3, attention.FUSED_BIAS_GRAD_MIN_TOKENS - 1, 4, requires_grad=True)
    bias = torch.randn(3, q.shape[2], q.shape[2], requires_grad=True)
    out, _ = fused(q, q, q, scale=0.5, bias=bias)
    assert not took_kernel(out)
    long_q = torch.randn(1, 2, attention.FUSED_BIAS_GRAD_MIN_TOKENS, 4, requires_grad=True)
    long_bias = torch.randn(2, long_q.shape[2], long_q.shape[2], requires_grad=True)
    out, _ = fused(long_q, long_q, long_q, scale=0.5, bias=long_bias)
    assert took_kernel(out)


@pytest.mark.parametrize("bias_shape", [None, (1, 3, 7, 7), (5, 3, 7, 7), (5, 1, 7, 7)])
def test_recomputed_backward_over_several_chunks_equals_the_eager_gradients(bias_shape, fused_for_short_sequences, monkeypatch):
    """Chunks of one or two samples (5 samples: the last chunk is short), a bias per sample or shared."""
    monkeypatch.setattr(attention, "ATTENTION_BACKWARD_CHUNK_ELEMENTS", 2 * 3 * 7 * 7)
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(5, 3, 7, 4, generator=generator, requires_grad=True) for _ in range(3))
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=generator, requires_grad=True)
    inputs = (q, k, v) + (() if bias is None else (bias,))
    out = attention._CPUFlashAttention.apply(q, k, v, bias, 0.5)
    reference, _ = eager_attention(q, k, v, scale=0.5, bias=bias)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    upstream = torch.randn(out.shape, generator=generator)
    for a, b in zip(torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(reference, inputs, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_training_takes_the_recomputed_backward_and_is_at_least_as_accurate_as_sdpa():
    """Under bf16 (autocast training) attention with no bias or a fixed one takes
    `_CPUFlashAttention`; its gradients, computed in float32, are no further from the float64
    truth than SDPA's own bfloat16 backward. Float32 without a learned bias keeps plain SDPA."""
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 40, 16, generator=generator) for _ in range(3))
    fixed_bias = torch.randn(1, 4, 40, 40, generator=generator)
    upstream = torch.randn(2, 4, 40, 16, generator=generator)
    for bias in (None, fixed_bias):
        truth_inputs = [t.double().requires_grad_() for t in (q, k, v)]
        truth_out, _ = eager_attention(*truth_inputs, scale=0.25, bias=None if bias is None else bias.double())
        truth = torch.autograd.grad(truth_out, truth_inputs, upstream.double())
        errors = {}
        for name in ("ours", "sdpa"):
            inputs = [t.bfloat16().requires_grad_() for t in (q, k, v)]
            low_bias = None if bias is None else bias.bfloat16()
            if name == "ours":
                out, _ = fused(*inputs, scale=0.25, bias=low_bias)
                assert took_kernel(out)
            else:
                out = torch.nn.functional.scaled_dot_product_attention(*inputs, attn_mask=low_bias, scale=0.25)
            assert out.dtype == torch.bfloat16
            grads = torch.autograd.grad(out, inputs, upstream.bfloat16())
            assert all(g.dtype == torch.bfloat16 for g in grads)
            errors[name] = max(float((g.double() - t).abs().max() / t.abs().max()) for g, t in zip(grads, truth))
        assert errors["ours"] <= errors["sdpa"] * 1.05 + 1e-3, errors
    fp32 = [t.clone().requires_grad_() for t in (q, k, v)]
    out, _ = fused(*fp32, scale=0.25)
    assert not took_kernel(out)
