"""mim_hub's CPU attention kernel, the registered attention implementation "mim_cpu_fused".

Chosen like any other implementation: `from_pretrained(..., attn_implementation="mim_cpu_fused")`
or `model.set_attn_implementation("mim_cpu_fused")` (importing mim_hub registers it with
transformers' `AttentionInterface`). It never runs unless asked for.

Where it serves, CPU training steps, it runs SDPA's fused CPU kernel forward with its own
backward pass (`_CPUFlashAttention`); every other call (inference, a GPU, dropout, a compiled
graph, float32 without a learned bias, short sequences with one) goes to transformers' "sdpa",
which is as fast there. benchmarks/run.py times it against "sdpa" on the same model
(BENCHMARKS.md, the "attention mim_cpu_fused vs sdpa" rows): a learned bias (SimMIM's and CAE's
relative positions) keeps SDPA from its fused kernel, whose backward gives no gradient for a mask,
so SDPA falls back to its math path and keeps every layer's attention weights; under bfloat16
autocast SDPA's fused backward is slow on CPU.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "mim_cpu_fused"


class _CPUFlashAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v on CPU: SDPA's fused kernel forward, and a backward pass
    that recomputes the attention weights from the saved log-sum-exp a few samples at a time and
    takes every gradient from them with batched matmuls, in float32 whatever the input dtype:
        P = exp(q k^T * scale + bias - lse),      dV = P^T dO,
        dS = P * (dO V^T - rowsum(dO * O)),        dQ = dS K * scale,   dK = dS^T Q * scale,
        dbias = dS summed over the dims the bias broadcasts.
    It keeps what the fused kernel keeps (q, k, v, output, log-sum-exp: no [B, heads, N, N]
    weights between the passes), and serves two cases the fused kernel's own backward does not:
    - a learned bias (relative positions): that kernel gives no gradient for its mask, so SDPA
      would take its unfused math path and keep every layer's attention weights;
    - bfloat16 (autocast training): its bfloat16 backward is about twice as slow as its float32
      one here, and this pass, in float32 on cache-sized chunks, is faster than either.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        # the kernel takes the bias in the inputs' dtype; the backward pass keeps the caller's
        # tensor (a table shared by every layer is then held once, not once per layer in bf16)
        kernel_bias = None if bias is None else bias.to(q.dtype)
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=kernel_bias, scale=scale)
        ctx.save_for_backward(q, k, v, bias, out, logsumexp)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias, out, logsumexp = ctx.saved_tensors
        scale, compute = ctx.scale, torch.float32
        batch, heads, length, dim = q.shape
        keys = k.shape[2]
        want_q, want_k, want_v, want_bias = ctx.needs_input_grad[:4]
        grad_q = torch.empty_like(q) if want_q else None
        grad_k = torch.empty_like(k) if want_k else None
        grad_v = torch.empty_like(v) if want_v else None
        grad_bias = torch.zeros_like(bias, dtype=compute) if want_bias else None  # summed over the batch in float32
        # samples per chunk: the [chunk * heads, N, N] float32 temporaries stay about cache-sized
        chunk = max(1, ATTENTION_BACKWARD_CHUNK_ELEMENTS // (heads * length * keys))

        def flat(t, rows, n):  # [n, heads, T, d] -> [n * heads, T, d] in float32
            return t[rows].to(compute).reshape(n * heads, t.shape[2], t.shape[3])

        for start in range(0, batch, chunk):
            rows = slice(start, min(start + chunk, batch))
            n = rows.stop - rows.start
            qc, kc, vc, gc = (flat(t, rows, n) for t in (q, k, v, grad_out))
            # the attention weights, recomputed: exp(scores - lse)
            scores = torch.baddbmm(logsumexp[rows].reshape(n * heads, length, 1).neg(), qc, kc.transpose(1, 2), alpha=scale)
            if bias is not None:
                scores.view(n, heads, length, keys).add_(bias[rows] if bias.shape[0] > 1 else bias)
            weights = scores.exp_()
            if want_v:
                grad_v[rows] = torch.bmm(weights.transpose(1, 2), gc).view(n, heads, keys, dim)
            # gradient of the scores: P * (dO V^T - rowsum(dO * O))
            row_terms = (gc * flat(out, rows, n)).sum(-1, keepdim=True)
            grad_scores = torch.baddbmm(row_terms.neg_(), gc, vc.transpose(1, 2)).mul_(weights)
            del weights, scores
            if want_bias:
                part = grad_scores.view(n, heads, length, keys)
                if bias.shape[0] > 1:
                    grad_bias[rows] = part.sum_to_size(n, *bias.shape[1:])
                else:
                    grad_bias += part.sum_to_size(bias.shape)
            if want_q:
                grad_q[rows] = torch.bmm(grad_scores, kc).mul_(scale).view(n, heads, length, dim)
            if want_k:
                grad_k[rows] = torch.bmm(grad_scores.transpose(1, 2), qc).mul_(scale).view(n, heads, keys, dim)
        if want_bias:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_q, grad_k, grad_v, grad_bias, None


# float32 elements of one [chunk * heads, N, N] temporary in `_CPUFlashAttention`'s backward (4 MiB)
ATTENTION_BACKWARD_CHUNK_ELEMENTS = 1 << 20

# Below this many queries or keys the attention weights are small and SDPA's math path is the
# faster one for a learned bias (Swin's windows of 36-49 tokens: 8% slower fused, 3% less memory);
# from a ViT's ~200 tokens up the fused kernel is as fast and keeps a fifth less training memory.
FUSED_BIAS_GRAD_MIN_TOKENS = 128


def _cpu_flash_attention_applies(q, k, v, bias, dropout: float, training: bool) -> bool:
    """Whether `_CPUFlashAttention` serves this call: CPU training (a gradient wanted, no
    dropout, not compiled) in float32 or bfloat16, and either a learned 4-D bias over sequences
    of at least FUSED_BIAS_GRAD_MIN_TOKENS, or bfloat16 with no bias or a fixed one. Elsewhere
    SDPA's own kernels are as fast (float32 without a learned bias) or faster (short windows)."""
    if q.device.type != "cpu" or not torch.is_grad_enabled() or (dropout and training) or torch.compiler.is_compiling():
        return False
    if q.dtype not in (torch.float32, torch.bfloat16) or not (q.requires_grad or k.requires_grad or v.requires_grad
                                                             or (bias is not None and bias.requires_grad)):
        return False
    if bias is not None and (bias.dim() != 4 or not bias.is_floating_point()):
        return False
    if bias is not None and bias.requires_grad:
        return min(q.shape[-2], k.shape[-2]) >= FUSED_BIAS_GRAD_MIN_TOKENS
    return q.dtype == torch.bfloat16


def cpu_flash_attention_forward(module, query, key, value, attention_mask, scaling: float | None = None, dropout: float = 0.0,
                                position_bias=None, **kwargs):
    """The "mim_cpu_fused" attention implementation (transformers' interface: output [B, N, heads, d], no weights)."""
    bias = position_bias if attention_mask is None else attention_mask if position_bias is None else position_bias + attention_mask
    if _cpu_flash_attention_applies(query, key, value, bias, dropout, module.training):
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        return _CPUFlashAttention.apply(query, key, value, bias, scale).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  position_bias=position_bias, **kwargs)


AttentionInterface.register(NAME, cpu_flash_attention_forward)
