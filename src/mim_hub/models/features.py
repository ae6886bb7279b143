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
    def _feature_stages(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, output_attentions: bool = False):
        """(stages: [FeatureStage] in forward order, the forward's output). Default: the hidden
        states of a plain ViT (embeddings, then every block) on the patch grid."""
        kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        output = self(pixel_values, output_hidden_states=True, output_attentions=output_attentions, **kwargs)
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

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
        interpolate_pos_encoding: bool = False,
    ):
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        stages, output = self._feature_stages(pixel_values, interpolate_pos_encoding)
        blocks = stages[self._num_stem_stages:]
        intermediates = []
        for index in feature_take_indices(len(blocks), indices):
            stage = blocks[index]
            tokens = self._final_norm(stage.tokens) if norm else stage.tokens
            value = stage.as_map(tokens) if output_fmt == "NCHW" else tokens[:, stage.num_prefix_tokens:]
            intermediates.append((value, tokens[:, : stage.num_prefix_tokens]) if return_prefix_tokens else value)
        if intermediates_only:
            return intermediates
        return output.last_hidden_state, intermediates

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
    """The hooks of a classifier: its base model's, with the head in `forward_head`."""

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
        head = nn.Linear(self.num_features, num_labels) if num_labels > 0 else nn.Identity()
        if num_labels > 0:
            nn.init.trunc_normal_(head.weight, std=0.02 * 1e-3)  # the fine-tuning heads' small init
            nn.init.zeros_(head.bias)
        self.head = head.to(device=weight.device, dtype=weight.dtype)
        self.config.num_labels = num_labels


__all__ = ["EncoderFeaturesMixin", "ClassifierFeaturesMixin", "FeatureStage", "feature_take_indices"]
