"""Multi-head self-attention with one fused q/k/v projection.

One matmul for q, k and v is faster than three on every device we measured; the math is the
originals' `qkv` Linear (output laid out as [3, heads, head_dim]). SDPA runs unless attention
weights are asked for, then the eager formulation returns them.
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


def multihead_attention(q, k, v, *, scale: float, bias=None, dropout: float = 0.0, training: bool = False, need_weights: bool = False):
    """SDPA when weights are not needed, eager otherwise. Returns (output [B, heads, N, d], weights or None)."""
    if need_weights:
        return eager_attention(q, k, v, scale=scale, bias=bias, dropout=dropout, training=training)
    if bias is not None:
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout if training else 0.0, scale=scale)
    return out, None


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
        batch, length, _ = hidden_states.shape
        qkv = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None, output_attentions: bool = False):
        """`attention_bias` (broadcastable to [B, heads, N, N]) is added to the scores, e.g. a
        relative position bias. Returns (output [B, N, D], attention weights or None)."""
        q, k, v = self.project_qkv(hidden_states)
        out, weights = multihead_attention(
            q, k, v, scale=self.scale, bias=attention_bias, dropout=self.attention_dropout,
            training=self.training, need_weights=output_attentions,
        )
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        return self.proj_dropout(self.o_proj(out)), weights
