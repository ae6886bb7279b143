"""The pre-norm transformer block every ViT-based method here uses, and a stack of them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import Attention, linear_with_output_scale


class MLP(nn.Module):
    """fc1 -> activation -> fc2 (exact GELU by default, as the originals)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, output_scale: torch.Tensor | None = None) -> torch.Tensor:
        """`output_scale` [D] multiplies the output (a block's LayerScale, folded into fc2)."""
        return self.dropout(linear_with_output_scale(self.dropout(self.act(self.fc1(hidden_states))), self.fc2, output_scale))


class LayerScale(nn.Module):
    """Per-channel learned scale on a residual branch (CaiT/BEiT `gamma`)."""

    def __init__(self, hidden_size: int, init_value: float):
        super().__init__()
        self.init_value = float(init_value)  # (what `_init_weights` sets `gamma` to)
        self.gamma = nn.Parameter(torch.full((hidden_size,), float(init_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.dim() - 1)
        return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _gamma(layer_scale: nn.Module) -> torch.Tensor | None:
    return layer_scale.gamma if isinstance(layer_scale, LayerScale) else None


class ViTBlock(GradientCheckpointingLayer):
    """x + attn(norm1(x)), then x + mlp(norm2(x)); optional layer scale and stochastic depth."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        intermediate_size: int,
        *,
        qkv_bias: bool | str = True,
        layer_norm_eps: float = 1e-6,
        hidden_act: str = "gelu",
        layer_scale_init_value: float | None = None,
        drop_path: float = 0.0,
        attention_head_size: int | None = None,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attn = Attention(
            hidden_size, num_attention_heads, qkv_bias=qkv_bias, attention_head_size=attention_head_size,
            attention_dropout=attention_dropout, proj_dropout=hidden_dropout,
        )
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = MLP(hidden_size, intermediate_size, hidden_act, dropout=hidden_dropout)
        use_scale = layer_scale_init_value is not None and layer_scale_init_value > 0
        self.layer_scale1 = LayerScale(hidden_size, layer_scale_init_value) if use_scale else nn.Identity()
        self.layer_scale2 = LayerScale(hidden_size, layer_scale_init_value) if use_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden_states, attention_bias=None, **kwargs):
        """Returns (output, attention weights or None); `kwargs`: the model's keyword arguments,
        passed on to the attention (`output_attentions=True` there asks for the weights)."""
        # the LayerScales are folded into the output projections (see linear_with_output_scale)
        scale1, scale2 = _gamma(self.layer_scale1), _gamma(self.layer_scale2)
        attn_out, weights = self.attn(self.norm1(hidden_states), attention_bias=attention_bias, output_scale=scale1, **kwargs)
        hidden_states = hidden_states + self.drop_path(attn_out)
        del attn_out  # not held while the MLP runs (inference peak memory)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states), output_scale=scale2))
        return hidden_states, weights


class ViTEncoder(nn.Module):
    """A stack of blocks (`layers`); returns the last block's output.

    `attention_bias` may be one tensor shared by all blocks or a callable `i -> tensor` for
    per-block biases (SimMIM/CAE fine-tuning use a relative position table per block). The
    model's keyword arguments (`kwargs`) go on to every block, as transformers v5 passes them; the
    model records the blocks' outputs with hooks (`models/encoder.py`), not here.
    """

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        attention_bias: torch.Tensor | Callable[[int], torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            bias = attention_bias(index) if callable(attention_bias) else attention_bias
            hidden_states = layer(hidden_states, bias, **kwargs)[0]
        return hidden_states


def drop_path_rates(drop_path_rate: float, num_layers: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `drop_path_rate` over `num_layers` blocks,
    as timm's `torch.linspace(0, rate, depth)` (float32 values), computed on the CPU whatever the
    default device (a model built under `torch.device("meta")` needs plain numbers here)."""
    return torch.linspace(0, drop_path_rate, num_layers, device="cpu").tolist() if num_layers else []


def build_vit_blocks(
    num_layers: int,
    hidden_size: int,
    num_attention_heads: int,
    intermediate_size: int,
    *,
    drop_path_rate: float = 0.0,
    **block_kwargs,
) -> list[ViTBlock]:
    """`num_layers` blocks with stochastic depth rising linearly to `drop_path_rate` (timm rule)."""
    rates = drop_path_rates(drop_path_rate, num_layers)
    return [
        ViTBlock(hidden_size, num_attention_heads, intermediate_size, drop_path=rate, **block_kwargs)
        for rate in rates
    ]
