"""What every method's converter shares: config overrides, strict loading, atomic saving."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import torch

from ..utils.atomic import atomic_folder, remove_stale_temporaries
from .loading import CheckpointError


def parse_overrides(value: str | dict | None) -> dict[str, Any]:
    """`--config` value: a JSON object given inline or as a path to a JSON file."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = value
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            text = handle.read()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--config is neither a JSON object nor a path to one: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--config must be a JSON object of config fields, got {type(parsed).__name__}")
    return parsed


def apply_overrides(config, overrides: dict[str, Any]):
    """A new config with `overrides` applied and validated again (the config's own checks run),
    refusing names the config does not have."""
    if not overrides:
        return config
    known = set(config.to_dict())
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(f"--config names fields that {type(config).__name__} does not have: {unknown}")
    values = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
    values.update(overrides)
    return type(config)(**values)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_converted_state(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    *,
    ignore: Iterable[str] = (),
    original_names: dict[str, str] | None = None,
) -> None:
    """Load `state_dict` (already renamed to our keys) into `model`, strictly.

    Missing, unexpected or mis-shaped tensors raise `CheckpointError` naming them all (by their
    name in the original checkpoint when `original_names` maps ours -> theirs): a converted
    model is either complete and exact or not written at all.
    """
    ours = model.state_dict()
    ignore = set(ignore)
    names = original_names or {}
    missing = sorted(k for k in ours if k not in state_dict and k not in ignore)
    unexpected = sorted(f"{names.get(k, k)} (-> {k})" if k in names else k for k in state_dict if k not in ours)
    mismatched = sorted(
        f"{names.get(k, k)}: checkpoint {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
        for k, v in state_dict.items()
        if k in ours and tuple(v.shape) != tuple(ours[k].shape)
    )
    kinds = {k: (_dtype_kind(v.dtype), _dtype_kind(ours[k].dtype)) for k, v in state_dict.items() if k in ours}
    wrong_dtype = sorted(f"{names.get(k, k)}: {state_dict[k].dtype}, the model expects {ours[k].dtype}" for k, (a, b) in kinds.items() if a != b)
    problems = []
    if wrong_dtype:
        problems.append(f"tensors of the wrong dtype {wrong_dtype[:10]}")
    if missing:
        problems.append(f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    if mismatched:
        problems.append(f"mis-shaped tensors {mismatched[:10]}")
    if problems:
        raise CheckpointError(f"{source}: cannot convert: " + "; ".join(problems))
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        import warnings

        warnings.warn(f"{source}: tensors with NaN or inf values: {bad[:10]}", stacklevel=2)
    if any(t.is_meta for t in ours.values()):
        _assign_state(model, state_dict, ours, source)
        return
    with torch.no_grad():
        for key, value in state_dict.items():
            ours[key].copy_(value.to(ours[key].dtype))


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating point"
    return "boolean" if dtype == torch.bool else "integer"


def check_model_size(model_class, config, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse sizes read from a checkpoint's shapes that describe a model the file cannot be:
    more parameters than the file holds values, or derived buffers (position tables and
    indices, which grow with the image size and window) many times larger than the file. The
    model is sized on the meta device, so nothing is allocated; run before it is built."""
    values = sum(v.numel() for v in state.values())
    try:
        with torch.device("meta"):
            probe = model_class(config)
    except Exception:  # a model that cannot be built on meta is sized when it is built
        return
    params = sum(p.numel() for p in probe.parameters())
    buffers = {name: b.numel() for name, b in probe.named_buffers()}
    largest = max(buffers, key=buffers.get, default=None)
    if params > 2 * values or sum(buffers.values()) > max(16 * values, 2**22):
        detail = f"; its largest buffer '{largest}' alone has {buffers[largest]:,}" if largest else ""
        raise CheckpointError(
            f"{source}: cannot convert: the sizes its shapes imply (image_size {getattr(config, 'image_size', '?')}) describe a model of {params:,} parameters and "
            f"{sum(buffers.values()):,} buffer values{detail}, but the file holds {values:,} values: "
            "a shape the architecture cannot have for these weights"
        )


def _assign_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], source: str) -> None:
    """Load into a model whose parameters were made on the meta device by handing it the
    checkpoint's own tensors (no second copy: conversion peaks near the file's size). A tensor
    is copied only when its dtype differs, it is not contiguous, or its storage is already used
    by another key (safetensors refuses shared storage)."""
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        value = value.to(ours[key].dtype)
        pointer = value.untyped_storage().data_ptr()
        if not value.is_contiguous() or pointer in seen or value.storage_offset() or value.untyped_storage().nbytes() != value.nbytes:
            value = value.contiguous().clone()
            pointer = value.untyped_storage().data_ptr()
        seen.add(pointer)
        tensors[key] = value
    model.load_state_dict(tensors, strict=False, assign=True)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: cannot convert: no values for {left[:20]}")


def rename_state(model_class, config, state: dict[str, torch.Tensor], rename, source: str):
    """(renamed state, our key -> original key): `state` renamed with `rename(key) -> our key or
    None`, unknown keys refused by their original names, and its sizes checked against
    `model_class(config)` before anything is built (`check_model_size`)."""
    renamed, original_names, unknown = {}, {}, []
    for key, value in state.items():
        new = rename(key)
        if new is None:
            unknown.append(key)
        else:
            renamed[new], original_names[new] = value, key
    if unknown:
        raise CheckpointError(f"{source}: cannot convert: unexpected keys {sorted(unknown)[:20]}")
    config.architectures = [model_class.__name__]
    check_model_size(model_class, config, renamed, source)
    return renamed, original_names


def build_and_load(model_class, config, state: dict[str, torch.Tensor], rename, source: str):
    """Rename an original state dict with `rename(key) -> our key or None` (`rename_state`), build
    `model_class(config)` and load it strictly; unknown keys are refused by their original names."""
    renamed, original_names = rename_state(model_class, config, state, rename, source)
    model = build_empty(model_class, config)
    load_converted_state(model, renamed, source, original_names=original_names)
    return model.eval()


def build_empty(model_class, config):
    """`model_class(config)` with its parameters on the meta device (no memory, no random init)
    and its buffers real, ready for `load_converted_state` to hand it the checkpoint's tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return model_class(config)


def require_keys(state_dict: dict[str, torch.Tensor], keys: Iterable[str], source: str, what: str) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source}: not a {what} checkpoint: missing keys {missing}")


def count_indexed(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive `prefix{i}.` blocks in a state dict (0 when none)."""
    indices = set()
    for key in state_dict:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                indices.add(int(head))
    if not indices:
        return 0
    count = max(indices) + 1
    if sorted(indices) != list(range(count)):
        raise CheckpointError(f"blocks under '{prefix}' are not numbered 0..{count - 1}: {sorted(indices)}")
    return count


def save_atomically(output_dir: str, write, *, overwrite: bool = False) -> None:
    """Call `write(tmp_dir)`, then move the finished folder to `output_dir` (`atomic_folder`).

    Nothing appears at `output_dir` unless `write` succeeds; an existing non-empty folder is only
    replaced with `overwrite=True`. Temporary folders that killed conversions left beside it are
    removed first.
    """
    output_dir = os.path.abspath(output_dir)
    remove_stale_temporaries(os.path.dirname(output_dir))
    with atomic_folder(output_dir, overwrite=overwrite) as tmp:
        write(tmp)
