"""Multi-head self-attention with one fused q/k/v projection.

One matmul for q, k and v is faster than three on every device we measured; the math is the
originals' `qkv` Linear (output laid out as [3, heads, head_dim]). SDPA runs unless attention
weights are asked for, then the eager formulation returns them. Two training-memory measures keep
the models' activations at those of a plain ViT (see BENCHMARKS.md's peak-memory column):
- a learned additive bias (relative positions) keeps the fused CPU kernel
  (`_CPUFlashAttention`) instead of SDPA's math path;
- a LayerScale after a projection keeps no copy of the projection's output (`_LinearThenScale`).
Under bfloat16 autocast on CPU, `_CPUFlashAttention` also replaces the fused kernel's slow
bfloat16 backward pass (about a fifth of an MAE pre-training step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def eager_attention(q, k, v, *, scale: float, bias: torch.Tensor | None = None, dropout: float = 0.0, training: bool = False):
    """softmax(q k^T * scale + bias) v, returning (output, weights). q/k/v are [B, heads, N, d]."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    if dropout and training:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights


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


def multihead_attention(q, k, v, *, scale: float, bias=None, dropout: float = 0.0, training: bool = False, need_weights: bool = False):
    """SDPA when weights are not needed, eager otherwise. Returns (output [B, heads, N, d], weights or None)."""
    if need_weights:
        return eager_attention(q, k, v, scale=scale, bias=bias, dropout=dropout, training=training)
    if bias is not None and bias.dim() == 3:
        # a [heads, N, N] bias as [1, heads, N, N]: SDPA's fused CPU kernel takes only 2-D or 4-D masks
        # (a 3-D one falls back to the unfused math path, which materialises the attention weights)
        bias = bias.unsqueeze(0)
    if _cpu_flash_attention_applies(q, k, v, bias, dropout, training):
        return _CPUFlashAttention.apply(q, k, v, bias, q.shape[-1] ** -0.5 if scale is None else scale), None
    if bias is not None:
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout if training else 0.0, scale=scale)
    return out, None


class _LinearThenScale(torch.autograd.Function):
    """(x W^T + b) * scale, keeping only x for the backward pass (as a plain Linear does).

    The scale's gradient needs the projection's output, sum_t g_tj (W_j . x_t + b_j), and autograd
    would keep that output alive (one [B, N, D] activation per LayerScale). It equals
    W_j . M_j + b_j sum_t g_tj with M = g^T x, the matmul the weight gradient needs anyway
    (grad W = scale * M), so nothing more is kept and no matmul is added."""

    @staticmethod
    def forward(ctx, x, weight, bias, scale):
        ctx.save_for_backward(x, weight, bias, scale)
        return F.linear(x, weight, bias).mul_(scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight, bias, scale = ctx.saved_tensors
        grad_flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_weight = grad_bias = grad_scale = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out * scale) @ weight
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            outer = grad_flat.t() @ x.reshape(-1, x.shape[-1])  # [out, in]
            if ctx.needs_input_grad[3]:  # row-wise dot products, without an [out, in] temporary
                grad_scale = torch.bmm(outer.unsqueeze(1), weight.unsqueeze(2)).flatten()
            if ctx.needs_input_grad[1]:
                grad_weight = outer.mul_(scale[:, None])
        if bias is not None and (ctx.needs_input_grad[2] or ctx.needs_input_grad[3]):
            summed = grad_flat.sum(0)
            if ctx.needs_input_grad[2]:
                grad_bias = summed * scale
            if ctx.needs_input_grad[3]:
                grad_scale = grad_scale + bias * summed
        return grad_x, grad_weight, grad_bias, grad_scale


def linear_with_output_scale(hidden_states: torch.Tensor, linear: nn.Linear, scale: torch.Tensor | None) -> torch.Tensor:
    """`linear(x) * scale` (a LayerScale after a projection), the same numbers as the two modules,
    with one [B, N, D] activation less kept for training (see `_LinearThenScale`)."""
    if scale is None:
        return linear(hidden_states)
    if torch.is_grad_enabled() and (hidden_states.requires_grad or linear.weight.requires_grad or scale.requires_grad) \
            and hidden_states.dtype == linear.weight.dtype == scale.dtype:
        return _LinearThenScale.apply(hidden_states, linear.weight, linear.bias, scale)
    return linear(hidden_states) * scale


