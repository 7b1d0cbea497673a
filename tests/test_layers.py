"""The package's layers, read from its source: core < data < method < present < stages < cli.

A module may import its own layer and the layers below, never one above, and the import
graph (function-level imports included) has no cycle, so any module can be understood and
tested from the layers beneath it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "falsecli"
LAYERS = {"core": 0, "data": 1, "method": 2, "present": 3, "stages": 4, "cli": 5,
          "__main__": 5}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    """Every falsecli module ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("falsecli"):
            for alias in node.names:  # ``from falsecli.core import config`` names a module
                sub = f"{node.module}.{alias.name}"
                known = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file()
                out.add(sub if known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("falsecli"))
    return out


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    own = _layer(module)
    if own is None:  # falsecli/__init__.py: the version only
        assert GRAPH[module] == set()
        return
    above = sorted(m for m in GRAPH[module] if (_layer(m) or 0) > own)
    assert not above, f"{module} imports {above} from a layer above its own"


def test_the_import_graph_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module):] + (module,)))
        if module in done:
            return
        for dep in sorted(GRAPH.get(module, ())):
            if dep != module and not module.startswith(dep + "."):  # a package's own modules
                visit(dep, (*path, module))
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, ())


#: a module or a function longer than this does more than one job (issue 23's rooms)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _module(p))
def test_every_module_and_function_is_short(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{_module(path)} has {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{_module(path)}: {', '.join(long)}"
