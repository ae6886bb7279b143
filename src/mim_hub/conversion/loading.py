"""Reading original checkpoints without running code from them.

Original releases are pickles (`torch.save`). A full unpickle can execute anything the file
asks for, so we never do one. `load_checkpoint` first tries `torch.load(weights_only=True)`,
allow-listing `argparse.Namespace` (MAE/CAE training checkpoints carry their `args`). Training
checkpoints of other codebases also carry configuration objects (a yacs `CfgNode` in SimMIM,
mmengine's `message_hub`/`meta` in mmpretrain). Those are read by a restricted unpickler in which
every allow-listed configuration class is replaced by an inert stand-in that only stores what the
pickle gives it, tensors are rebuilt by torch's own functions, and every other global (a
function, `os.system`, ...) is refused with an error naming it. No code from the file ever runs.

A few callables are named by reference in such files: Python's pickle writes a bound method (and,
below protocol 4, a class's function) as a call of `builtins.getattr` (mmengine's `HistoryBuffer`
keeps its statistics methods `min`, `max`, ... that way), a logger as `logging.getLogger(name)`.
These (`utils.safe_pickle.REFERENCE_CALLABLES`) are read as stand-ins whose calls are recorded as
inert data (`InertCall`: the name and the arguments), never made. Only tensors are taken from the
weights (`find_state_dict`); everything else in the file is data the converters ignore.

numpy arrays and scalars (mmengine's `message_hub` keeps its `HistoryBuffer`s as numpy) are rebuilt
from their bytes by numpy's own pickle protocol, step by step under checks: `_reconstruct` only of
`ndarray`, dtypes only from a list of plain numeric types (never `object`, never structured), and
the bytes must have exactly the length the shape and dtype say. The result is inert data.

Every tensor that conversion will use is checked before anything is computed from it: on the
meta device, sparse, quantized or complex tensors are refused by name, and so is a tensor that
claims more elements than its storage holds (an expanded, stride-0 view, which would turn a
few-kilobyte file into gigabytes once copied).
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from typing import Any

import torch

from ..utils.safe_pickle import CheckpointError, RefusedGlobal, RestrictedPickleModule

__all__ = ["CheckpointError", "load_checkpoint", "find_state_dict", "checkpoint_args", "tensor_problem"]


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load an original checkpoint file safely (see the module docstring). Raises `CheckpointError`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        listed = sorted(n for n in os.listdir(path) if n.endswith((".pth", ".pt", ".bin", ".tar", ".safetensors", ".ckpt")))
        hint = f" (it holds {', '.join(listed[:5])})" if listed else ""
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file: pass the checkpoint file itself{hint}; "
                              "a save_pretrained folder needs no conversion (load it with from_pretrained)")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_error = str(error)
        if _is_truncation(error):
            raise CheckpointError(_truncated_message(path)) from None
    except Exception as error:  # truncated, corrupt or not a torch file at all
        if _is_truncation(error) or _truncated_zip(path):
            raise CheckpointError(_truncated_message(path)) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]})") from None
    # The file holds a global that weights_only refuses: read it again with inert stand-ins.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RestrictedPickleModule)
    except RefusedGlobal as error:
        raise CheckpointError(
            f"{path}: refusing to load: {error}. The checkpoint asks to run or build an object that is not a "
            "tensor, a numpy array of numbers or a known configuration class, which could execute arbitrary code"
        ) from None
    except Exception as error:  # truncated or corrupt data under a valid header, and the like
        if _is_truncation(error) or _truncated_zip(path):
            raise CheckpointError(_truncated_message(path)) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]}; "
            f"weights_only said: {first_error[:200]})"
        ) from None


def _is_truncation(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, EOFError) or any(p in text for p in ("pickle data was truncated", "ran out of input", "unexpected eof"))


def _truncated_zip(path: str) -> bool:
    """A zip (torch's format since 1.6) whose end, with its directory, is missing, or a pickle
    stream (a raw pickle, torch's legacy format: five pickles then the data) that stops before
    one of its pickles does. Read by pickletools' opcode parser: nothing is unpickled."""
    import pickletools

    with open(path, "rb") as handle:
        head = handle.read(4)
        if head and b"PK\x03\x04".startswith(head):
            return not zipfile.is_zipfile(path)
        handle.seek(0)
        try:
            for _ in range(5):
                if not handle.peek(1):
                    return False  # the stream ended between pickles
                for _opcode in pickletools.genops(handle):
                    pass
        except ValueError as error:
            return "exhausted" in str(error) or "not enough data" in str(error)
        except Exception:
            return False
    return False


def _truncated_message(path: str) -> str:
    return (f"{path}: not a readable PyTorch checkpoint: the file is truncated (its {os.path.getsize(path)} bytes end before its "
            "data does); it was probably cut short by an interrupted download or copy")


def tensor_problem(tensor: torch.Tensor) -> str | None:
    """Why a tensor from a checkpoint cannot be used as a weight (None when it can). Checks only
    metadata: nothing is read, copied or allocated."""
    if tensor.is_meta:
        return "is on the meta device (the file holds no values for it)"
    if tensor.layout != torch.strided:
        return f"is a sparse tensor (layout {tensor.layout}); weights are dense"
    if tensor.is_quantized:
        return f"is a quantized tensor ({tensor.dtype}); dequantize it before converting"
    if tensor.is_complex():
        return f"is complex ({tensor.dtype}); weights are real"
    claimed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if claimed > stored:
        return (f"claims {tensor.numel():,} elements of shape {tuple(tensor.shape)} ({claimed:,} bytes) but its storage holds "
                f"{stored:,} bytes: an expanded (stride {tuple(tensor.stride())}) or overlapping view, refused before it is copied")
    return None


def find_state_dict(checkpoint: Any, path: str = "<checkpoint>", keys: tuple[str, ...] = ("model", "state_dict", "module", "model_state")) -> dict[str, torch.Tensor]:
    """The tensor dictionary inside a checkpoint container (`{'model': ...}`, `{'state_dict': ...}`,
    or a bare state dict), with only tensors kept and a `module.` DDP prefix removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict (a state dict or a training checkpoint), got {type(checkpoint).__name__}")
    state = checkpoint
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], dict):
            state = checkpoint[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    for key, value in tensors.items():
        problem = tensor_problem(value)
        if problem:
            raise CheckpointError(f"{path}: cannot convert: tensor '{key}' {problem}")
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors under any of {list(keys)} or at top level (keys: {list(checkpoint)[:10]})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def checkpoint_args(checkpoint: Any) -> dict[str, Any]:
    """The training arguments a checkpoint carries (`args` Namespace, yacs `config`), as a dict."""
    if not isinstance(checkpoint, dict):
        return {}
    for key in ("args", "config", "cfg"):
        value = checkpoint.get(key)
        if isinstance(value, argparse.Namespace):
            return dict(vars(value))
        if isinstance(value, dict):
            return dict(value)
    return {}
