"""Multi-head attention, dispatched the way transformers v5 models dispatch it.

Every attention layer of every model here (the ViT blocks' `Attention`, Swin's window attention,
CAE's cross-attention, CRATE's MSSA) projects q, k and v and hands them to one function chosen by
`config._attn_implementation` from transformers' `ALL_ATTENTION_FUNCTIONS`: "sdpa" (the default),
"eager" (`eager_attention_forward` below), "flex_attention", "flash_attention_2" (on a GPU), or any
function registered with `transformers.AttentionInterface`, mim_hub's "mim_cpu_fused" included
(`layers/attention_cpu.py`). A model's `from_pretrained(..., attn_implementation=...)` or
`set_attn_implementation(...)` picks it; the layers read it from the config they are given
(`MIMPreTrainedModel.post_init` hands its config to every `InterfaceAttention` of the model).

An additive bias (relative positions, Swin's region mask) travels as the interface's
`position_bias`, [B or 1, heads, N, N]. The model's keyword arguments reach the layers as
transformers v5 passes them (`**kwargs`, its `TransformersKwargs`): `output_attentions=True` among
them needs the weights, which only the eager formulation has, so that call runs eager whatever
the implementation (where transformers' SDPA would warn and return none).

q/k/v come from one fused Linear (`qkv_proj`, output laid out as [3, heads, head_dim], the
originals' `qkv`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.generic import is_flash_attention_requested


def eager_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                            position_bias=None, **kwargs):
    """softmax(q k^T * scaling + bias) v: transformers' eager convention (q/k/v [B, heads, N, d]
    in, output [B, N, heads, d] and the weights [B, heads, N, M] out)."""
    scores = torch.matmul(query * scaling, key.transpose(-2, -1))
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = scores.softmax(dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def eager_attention(q, k, v, *, scale: float, bias: torch.Tensor | None = None):
    """softmax(q k^T * scale + bias) v as (output [B, heads, N, d], weights): the reference formula."""
    out, weights = eager_attention_forward(nn.Identity().eval(), q, k, v, None, scale, position_bias=bias)
    return out.transpose(1, 2), weights


def attention_implementation(config) -> str:
    """The implementation a layer's config asks for ("sdpa" for a layer used on its own)."""
    return getattr(config, "_attn_implementation", None) or "sdpa"


def dispatch_attention(module: nn.Module, query, key, value, *, scaling: float, bias=None, dropout: float = 0.0, **kwargs):
    """q/k/v [B, heads, N, d] through the implementation `module.config` names (eager when the
    model's keyword arguments ask for `output_attentions`); `bias` (broadcastable to
    [B, heads, N, M]) is added to the scores. Returns (output [B, N, heads, d], weights
    [B, heads, N, M] or None)."""
    implementation = "eager" if kwargs.get("output_attentions") else attention_implementation(module.config)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    if bias is not None:
        if is_flash_attention_requested(requested_attention_implementation=implementation):
            raise ValueError(f"attn_implementation={implementation!r} takes no additive attention bias, and this layer has one "
                             "(relative positions or a window mask): use 'sdpa', 'flex_attention' or 'eager'")
        bias = bias.to(query.dtype)
        if bias.dim() == 3:  # [heads, N, M] as [1, heads, N, M]: SDPA's fused CPU kernel takes 2-D or 4-D masks only
            bias = bias.unsqueeze(0)
        if "flex" in implementation:  # flex's score_mod indexes the bias by batch: a broadcasting view, no copy
            bias = bias.expand(query.shape[0], query.shape[1], bias.shape[-2], bias.shape[-1])
    out, weights = interface(module, query, key, value, None, scaling=scaling, dropout=dropout, is_causal=False, position_bias=bias)
    if torch.compiler.is_exporting():
        # torch.export records the strides of SDPA's fused CPU kernel ([B, N, heads, d] in memory,
        # so the interface's transpose + contiguous() records no copy), and the ONNX exporter's
        # decompositions compute it another way; with a bias the heads' merge then fails as
        # "Cannot view a tensor ...". A real copy keeps that reshape a valid view.
        out = out.clone(memory_format=torch.contiguous_format)
    return out, weights


class InterfaceAttention(nn.Module):
    """Base of the attention layers: `attend` runs the configured implementation. `config` is the
    model's (set by `MIMPreTrainedModel.post_init`; None on its own: SDPA); subclasses set
    `scale` and `attention_dropout`."""

    config = None
    is_causal = False
    scale: float
    attention_dropout: float = 0.0

    def attend(self, query, key, value, bias=None, **kwargs):
        """q/k/v [B, heads, N, d] -> (output [B, N, heads, d], weights or None); `kwargs`: the
        model's keyword arguments (see `dispatch_attention`)."""
        return dispatch_attention(self, query, key, value, scaling=self.scale, bias=bias,
                                  dropout=self.attention_dropout if self.training else 0.0, **kwargs)


def linear_with_output_scale(hidden_states: torch.Tensor, linear: nn.Linear, scale: torch.Tensor | None) -> torch.Tensor:
    """`linear(x) * scale`: a projection followed by a block's LayerScale (`scale` [D] or None)."""
    out = linear(hidden_states)
    return out if scale is None else out * scale


class Attention(InterfaceAttention):
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
        qkv = qkv.reshape(*hidden_states.shape[:-1], 3, self.num_heads, self.head_dim)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None,
                output_scale: torch.Tensor | None = None, **kwargs):
        """`attention_bias` (broadcastable to [B, heads, N, N]) is added to the scores, e.g. a
        relative position bias; `output_scale` [D] multiplies the output (a block's LayerScale).
        Returns (output [B, N, D], attention weights or None)."""
        q, k, v = self.project_qkv(hidden_states)
        out, weights = self.attend(q, k, v, attention_bias, **kwargs)
        out = out.reshape(*hidden_states.shape[:-1], -1)
        return self.proj_dropout(linear_with_output_scale(out, self.o_proj, output_scale)), weights
