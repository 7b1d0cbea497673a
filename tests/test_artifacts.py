"""One owner per artifact: each artifact file name is spelled in exactly one module.

The module that writes a file names it once, as a constant, and exports the reader; every
other module imports both. A second spelling of the name is a second, unchecked idea of the
file's layout, which is how writer and readers drift apart.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

import falsecli

PACKAGE = Path(falsecli.__file__).resolve().parent
#: SPEC §3 and §10 artifact file names
ARTIFACTS = (
    "model.pt", "metrics.jsonl", "eval.json", "checkpoint.pt",
    "sections.json", "labels.npy", "correct.npy", "switch.npy", "pred_last.npy",
    "forgetting.npz", "switch.npz", "never_learned.npz", "summary.csv",
    "ranking.csv", "ranking.json", "samples.npz", "generator.pt",
    "table.csv", "report.md", "report.html", "manifest.json", "config.yaml", "influence.csv",
)


@cache
def literals() -> dict[str, set[str]]:
    """Artifact name -> the modules (paths relative to the package) whose source holds it as
    a string literal."""
    found: dict[str, set[str]] = {name: set() for name in ARTIFACTS}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in found:
                found[node.value].add(str(path.relative_to(PACKAGE)))
    return found


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact_name_has_one_owner(name: str) -> None:
    owners = sorted(literals()[name])
    assert owners, f"'{name}' is named nowhere in falsecli/: no module writes it"
    assert len(owners) == 1, (f"'{name}' is spelled in {len(owners)} modules: "
                              f"{', '.join(owners)} — keep it in the writer, import it elsewhere")


#: a run or per-run stage folder's name or pattern in a string (f-string values as ``{}``):
#: ``seed0``, ``/seed{}``, ``seed*``, ``round<r>``, ``retrain/{}``, ``al/*``, ``{}/heatmap``,
#: ``<run>/query``, ``trace/{}``; prose that mentions a folder ("train/ and retrain/none/") is
#: no pattern
FOLDER = re.compile(r"(^|/)(seed|round)(\d|\\|\{\}|\*|<)"
                    r"|\b(retrain|al)/(\{\}|\*|<|\()"
                    r"|(\{\}|\*|>)/(heatmap|query|trace)\b"
                    r"|\b(heatmap|query|trace)/(\{\}|\*|<)")
#: the one module that spells run and stage folders
LAYOUT = "core/layout.py"


def _strings(tree: ast.AST) -> list[str]:
    """The string literals of ``tree`` but docstrings, each f-string as its text with ``{}``
    for every value (a folder name built from parts is still seen)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for v in node.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{}"
                               for v in node.values))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docs | parts):
            out.append(node.value)
    return out


def test_folder_patterns_are_spelled_in_layout_only() -> None:
    """Run folders (``retrain/<aug>/seed<k>``...) and per-run stage folders are parsed and
    formatted by falsecli.core.layout alone; a second spelling is a second idea of the
    workdir's layout."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hits = [s for s in _strings(tree) if FOLDER.search(s)]
        if hits and where != LAYOUT:
            found[where] = hits
    assert not found, f"folder names spelled outside {LAYOUT}: {found}"
    layout = ast.parse((PACKAGE / LAYOUT).read_text(encoding="utf-8"))
    assert any(FOLDER.search(s) for s in _strings(layout)), "the guard matches nothing"
