"""timm-style feature hooks, written once for every encoder.

A base model states `num_prefix_tokens` (tokens in front of the patch tokens: 1 for a cls token,
0 without) and lists its stages with `_feature_stages` (the default reads the hidden states of
its forward: the embeddings, then each block). The rest is shared:

- `forward_features(pixel_values)`: the encoder's tokens after its final norm (`last_hidden_state`).
- `forward_head(features, pre_logits=False)`: the pooled feature the classifier receives (a
  classifier then applies its head unless `pre_logits`).
- `forward_intermediates(pixel_values, indices=None, norm=False, output_fmt="NCHW",
  intermediates_only=False)`: the outputs of the chosen blocks (timm's `feature_take_indices`:
  None = all, an int n = the last n, a list = those indices, negatives from the end), prefix
  tokens dropped, as [B, C, h, w] maps ("NCHW") or [B, h*w, C] tokens ("NLC"); with
  `intermediates_only=False` also the final tokens, as `(final, intermediates)`.
- `get_intermediate_layers(pixel_values, n=1, reshape=False, return_prefix_tokens=False, norm=False)`.
- `reset_classifier(num_labels)`, `num_features` (the width the head receives).

Indices count blocks for plain ViTs (and the transformer blocks of ConvMAE's hybrid) and stages
(resolutions) for Swin, as timm's models do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import initialization as init


@dataclass
class FeatureStage:
    """One stage's output: `tokens` [B, P + h*w, C] (P = `num_prefix_tokens`) on the grid (h, w)."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    num_prefix_tokens: int = 0

    def patches(self) -> torch.Tensor:
        return self.tokens[:, self.num_prefix_tokens:]

    def prefix(self) -> torch.Tensor:
        return self.tokens[:, : self.num_prefix_tokens]

    def as_map(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, h, w] of the patch tokens (of `tokens` when given: the same layout, e.g. normed)."""
        tokens = self.patches() if tokens is None else tokens[:, self.num_prefix_tokens:]
        batch, _, channels = tokens.shape
        return tokens.transpose(1, 2).reshape(batch, channels, self.grid[0], self.grid[1])


def feature_take_indices(num_features: int, indices: int | list[int] | tuple[int, ...] | None = None) -> list[int]:
    """timm's rule: None -> every index, an int n -> the last n, a sequence -> those (negative
    ones counted from the end), checked against `num_features`."""
    if indices is None:
        return list(range(num_features))
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices={indices} asks for the last {indices} of {num_features} outputs")
        return list(range(num_features - indices, num_features))
    taken = []
    for index in indices:
        position = index + num_features if index < 0 else index
        if not 0 <= position < num_features:
            raise ValueError(f"index {index} is out of range for {num_features} outputs")
        taken.append(position)
    return taken


class _StopEarly(Exception):
    """Raised before the first block after the last one `forward_intermediates` wants."""


def _with_hidden_states(kwargs: dict, interpolate_pos_encoding: bool) -> dict:
    """A forward's keyword arguments for `_feature_stages`: every hidden state, and
    `interpolate_pos_encoding` only when set (a model that cannot interpolate, CRATE, never gets it)."""
    extra = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
    return {**kwargs, "output_hidden_states": True, **extra}


def _grid_of(pixel_values: torch.Tensor, patch_size: int) -> tuple[int, int]:
    return pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size


class EncoderFeaturesMixin:
    """The hooks of a base model (put before its PreTrainedModel in the bases)."""

    num_prefix_tokens: int = 1
    # the stages before the first block (`_feature_stages`' leading entries that are not blocks)
    _num_stem_stages: int = 1
    # whether forward accepts interpolate_pos_encoding=True (CRATE keeps its image size)
    supports_interpolation: bool = True

    @property
    def num_features(self) -> int:
        return self.config.hidden_size

    # what a model may override -------------------------------------------------------------
    def _feature_stages(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs):
        """(stages: [FeatureStage] in forward order, the forward's output); `kwargs`: the
        caller's keyword arguments for the forward (`output_attentions`, ...). Default: the hidden
        states of a plain ViT (embeddings, then every block) on the patch grid."""
        output = self(pixel_values, **_with_hidden_states(kwargs, interpolate_pos_encoding))
        grid = _grid_of(pixel_values, self.config.patch_size)
        stages = [FeatureStage(h, grid, self.num_prefix_tokens) for h in output.hidden_states]
        return stages, output

    def _final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """The encoder's final norm on an intermediate output, where its width matches."""
        norm = getattr(self, "layernorm", None)
        if norm is None or tokens.shape[-1] != norm.normalized_shape[0]:
            return tokens
        return norm(tokens)

    def mean_patch_feature(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """[B, D] the mean of `last_hidden_state`'s patch tokens (prefix tokens left out): the
        frozen feature of the kNN and linear probes. A model whose output is a map [B, C, h, w]
        (a CNN) averages over its positions instead."""
        return last_hidden_state[:, self.num_prefix_tokens:].mean(1)

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """`pooler_output` from `last_hidden_state`: `fc_norm` of the mean patch token when the
        model has one, else token 0."""
        fc_norm = getattr(self, "fc_norm", None)
        if fc_norm is not None:
            return fc_norm(hidden[:, self.num_prefix_tokens:].mean(dim=1))
        return hidden[:, 0]

    # the hooks --------------------------------------------------------------------------------
    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """[B, N, D] tokens after the final norm (prefix tokens first)."""
        kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        return self(pixel_values, **kwargs).last_hidden_state

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The pooled feature of `forward_features`' output (a base model has no head)."""
        return self._pool(features)

    def _block_stages(self, pixel_values: torch.Tensor, taken: list[int], stop_early: bool, interpolate_pos_encoding: bool):
        """({block index: its FeatureStage} for the `taken` blocks only, the forward's output or
        None when it stopped early): the blocks' outputs are kept by forward hooks (torch's public
        `register_forward_hook`, removed after the call) on the taken blocks alone, and with
        `stop_early` the forward ends before the first block after the last taken one (timm's
        `stop_early`). For a plain ViT whose stages are its blocks (the default `_feature_stages`)."""
        blocks = self._blocks()
        kept: dict[int, torch.Tensor] = {}

        def keep(index):
            def hook(module, args, output):
                kept[index] = output[0] if isinstance(output, tuple) else output
            return hook

        def stop(module, args):
            raise _StopEarly

        handles = [blocks[i].register_forward_hook(keep(i)) for i in sorted(set(taken))]
        last = max(taken)
        if stop_early and last + 1 < len(blocks):
            handles.append(blocks[last + 1].register_forward_pre_hook(stop))
        kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        output = None
        try:
            output = self(pixel_values, **kwargs)
        except _StopEarly:
            pass
        finally:
            for handle in handles:
                handle.remove()
        grid = _grid_of(pixel_values, self.config.patch_size)
        return {i: FeatureStage(t, grid, self.num_prefix_tokens) for i, t in kept.items()}, output

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
        interpolate_pos_encoding: bool = False,
        stop_early: bool = True,
    ):
        """The chosen blocks' outputs (see the module docstring). Only those are kept; with
        `intermediates_only` (and `stop_early`, the default) the forward stops after the last
        chosen block, as timm's (a plain ViT: the blocks after it never run)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if type(self)._feature_stages is EncoderFeaturesMixin._feature_stages:  # (its stages are its blocks)
            taken = feature_take_indices(len(self._blocks()), indices)
            blocks, output = self._block_stages(pixel_values, taken, stop_early and intermediates_only, interpolate_pos_encoding)
        else:
            stages, output = self._feature_stages(pixel_values, interpolate_pos_encoding)
            blocks = stages[self._num_stem_stages:]
            taken = feature_take_indices(len(blocks), indices)
        intermediates = []
        for index in taken:
            stage = blocks[index]
            tokens = self._final_norm(stage.tokens) if norm else stage.tokens
            value = stage.as_map(tokens) if output_fmt == "NCHW" else tokens[:, stage.num_prefix_tokens:]
            intermediates.append((value, tokens[:, : stage.num_prefix_tokens]) if return_prefix_tokens else value)
        if intermediates_only:
            return intermediates
        return output.last_hidden_state, intermediates

    def _blocks(self) -> list[nn.Module]:
        """The blocks `_can_record_outputs` names, in the order they run."""
        specs = self._can_record_outputs["hidden_states"]
        classes = tuple({spec.target_class for spec in (specs if isinstance(specs, list) else [specs])})
        return [m for m in self.modules() if isinstance(m, classes)]

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        n: int | list[int] | tuple[int, ...] = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> tuple:
        """timm's (and DINO's): the last `n` blocks' outputs (or blocks `n`), prefix tokens dropped,
        [B, h*w, C] or with `reshape` [B, C, h, w]."""
        return tuple(self.forward_intermediates(
            pixel_values, indices=n, norm=norm, output_fmt="NCHW" if reshape else "NLC", intermediates_only=True,
            return_prefix_tokens=return_prefix_tokens, interpolate_pos_encoding=interpolate_pos_encoding,
        ))

    def reset_classifier(self, num_labels: int) -> None:
        if num_labels:
            raise ValueError(f"{type(self).__name__} is a base model without a head: reset_classifier({num_labels}) needs a "
                             "classifier (the method's ...ForImageClassification)")


class ClassifierFeaturesMixin:
    """The hooks of a classifier: its base model's, with the head in `forward_head`; and the
    classifier head's init, stated once as data: a truncated normal of `head_init_std` (bounded
    at +-`head_init_bound` when set), as the method's fine-tuning code draws it, or the model's
    own Linear init when None. A head made by `reset_classifier` gets the same."""

    head_init_std: float | None = None
    head_init_bound: float | None = None

    def _head_init_std(self) -> float | None:
        return self.head_init_std

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self._head_init_std()
        if module is getattr(self, "head", None) and isinstance(module, nn.Linear) and std is not None:
            bound = self.head_init_bound
            init.trunc_normal_(module.weight, std=std, **({} if bound is None else {"a": -bound, "b": bound}))

    def _encoder(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    @property
    def num_prefix_tokens(self) -> int:
        return self._encoder().num_prefix_tokens

    @property
    def num_features(self) -> int:
        return self._encoder().num_features

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self._encoder().forward_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    def forward_intermediates(self, pixel_values: torch.Tensor, *args, **kwargs):
        return self._encoder().forward_intermediates(pixel_values, *args, **kwargs)

    def get_intermediate_layers(self, pixel_values: torch.Tensor, *args, **kwargs):
        return self._encoder().get_intermediate_layers(pixel_values, *args, **kwargs)

    def _pre_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """What sits between the pooled feature and the final Linear (CRATE: its head norm)."""
        return pooled

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self._pre_logits(self._encoder().forward_head(features))
        return pooled if pre_logits else self.head(pooled)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_labels: int) -> None:
        """A new, freshly initialised head for `num_labels` classes (0: no head, `nn.Identity`);
        `config.num_labels` (and its label names) follow."""
        weight = next(self.parameters())
        self.head = (nn.Linear(self.num_features, num_labels) if num_labels > 0 else nn.Identity()).to(device=weight.device, dtype=weight.dtype)
        self._init_weights(self.head)  # (the class's head init)
        self.config.num_labels = num_labels


__all__ = ["EncoderFeaturesMixin", "ClassifierFeaturesMixin", "FeatureStage", "feature_take_indices"]
