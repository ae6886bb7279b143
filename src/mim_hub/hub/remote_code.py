"""Saving a model together with the code that defines it, so that
`AutoModel.from_pretrained(folder, trust_remote_code=True)` works where only transformers is
installed.

transformers' remote-code loader copies a model file and the files it imports with
`from .name import ...`, all from one flat folder. Our code is a package with nested relative
imports, so the modules a model needs are copied flat: `mim_hub.layers.attention` becomes
`mimhub_layers_attention.py`, and each `mim_hub` import is rewritten to point at the flat copy.
`auto_map` in `config.json` and `preprocessor_config.json` then names the flat classes. A
pre-training model that predicts pixels also carries the `masked-image-reconstruction` pipeline
(`custom_pipelines` in `config.json`), so that `pipeline(model=folder, trust_remote_code=True)`
offers that task without mim_hub.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os

PACKAGE = "mim_hub"
_SELF_REFERENCE = "_mimhub_module"
# Modules never bundled (they import every method, or only serve the command line).
_EXCLUDED = {PACKAGE, f"{PACKAGE}.auto", f"{PACKAGE}.cli", f"{PACKAGE}.zoo"}


def flat_name(module: str) -> str:
    return "mimhub_" + module[len(PACKAGE) + 1:].replace(".", "_") if module != PACKAGE else "mimhub"


def _is_package(module: str) -> bool:
    return hasattr(importlib.import_module(module), "__path__")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute module named by a `from X import ...` statement inside `module`."""
    if node.level == 0:
        return node.module or ""
    base = module if _is_package(module) else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    return f"{base}.{node.module}" if node.module else base


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def _dependencies(module: str) -> tuple[list[tuple[ast.ImportFrom, str, list]], set[str]]:
    """Package-internal `from` imports of `module` (node, target, [(alias, is_submodule)]) and the
    modules they need. Imports inside functions are rewritten too."""
    source = inspect.getsource(importlib.import_module(module))
    found, needed = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise ValueError(f"{module}: 'import {node.names[0].name}' cannot be bundled for remote code; use a relative import")
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _resolve(module, node)
        if target.split(".")[0] != PACKAGE or target == "__future__":
            continue
        names = [(alias, _is_module(f"{target}.{alias.name}")) for alias in node.names]
        found.append((node, target, names))
        for alias, submodule in names:
            needed.add(f"{target}.{alias.name}" if submodule else target)
    return found, needed


def _rewrite(module: str) -> tuple[str, set[str]]:
    source = inspect.getsource(importlib.import_module(module))
    lines = source.splitlines()
    found, needed = _dependencies(module)
    for node, target, names in sorted(found, key=lambda item: item[0].lineno, reverse=True):
        indent = lines[node.lineno - 1][: len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())]
        statements = []
        plain = [a for a, submodule in names if not submodule]
        if plain:
            if target in _EXCLUDED:
                raise ValueError(f"{module} imports from {target}, which cannot be bundled for remote code")
            imported = ", ".join(f"{a.name} as {a.asname}" if a.asname else a.name for a in plain)
            statements.append(f"{indent}from .{flat_name(target)} import {imported}")
        for alias, submodule in names:
            if submodule:
                statements.append(f"{indent}from .{flat_name(f'{target}.{alias.name}')} import {_SELF_REFERENCE} as {alias.asname or alias.name}")
        lines[node.lineno - 1: node.end_lineno] = statements
    lines.append("")
    lines.append(f"import sys as _sys  # noqa: E402  (lets `from .{flat_name(module)} import {_SELF_REFERENCE}` bind this module)")
    lines.append(f"{_SELF_REFERENCE} = _sys.modules[__name__]")
    return "\n".join(lines) + "\n", needed


def bundle_modules(roots: list[str]) -> dict[str, str]:
    """Flat file name -> rewritten source for `roots` and everything they import from mim_hub."""
    files, todo, seen = {}, list(roots), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module in _EXCLUDED:
            raise ValueError(f"{module} cannot be bundled for remote code")
        source, needed = _rewrite(module)
        files[flat_name(module) + ".py"] = source
        todo.extend(needed - seen)
    return files


def save_with_code(model, processor, folder: str) -> None:
    """`save_pretrained` of model and processor plus the flat code and `auto_map` entries."""
    import json

    config_class, model_class, processor_class = type(model.config), type(model), type(processor)
    files = bundle_modules([config_class.__module__, model_class.__module__, processor_class.__module__])
    os.makedirs(folder, exist_ok=True)
    for name, source in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(source)
    from ..auto import available_methods, method_classes

    method = next((m for m in available_methods() if method_classes(m)["config"] is config_class), None)
    classes = method_classes(method) if method else {"config": config_class, "model": model_class}
    config_ref = f"{flat_name(config_class.__module__)}.{config_class.__name__}"
    auto_map = {"AutoConfig": config_ref}
    for auto_name, key in (("AutoModel", "model"), ("AutoModelForPreTraining", "pretraining"),
                           ("AutoModelForImageClassification", "classification"),
                           ("AutoModelForMaskedImageModeling", "masked_image_modeling")):
        cls = classes.get(key)
        if cls is not None:
            extra = bundle_modules([cls.__module__])
            for name, source in extra.items():
                if name not in files:
                    files[name] = source
                    with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                        handle.write(source)
            auto_map[auto_name] = f"{flat_name(cls.__module__)}.{cls.__name__}"
    model.config.auto_map = auto_map
    from ..reconstruction import predicts_pixels

    if predicts_pixels(model):  # the reconstruction pipeline, with its code
        pipeline_module = f"{PACKAGE}.pipelines"
        for name, source in bundle_modules([pipeline_module]).items():
            if name not in files:
                files[name] = source
                with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                    handle.write(source)
        from ..pipelines import MaskedImageReconstructionPipeline, custom_pipelines_entry

        model.config.custom_pipelines = custom_pipelines_entry(f"{flat_name(pipeline_module)}.{MaskedImageReconstructionPipeline.__name__}")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    path = os.path.join(folder, "preprocessor_config.json")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    data["auto_map"] = {"AutoImageProcessor": f"{flat_name(processor_class.__module__)}.{processor_class.__name__}"}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    del model.config.auto_map
    if hasattr(model.config, "custom_pipelines"):
        del model.config.custom_pipelines
