"""The two places where a model here reads or writes another library's private attributes, each
isolated in one function, checked where it is used, and pinned by tests/models/test_library_internals.py
(which fails loudly, naming the attribute, when transformers or accelerate change it).

- `forget_key_mapping(model)`: transformers records the `key_mapping` a model was loaded with in
  `model._weight_conversions`, to reverse it when the model is saved
  (`save_pretrained(save_original_format=True)`, the default). CAE's fine-tuning start renames its
  pre-trained final norm to `fc_norm` one way (see `CAEForImageClassification.from_pretrained`):
  the record must go, or the model would save its `fc_norm` under the old name. No public API
  says "this mapping is not to be reversed".
- `accelerate_hooks(module)`: the hooks accelerate attached to a module (`module._hf_hook`, set by
  its public `add_hook_to_module`; there is no public getter), which `offload_whole_blocks`
  regroups per block.
"""

from __future__ import annotations

from torch import nn


def forget_key_mapping(model: nn.Module) -> None:
    """Clear transformers' record of the `key_mapping` `model` was just loaded with, so that
    `save_pretrained` writes the model's own parameter names."""
    record = getattr(model, "_weight_conversions", None)
    if not isinstance(record, list):
        import transformers

        raise RuntimeError(f"transformers {transformers.__version__} no longer records a loaded model's key mapping in "
                           "`_weight_conversions` (a list); mim_hub.models.library_internals.forget_key_mapping needs updating")
    model._weight_conversions = []


def accelerate_hooks(module: nn.Module) -> list:
    """The hooks accelerate attached to `module` (a `SequentialHook` unrolled), [] when none."""
    from accelerate.hooks import SequentialHook

    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(hook.hooks) if isinstance(hook, SequentialHook) else [hook]


__all__ = ["forget_key_mapping", "accelerate_hooks"]
