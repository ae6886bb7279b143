"""Reading original checkpoints without running code from them.

Original releases are pickles (`torch.save`). A full unpickle can execute anything the file
asks for, so we never do one. `load_checkpoint` first tries `torch.load(weights_only=True)`,
allow-listing `argparse.Namespace` (MAE/CAE training checkpoints carry their `args`). Training
checkpoints of other codebases also carry configuration objects (a yacs `CfgNode` in SimMIM,
mmengine's `message_hub`/`meta` in mmpretrain). Those are read by a restricted unpickler in which
every allow-listed configuration class is replaced by an inert stand-in that only stores what the
pickle gives it, tensors are rebuilt by torch's own functions, and every other global (a
function, `os.system`, ...) is refused with an error naming it. No code from the file ever runs.

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
import collections
import copyreg
import os
import pickle
import zipfile
from typing import Any

import numpy as np
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


class RefusedGlobal(pickle.UnpicklingError):
    """The restricted unpickler refused what the file asks it to run or build."""


# numpy dtypes a checkpoint may hold: plain numbers and booleans (never `object`, never structured)
_NUMPY_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"})
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


class _NdarrayClass:
    """What `numpy.ndarray` unpickles to: a token that `_reconstruct` accepts, not callable."""


_NDARRAY = _NdarrayClass()


class _NumpyDtype:
    """A numpy dtype rebuilt from its pickle (`numpy.dtype(name, align, copy)` then its state)."""

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or name not in _NUMPY_DTYPES:
            raise RefusedGlobal(f"numpy dtype {name!r} is not allow-listed (only plain numeric dtypes: {sorted(_NUMPY_DTYPES)})")
        self.dtype = np.dtype(name)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4) and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None) and all(isinstance(v, int) for v in state[5:8])
                and (len(state) == 8 or state[8] is None)):
            raise RefusedGlobal(f"numpy dtype state {str(state)[:80]} is not that of a plain numeric dtype")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_dtype_of(value) -> np.dtype:
    if not isinstance(value, _NumpyDtype):
        raise RefusedGlobal(f"a numpy array or scalar with dtype {type(value).__name__} (not a numpy dtype from the file)")
    return value.dtype


def _array_from_bytes(data, dtype: np.dtype, shape, fortran: bool = False) -> np.ndarray:
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise RefusedGlobal(f"numpy array shape {str(shape)[:80]} is not a tuple of sizes")
    if not isinstance(data, (bytes, bytearray)):
        raise RefusedGlobal(f"numpy array data of type {type(data).__name__} (only raw bytes are read)")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if len(data) != expected:
        raise RefusedGlobal(f"numpy array of shape {shape} and dtype {dtype} needs {expected} bytes, the file gives {len(data)}")
    return np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


class InertArray(np.ndarray):
    """A numpy array rebuilt from a checkpoint's bytes (numpy's `_reconstruct` + `__setstate__`)."""

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[0], int) and isinstance(state[3], bool)):
            raise RefusedGlobal(f"numpy array state {str(state)[:80]} is not (version, shape, dtype, fortran, bytes)")
        _, shape, dtype, fortran, data = state
        array = _array_from_bytes(data, _numpy_dtype_of(dtype), shape, fortran)
        np.ndarray.__setstate__(self, (1, array.shape, array.dtype, False, array.tobytes()))

    def __reduce__(self):  # pickled again as a plain numpy array
        return np.asarray(self).copy().__reduce__()


def _numpy_reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise RefusedGlobal(f"numpy _reconstruct of {getattr(cls, '_qualified_name', type(cls).__name__)} (only numpy.ndarray is rebuilt)")
    return np.ndarray.__new__(InertArray, (0,), np.uint8)


def _numpy_scalar(dtype, data=None):
    dtype = _numpy_dtype_of(dtype)
    return _array_from_bytes(data, dtype, ())[()]


def _numpy_frombuffer(buffer, dtype, shape, order):
    if order not in ("C", "F"):
        raise RefusedGlobal(f"numpy _frombuffer with order {order!r}")
    return _array_from_bytes(buffer, _numpy_dtype_of(dtype), shape, order == "F").view(InertArray)


def _inert_class(module: str, name: str) -> type:
    return type(name, (InertObject,), {"_qualified_name": f"{module}.{name}", "__module__": "mim_hub.inert"})


def _safe_codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("refused _codecs.encode with unexpected arguments")
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
        numpy_global = _NUMPY_GLOBALS.get(key)
        if numpy_global is not None:
            return numpy_global
        if module.startswith(INERT_MODULE_PREFIXES):
            return _inert_class(module, name)
        raise RefusedGlobal(f"global '{module}.{name}' is not allow-listed")


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _NumpyDtype,
    **{(module, "_reconstruct"): _numpy_reconstruct for module in _NUMPY_MULTIARRAY},
    **{(module, "scalar"): _numpy_scalar for module in _NUMPY_MULTIARRAY},
    **{(module, "_frombuffer"): _numpy_frombuffer for module in _NUMPY_NUMERIC},
}


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
        if _is_truncation(error):
            raise CheckpointError(_truncated_message(path)) from None
    except Exception as error:  # truncated, corrupt or not a torch file at all
        if _is_truncation(error) or _truncated_zip(path):
            raise CheckpointError(_truncated_message(path)) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {str(error)[:200]})") from None
    # The file holds a global that weights_only refuses: read it again with inert stand-ins.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
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
