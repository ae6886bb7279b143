"""What every base encoder here shares, written once: how hidden states and attention weights are
recorded (transformers' output capture), and the final norm / `fc_norm` pooling.

Recording. A model class declares what it can record in `_can_record_outputs` (transformers'
convention: `{"hidden_states": BlockClass, "attentions": OutputRecorder(BlockClass, index=1)}`),
and a base model's forward is decorated with `record_outputs` (transformers' `capture_outputs`).
Forward hooks on the blocks, installed the first time anything is asked for and idle otherwise,
then collect the input of the first block and every block's output (`hidden_states`, before any
final norm) and every block's attention weights (`attentions`).

The output flags travel as transformers v5 passes them: callers name them
(`model(x, output_hidden_states=True, output_attentions=True)`), every forward takes them in its
`**kwargs: Unpack[TransformersKwargs]` and hands its kwargs on to the stacks, the stacks to their
blocks and the blocks to their attention, which reads `output_attentions` there (the weights need
the eager formulation; see `layers/attention.py`). No forward names a flag.

A pre-training model's `hidden_states` / `attentions` are its base model's (the encoder's), as in
transformers' ViTMAE and VideoMAE. The stacks it runs outside its base model (a decoder, CAE's
regressor, HPM's loss predictor) are recorded by `run_recorded` into their own fields
(`decoder_hidden_states`, ...). Why not transformers' capture there too: it records into the
fields of the model it decorates, keyed by flags of the same name (`output_decoder_hidden_states`
for `decoder_hidden_states`), and only `hidden_states` gets the first block's input; transformers'
encoder-decoders get their decoder's fields by making the decoder a `PreTrainedModel` of its own
(its own config, `_init_weights` and `capture_outputs`), while a decoder here is a part of its
pre-training model (one config, one initialisation; HPM runs two stacks of one decoder module,
each into its own fields). So `run_recorded` registers hooks through
torch's public `register_forward_hook` for that one call and removes them after it (none exist
when nothing is asked for): one mechanism, in this file, and the base model's own hooks are never
installed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

import torch
from torch import nn
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput
from transformers.utils.generic import TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

_FLAGS = ("output_attentions", "output_hidden_states")


def requested_outputs(config, kwargs: dict) -> dict:
    """`output_attentions` / `output_hidden_states` as `kwargs` ask for them, None or absent
    meaning the config's value (`output_hidden_states` may also be transformers' selection of
    indices, kept as it is)."""
    return {flag: getattr(config, flag, False) if kwargs.get(flag) is None else kwargs[flag] for flag in _FLAGS}


def record_outputs(func):
    """transformers' `capture_outputs` (hidden states before the final norm: not tied to
    `last_hidden_state`), with our conventions: an output flag given as None (or not at all)
    means the config's value, and is passed on explicitly (the blocks' attention reads it), and
    the recorded fields keep their place in the output (and in its `return_dict=False` tuple).
    Only an explicit `return_dict=False` gives a tuple: a base model is also called inside the
    other models, which read its output by name whatever `config.return_dict` says."""
    captured = capture_outputs(tie_last_hidden_states=False)(func)

    @wraps(func)
    def wrapper(self, *args, **kwargs):
        return_dict = kwargs.pop("return_dict", None)
        requested = requested_outputs(self.config, kwargs)
        output = captured(self, *args, return_dict=True, **{**kwargs, **requested})
        if any(requested.values()):  # the recorded fields were added last: back into the output's field order
            output = type(output)(**output)
        return output if return_dict is not False else output.to_tuple()

    return wrapper


def block_recorders(*block_classes: type[nn.Module]) -> dict[str, list[OutputRecorder]]:
    """`_can_record_outputs` for blocks returning `(hidden_states, attention_weights)`."""
    return {
        "hidden_states": [OutputRecorder(cls, index=0) for cls in block_classes],
        "attentions": [OutputRecorder(cls, index=1) for cls in block_classes],
    }


@dataclass
class StackOutput(ModelOutput):
    """What a recorded stack outside the base model returns: its result (`last_hidden_state`,
    e.g. a decoder's predictions) and, when asked for, its recorded `hidden_states` and `attentions`."""

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class RecordedStackMixin:
    """For a model that runs block stacks outside its base model (a decoder, CAE's regressor)."""

    def run_recorded(self, stack, *inputs, blocks_of: nn.Module | None = None, **kwargs) -> StackOutput:
        """`stack(*inputs, **kwargs)` (`kwargs`: the model's keyword arguments, the output flags
        among them), and when they ask for it, the input of its first block and every block's
        output (`hidden_states`) and attention weights (`attentions`), for the block classes the
        model's `_can_record_outputs` names, found in `blocks_of` (default: the stack itself; a
        callable that runs part of a module names that part)."""
        requested = requested_outputs(self.config, kwargs)
        kwargs.update(requested)
        if not any(requested.values()):
            return StackOutput(last_hidden_state=stack(*inputs, **kwargs))
        classes = tuple({r.target_class for r in _recorders(self._can_record_outputs.get("hidden_states", ()))})
        hidden, weights = [], []

        def record(module, args, output):
            if not hidden:
                hidden.append(args[0])
            hidden.append(output[0])
            weights.append(output[1])

        handles = [m.register_forward_hook(record) for m in (blocks_of or stack).modules() if isinstance(m, classes)]
        try:
            result = stack(*inputs, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return StackOutput(last_hidden_state=result, hidden_states=tuple(hidden) if requested["output_hidden_states"] else None,
                           attentions=tuple(weights) if requested["output_attentions"] else None)


def _recorders(specs) -> list:
    return specs if isinstance(specs, (list, tuple)) else [specs]


class FinalNormMixin:
    """The final norm and the pooled feature of a ViT-style base model (cls token first, unless
    `num_prefix_tokens` is 0), as MAE, BEiT and their descendants build them:

    - `layernorm`: the final norm on every token; by default only without mean pooling;
    - `fc_norm`: with mean pooling (and a pooling layer), the norm of the mean patch token.

    `pooler_output` is `fc_norm(mean of the patch tokens)` when there is an `fc_norm`, else token 0.
    """

    def _build_final_norms(self, config, add_final_norm: bool | None = None, add_pooling_layer: bool = True) -> None:
        if add_final_norm is None:
            add_final_norm = not config.use_mean_pooling
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else None
        use_fc_norm = add_pooling_layer and config.use_mean_pooling
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if use_fc_norm else None

    def _normalize_and_pool(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state, pooler_output) from the last block's output."""
        if self.layernorm is not None:
            hidden = self.layernorm(hidden)
        return hidden, self._pool(hidden)


__all__ = ["record_outputs", "requested_outputs", "can_return_tuple", "Unpack", "TransformersKwargs", "block_recorders", "StackOutput",
           "RecordedStackMixin", "FinalNormMixin"]
