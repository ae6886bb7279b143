"""The floors of docs/architecture.md, enforced in the order the doc draws them.

Every module of the package belongs to one floor and imports only its own floor and those below
(read from the source with `ast`, so lazy imports inside functions count); no module imports
itself back through others (no import circle); the training and data floors never see the
command line's `argparse.Namespace`, and none of their functions runs over 80 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mim_hub"
# lowest first, as docs/architecture.md draws them; a floor may import its own and lower ones
FLOORS = (
    ("utils",),
    ("layers", "initialization", "masking"),
    ("models",),
    ("auto", "reconstruction", "pipelines", "__init__"),
    ("hub", "model_cards"),
    ("conversion", "data"),
    ("training",),
    ("commands", "zoo"),
    ("cli", "__main__"),
)
FLOOR_OF = {unit: index for index, units in enumerate(FLOORS) for unit in units}
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path` (a file of the package at `root`),
    relative ones resolved; `from X import Y` counts as X and, where Y may be a module, X.Y."""
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


def unit_of(path: Path, root: Path = PACKAGE) -> str:
    """The floor unit of a file: its top-level package or module under mim_hub."""
    return path.relative_to(root).parts[0].removesuffix(".py")


def floor_violations(root: Path = PACKAGE) -> list[str]:
    """'file:line imports module (floor a -> floor b)' for each import of a higher floor, and
    each file on no floor."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(path, root)
        if unit not in FLOOR_OF:
            problems.append(f"{path.relative_to(root.parent).as_posix()} is on no floor")
            continue
        for line, module in imported_modules(path, root):
            parts = module.split(".")
            if parts[0] != "mim_hub" or len(parts) < 2 or parts[1] not in FLOOR_OF:
                continue
            if FLOOR_OF[parts[1]] > FLOOR_OF[unit]:
                problems.append(f"{path.relative_to(root.parent).as_posix()}:{line} imports {module} "
                                f"({unit}, floor {FLOOR_OF[unit]} -> {parts[1]}, floor {FLOOR_OF[parts[1]]})")
    return problems


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = ["mim_hub", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (a package's parents, which Python imports
    first, are not edges of the design)."""
    files = {module_name(path, root): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for _, module in imported_modules(path, root):
            while module and module not in files:  # `from a.b import name`: the module a.b
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_every_module_is_on_a_floor_and_imports_no_higher_one():
    assert floor_violations() == []


def test_the_doc_draws_the_floors_in_this_order():
    """The diagram of docs/architecture.md (its first code block, lowest floor first; on each
    line the units, then `#` and what the floor is) is FLOORS."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagram = re.search(r"```\n(.*?)```", text, re.S).group(1)
    drawn = [{name.removesuffix("/").removesuffix(".py") for name in re.findall(r"[a-z_]+(?:/|\.py)", line.split("#")[0])}
             for line in diagram.splitlines()]
    assert [floor for floor in drawn if floor] == [set(floor) for floor in FLOORS]


def test_no_import_circle():
    assert import_circles(import_graph()) == []


@pytest.mark.parametrize("floor", ["training", "data"])
def test_the_command_line_namespace_stays_above_the_library(floor):
    """Only the command-line layer (`commands/`, `cli.py`) sees `argparse`: the library takes
    settings dataclasses or plain arguments."""
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted((PACKAGE / floor).rglob("*.py"))
             for line, module in imported_modules(path) if module == "argparse"]
    assert found == []


@pytest.mark.parametrize("floor", ["training", "data"])
def test_no_function_is_longer_than_80_lines(floor):
    long = []
    for path in sorted((PACKAGE / floor).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_the_checkers_see_relative_absolute_and_lazy_imports_and_circles(tmp_path):
    root = tmp_path / "mim_hub"
    (root / "models" / "mae").mkdir(parents=True)
    (root / "models" / "mae" / "probe.py").write_text(
        "from ...training import recipes\nimport mim_hub.zoo\nimport torch\n"
        "def f():\n    from ... import cli\n    from ..modeling_common import MIMPreTrainedModel\n    from ...layers import PatchEmbedding\n")
    assert floor_violations(root) == [
        "mim_hub/models/mae/probe.py:1 imports mim_hub.training (models, floor 2 -> training, floor 6)",
        "mim_hub/models/mae/probe.py:2 imports mim_hub.zoo (models, floor 2 -> zoo, floor 7)",
        "mim_hub/models/mae/probe.py:5 imports mim_hub.cli (models, floor 2 -> cli, floor 8)",
    ]
    (root / "data").mkdir()
    (root / "data" / "a.py").write_text("def f():\n    from .b import g\n")
    (root / "data" / "b.py").write_text("from mim_hub.data.a import f\n")
    (root / "data" / "c.py").write_text("from . import a\n")
    assert import_circles(import_graph(root)) == [["mim_hub.data.a", "mim_hub.data.b"]]
    (root / "stray.py").write_text("")
    assert "mim_hub/stray.py is on no floor" in floor_violations(root)
