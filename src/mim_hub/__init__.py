"""mim_hub: masked-image-modeling methods as transformers models.

`import mim_hub` registers every config, model and image processor with the Auto classes, and
the `masked-image-reconstruction` pipeline with transformers' pipelines.

One process is the exception: the `mim-hub` command line itself (`utils/entry_point.py`), where
the registration waits until a command runs (`cli.main`), so that `mim-hub --help` and
`mim-hub <command> --help` import neither torch nor transformers. There, as everywhere, a name
such as `mim_hub.MAEModel` is there when asked for: the first one asked imports and registers
everything (PEP 562's module `__getattr__`).
"""

__version__ = "0.1.0"

import importlib as _importlib
from importlib.util import find_spec as _find_spec

from .utils.entry_point import started_as_command_line as _started_as_command_line

_imported = _importing = False


def _import_everything() -> None:
    """Import every method's classes into this namespace, register them with the Auto classes
    and register the reconstruction pipeline: what `import mim_hub` does (once)."""
    global _imported, _importing
    if _imported or _importing:  # (a name asked for while importing is not there yet, as in any module)
        return
    _importing = True
    try:
        _import_and_register()
    finally:
        _importing = False
    _imported = True


def _import_and_register() -> None:
    global __all__
    from .auto import available_methods, register_all
    from .models.catalogue import METHODS

    names = {"available_methods": available_methods, "register_all": register_all}
    public = ["available_methods"]
    for method in METHODS:  # MAE first
        try:
            module = _importlib.import_module(f"mim_hub.models.{method}")
        except ModuleNotFoundError as error:
            if error.name != f"mim_hub.models.{method}":
                raise
            continue
        for name in getattr(module, "__all__", ()):
            names[name] = getattr(module, name)
            public.append(name)
    globals().update(names)
    register_all()
    from .pipelines import MaskedImageReconstructionPipeline, register_pipelines

    register_pipelines()
    globals().update(MaskedImageReconstructionPipeline=MaskedImageReconstructionPipeline, register_pipelines=register_pipelines)
    __all__ = [*public, "MaskedImageReconstructionPipeline"]


def __getattr__(name: str):
    """A public name not imported yet (only in the command line's own process): import
    everything, then answer. A submodule's name is left to the import system."""
    if (name.startswith("_") and name != "__all__") or _find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _import_everything()
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _started_as_command_line():
    _import_everything()
