"""A restricted unpickler: reads tensors, plain containers, numpy arrays of numbers, inert
stand-ins of allow-listed configuration classes and inert stand-ins of the few callables training
checkpoints name by reference (never called), out of a pickle, and refuses everything else.

Used by the checkpoint reader (`conversion/loading.py`, whose docstring says what is read and
how) and by CAE's DALL-E tokenizer reader (`models/cae/tokenizer_dalle.py`, which adds inert
stand-ins for the module classes of a pickled `nn.Module`). No code from the file ever runs.
Lives here, below every floor, so that both can use it.
"""

from __future__ import annotations

import argparse
import collections
import copyreg
import pickle

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


class InertCall(InertObject):
    """What a call of an `InertReference` gives: the callable's name and the arguments the file
    passed (`_args`), and any state it then sets. Calling it again gives another one: nothing runs."""

    def __call__(self, *args, **kwargs):
        return inert_call(f"{self._qualified_name}(...)", args)

    def __repr__(self) -> str:
        return f"<inert call {self._qualified_name}{self._args!r}>"


class InertReference:
    """Stand-in for a callable that training checkpoints name by reference (`builtins.getattr`,
    which Python's pickle writes for a bound method or a nested function, e.g. mmengine's
    `HistoryBuffer` statistics methods; `logging.getLogger` for a logger; `functools.partial`;
    `operator`'s getters): the unpickler's call of it (pickle's REDUCE) is recorded as an
    `InertCall`, never made, so a file can name them but never run them."""

    def __init__(self, qualified_name: str):
        self._qualified_name = qualified_name

    def __call__(self, *args, **kwargs):
        return inert_call(self._qualified_name, args)

    def __repr__(self) -> str:
        return f"<inert reference {self._qualified_name}>"


def inert_call(qualified_name: str, args: tuple) -> InertCall:
    call = type("InertCall", (InertCall,), {"_qualified_name": qualified_name, "__module__": "mim_hub.inert"})()
    call.__dict__["_args"] = args
    return call


# callables training checkpoints name by reference: read as `InertReference`s, never called
REFERENCE_CALLABLES = frozenset({
    ("builtins", "getattr"),
    ("logging", "getLogger"),
    ("logging", "getLevelName"),
    ("functools", "partial"),
    ("operator", "attrgetter"),
    ("operator", "itemgetter"),
    ("operator", "methodcaller"),
})


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


def inert_class(module: str, name: str) -> type:
    return type(name, (InertObject,), {"_qualified_name": f"{module}.{name}", "__module__": "mim_hub.inert"})


def _safe_codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("refused _codecs.encode with unexpected arguments")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("__builtin__", "copy_reg"):  # Python 2 names in protocol 0-2 pickles
            module = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
        key = (module, name)
        if key == ("_codecs", "encode"):
            return _safe_codecs_encode
        if key in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[key]
        if key in REFERENCE_CALLABLES:
            return InertReference(f"{module}.{name}")
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
            return inert_class(module, name)
        raise RefusedGlobal(f"global '{module}.{name}' is not allow-listed")


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _NumpyDtype,
    **{(module, "_reconstruct"): _numpy_reconstruct for module in _NUMPY_MULTIARRAY},
    **{(module, "scalar"): _numpy_scalar for module in _NUMPY_MULTIARRAY},
    **{(module, "_frombuffer"): _numpy_frombuffer for module in _NUMPY_NUMERIC},
}


class RestrictedPickleModule:
    """A `pickle_module` for `torch.load` whose Unpickler is the restricted one (a subclass
    naming another `Unpickler`, a subclass of `RestrictedUnpickler`, uses that one)."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "mim_hub_restricted_pickle"

    @classmethod
    def load(cls, file, **kwargs):
        return cls.Unpickler(file, **kwargs).load()


__all__ = ["CheckpointError", "INERT_MODULE_PREFIXES", "InertArray", "InertCall", "InertObject", "InertReference", "REFERENCE_CALLABLES",
           "RefusedGlobal", "RestrictedPickleModule",
           "RestrictedUnpickler", "inert_class"]