class _SplitHeads(torch.autograd.Function):
    """qkv [B, N, 3 * heads * d] -> q, k, v [B, heads, N, d] (views), whose backward writes the
    three head gradients straight into one [B, N, 3, heads, d] buffer. Autograd's own backward of
    `view -> permute -> unbind` stacks them ([3, B, heads, N, d]) and then copies that to the
    Linear's layout: two passes over the qkv gradient per layer instead of one (about a tenth of
    an attention layer's forward + backward on CPU). Inference and compiled graphs skip it."""

    @staticmethod
    def forward(ctx, qkv, heads: int, head_dim: int):
        ctx.split_shape = (qkv.shape[0], qkv.shape[1], 3, heads, head_dim)
        return qkv.view(ctx.split_shape).permute(2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_q, grad_k, grad_v):
        given = next(g for g in (grad_q, grad_k, grad_v) if g is not None)
        grad = given.new_empty(ctx.split_shape)
        for index, part in enumerate((grad_q, grad_k, grad_v)):
            if part is None:
                grad[:, :, index].zero_()
            else:
                grad[:, :, index].copy_(part.transpose(1, 2))
        return grad.view(ctx.split_shape[0], ctx.split_shape[1], -1), None, None


class Attention(nn.Module):
    """Self-attention over [B, N, D] tokens.

    Args:
        hidden_size: model width D.
        num_attention_heads: heads; `attention_head_size` defaults to D // heads (CAE's large
            model and others use another head width, so it may be given).
        qkv_bias: True (one bias for q, k and v, as timm/MAE), False (none), or "qv" (BEiT,
            SimMIM, CAE: learned q and v biases with a zero, untrained k bias).
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        *,
        qkv_bias: bool | str = True,
        attention_head_size: int | None = None,
        attention_dropout: float = 0.0,
        proj_dropout: float = 0.0,
    ):
        super().__init__()
        if attention_head_size is None:
            if hidden_size % num_attention_heads:
                raise ValueError(
                    f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
                )
            attention_head_size = hidden_size // num_attention_heads
        self.num_heads = num_attention_heads
        self.head_dim = attention_head_size
        self.scale = attention_head_size**-0.5
        inner = attention_head_size * num_attention_heads
        self.qkv_bias_mode = "qv" if qkv_bias == "qv" else bool(qkv_bias)
        self.qkv_proj = nn.Linear(hidden_size, 3 * inner, bias=self.qkv_bias_mode is True)
        if self.qkv_bias_mode == "qv":
            self.q_bias = nn.Parameter(torch.zeros(inner))
            self.v_bias = nn.Parameter(torch.zeros(inner))
            self.register_buffer("k_bias", torch.zeros(inner), persistent=False)
        self.o_proj = nn.Linear(inner, hidden_size)
        self.attention_dropout = attention_dropout
        self.proj_dropout = nn.Dropout(proj_dropout) if proj_dropout > 0 else nn.Identity()

    def project_qkv(self, hidden_states: torch.Tensor):
        """[B, N, D] -> q, k, v each [B, heads, N, head_dim]."""
        bias = self.qkv_proj.bias
        if self.qkv_bias_mode == "qv":
            bias = torch.cat([self.q_bias, self.k_bias.to(self.q_bias.dtype), self.v_bias])
        qkv = F.linear(hidden_states, self.qkv_proj.weight, bias)
        if qkv.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _SplitHeads.apply(qkv, self.num_heads, self.head_dim)
        batch, length, _ = hidden_states.shape
        return qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None, output_attentions: bool = False,
                output_scale: torch.Tensor | None = None):
        """`attention_bias` (broadcastable to [B, heads, N, N]) is added to the scores, e.g. a
        relative position bias; `output_scale` [D] multiplies the output (a block's LayerScale,
        folded into the output projection). Returns (output [B, N, D], attention weights or None)."""
        q, k, v = self.project_qkv(hidden_states)
        out, weights = multihead_attention(
            q, k, v, scale=self.scale, bias=attention_bias, dropout=self.attention_dropout,
            training=self.training, need_weights=output_attentions,
        )
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        return self.proj_dropout(linear_with_output_scale(out, self.o_proj, output_scale)), weights
