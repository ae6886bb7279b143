"""mim_hub: masked-image-modeling methods as transformers models.

`import mim_hub` registers every config, model and image processor with the Auto classes.
"""

__version__ = "0.1.0"

from .auto import available_methods, register_all
from .models.catalogue import METHODS as _METHODS
from .models.mae import *  # noqa: F401,F403
from .models.mae import __all__ as _mae_all

__all__ = ["available_methods", *_mae_all]

for _method in _METHODS[1:]:  # MAE first, above
    try:
        _module = __import__(f"mim_hub.models.{_method}", fromlist=["__all__"])
    except ModuleNotFoundError as _error:
        if _error.name != f"mim_hub.models.{_method}":
            raise
        continue
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)

register_all()

from .pipelines import MaskedImageReconstructionPipeline, register_pipelines  # noqa: E402

register_pipelines()
__all__.append("MaskedImageReconstructionPipeline")
