"""The floors: layers -> models -> conversion / training / hub -> cli. A lower floor never
imports a higher one (read from the source with `ast`, so lazy imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mim_hub"
# top-level modules and packages of mim_hub above the models/layers floors
HIGHER = ("training", "conversion", "hub", "zoo", "cli", "pipelines", "reconstruction")


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path` (a file of the package at `root`),
    relative ones resolved."""
    package = ["mim_hub", *path.relative_to(root).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if not node.module]
    return found


def upward_imports(floor: str, root: Path = PACKAGE) -> list[str]:
    """'file:line imports module' for each import of a higher floor under `root`/`floor`."""
    problems = []
    for path in sorted((root / floor).rglob("*.py")):
        for line, module in imported_modules(path, root):
            parts = module.split(".")
            if parts[0] == "mim_hub" and len(parts) > 1 and parts[1] in HIGHER:
                problems.append(f"{path.relative_to(root.parent).as_posix()}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("floor", ["layers", "models", "utils"])
def test_lower_floors_import_no_higher_one(floor):
    assert upward_imports(floor) == []


def test_the_checker_sees_relative_absolute_and_lazy_imports(tmp_path):
    root = tmp_path / "mim_hub"
    (root / "models" / "mae").mkdir(parents=True)
    (root / "models" / "mae" / "probe.py").write_text(
        "from ...training import recipes\nimport mim_hub.zoo\nimport torch\n"
        "def f():\n    from ... import cli\n    from ..modeling_common import MIMPreTrainedModel\n    from ...layers import PatchEmbedding\n")
    assert upward_imports("models", root) == [
        "mim_hub/models/mae/probe.py:1 imports mim_hub.training",
        "mim_hub/models/mae/probe.py:2 imports mim_hub.zoo",
        "mim_hub/models/mae/probe.py:5 imports mim_hub.cli",
    ]
