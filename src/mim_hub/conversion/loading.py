"""Reading original checkpoints without running code from them.

Original releases are pickles (`torch.save`). A full unpickle can execute anything the file
asks for, so we never do one. `load_checkpoint` first tries `torch.load(weights_only=True)`,
allow-listing `argparse.Namespace` (MAE/CAE training checkpoints carry their `args`). Training
checkpoints of other codebases also carry configuration objects (a yacs `CfgNode` in SimMIM,
mmengine's `message_hub`/`meta` in mmpretrain). Those are read by a restricted unpickler in which
every allow-listed configuration class is replaced by an inert stand-in that only stores what the
pickle gives it, tensors are rebuilt by torch's own functions, and every other global (a
function, `os.system`, ...) is refused with an error naming it. No code from the file ever runs.
"""

from __future__ import annotations

import argparse
import collections
import copyreg
import os
import pickle
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or converted; the message names the file and the problem."""


# Module prefixes whose classes appear in real training checkpoints as configuration or logging
# state. Their globals are replaced by inert stand-ins, never imported.
INERT_MODULE_PREFIXES: tuple[str, ...] = (
    "yacs.",
    "mmengine.",
    "mmcv.",
    "mmpretrain.",
    "mmselfsup.",
    "numpy.",
    "omegaconf.",
    "pathlib.",
)

# Real globals the restricted unpickler may return: containers and torch's tensor machinery.
_SAFE_BUILTINS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "deque"): collections.deque,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("argparse", "Namespace"): argparse.Namespace,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "object"): object,
    # protocol 0/1 pickles rebuild dict subclasses with it; it only calls base.__new__/__init__
    # of classes this unpickler itself allowed
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
}


class InertObject(dict):
    """Stand-in for an allow-listed configuration class: keeps the state it is given, runs nothing."""

    _qualified_name = "?"

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)
        else:
            self.__dict__["_state"] = state

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self):  # never re-pickled as the original class
        return (dict, (dict(self),))

    def __repr__(self) -> str:
        return f"<inert {self._qualified_name} {dict.__repr__(self)}>"


def _inert_class(module: str, name: str) -> type:
    return type(name, (InertObject,), {"_qualified_name": f"{module}.{name}", "__module__": "mim_hub.inert"})


def _safe_codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode with unexpected arguments")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("__builtin__", "copy_reg"):  # Python 2 names in protocol 0-2 pickles
            module = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
        key = (module, name)
        if key == ("_codecs", "encode"):
            return _safe_codecs_encode
        if key in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[key]
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return getattr(torch._utils, name)
        if module == "torch" and (name.endswith("Storage") or name in ("Size", "device")) or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return getattr(torch, name)
        if module == "torch.nn.parameter" and name == "Parameter":
            return torch.nn.Parameter
        if module.startswith(INERT_MODULE_PREFIXES):
            return _inert_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allow-listed")


class _RestrictedPickleModule:
    """A `pickle_module` for `torch.load` whose Unpickler is the restricted one."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "mim_hub_restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


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
    except Exception as error:  # truncated, corrupt or not a torch file at all
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]})") from None
    # The file holds a global that weights_only refuses: read it again with inert stand-ins.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load: {error}. The checkpoint asks to run or build an object that is not a "
            "tensor or a known configuration class, which could execute arbitrary code"
        ) from None
    except Exception as error:  # corrupt data under a valid header, and the like
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]}; "
            f"weights_only said: {first_error[:200]})"
        ) from None


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
