"""The files of one training run's folder (``train/`` and ``retrain/<aug>/seed<k>/``) that
other stages read: ``metrics.jsonl`` and ``eval.json``, their writers and their readers.

Torch-free on purpose: heatmap, rank and report read runs without paying for torch. The
network file is owned by :mod:`falsecli.method.model` (``save_model``/``load_model``) and the
tracking history by :mod:`falsecli.method.history`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_json, write_json, write_text

METRICS = "metrics.jsonl"
EVAL = "eval.json"


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` at ``path``: one JSON object per epoch, rewritten atomically."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of the run in folder ``run``."""
    path = Path(run) / METRICS
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise FalseCliError(f"{path}: missing or unreadable ({exc}) — redo that run with "
                            "--force") from None
    if not all(isinstance(row, dict) and "epoch" in row for row in rows):
        raise FalseCliError(f"{path}: not one JSON object with an 'epoch' per line — redo "
                            "that run with --force")
    return rows


def write_eval(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """``eval.json`` at ``path``: final metrics per evaluation split."""
    write_json(path, results)


def read_eval(run: Path) -> dict[str, dict[str, Any]]:
    """``{split: {"pixel_acc", "mean_class_acc", "miou", "fwiou", "class_acc"}}`` of a run."""
    path = Path(run) / EVAL
    results = read_json(path, "redo that run with --force")
    if not isinstance(results, dict) or not all(isinstance(v, dict) for v in results.values()):
        raise FalseCliError(f"{path}: not a mapping of split -> metrics — redo that run with "
                            "--force")
    return results
