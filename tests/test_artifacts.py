"""One owner per artifact: each artifact file name is spelled in exactly one module.

The module that writes a file names it once, as a constant, and exports the reader; every
other module imports both. A second spelling of the name is a second, unchecked idea of the
file's layout, which is how writer and readers drift apart.
"""

from __future__ import annotations

import ast
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
