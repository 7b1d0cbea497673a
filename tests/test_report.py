"""Report aggregation on hand-made runs: the means are exactly the means of eval.json."""

from pathlib import Path

import numpy as np
import pytest

from falsecli.core import config, workdir
from falsecli.core.errors import FalseCliError
from falsecli.core.workdir import stage_run
from falsecli.method import statistics
from falsecli.stages import report


def _run(tmp: Path, name: str, seed: int, val_acc: float, scruff: float | None) -> None:
    cfg = config.resolve(sets=[f"train.seed={seed}", "train.epochs=3",
                               "data.classes=[a, scruff]"])
    with stage_run(tmp, name, cfg, seed=seed) as run:
        evaluation = {"val": {"pixel_acc": val_acc, "mean_class_acc": 0.5, "miou": 0.4,
                              "fwiou": 0.6, "class_acc": {"a": 0.9, "scruff": scruff}}}
        workdir.write_json(run.out("eval.json"), evaluation)


def test_collect_and_aggregate(tmp_path: Path) -> None:
    _run(tmp_path, "train", 0, 0.80, 0.2)
    _run(tmp_path, "retrain/none/seed0", 0, 0.80, 0.2)  # same seed+epochs as train: counted once
    _run(tmp_path, "retrain/none/seed1", 1, 0.90, 0.4)
    _run(tmp_path, "retrain/flip/seed0", 0, 0.70, None)  # scruff absent from this split
    _run(tmp_path, "retrain/flip/seed1", 1, 0.75, 0.5)
    runs = report.collect_runs(tmp_path)
    assert [(r.method, r.name) for r in runs] == [
        ("baseline", "train"), ("baseline", "retrain/none/seed1"),
        ("flip", "retrain/flip/seed0"), ("flip", "retrain/flip/seed1")]
    per_method = {}
    for r in runs:
        per_method.setdefault(r.method, []).append(statistics.flatten_eval(r.eval()))
    rows = {(r["method"], r["split"], r["metric"]): r for r in statistics.aggregate(per_method)}
    base = rows[("baseline", "val", "pixel_acc")]
    assert base["mean"] == pytest.approx(0.85) and base["std"] == pytest.approx(0.05)
    assert base["n"] == 2
    flip_scruff = rows[("flip", "val", "class_acc/scruff")]
    assert (flip_scruff["mean"], flip_scruff["std"], flip_scruff["n"]) == (0.5, 0.0, 1)
    flip_acc = rows[("flip", "val", "pixel_acc")]
    assert flip_acc["mean"] == pytest.approx(np.mean([0.70, 0.75]))
    assert flip_acc["std"] == pytest.approx(np.std([0.70, 0.75]))
    with pytest.raises(FalseCliError, match="metrics.jsonl: missing"):
        runs[0].curve()


def test_table_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"method": "baseline", "split": "val", "metric": "pixel_acc", "mean": 0.85,
             "std": 0.05, "n": 2},
            {"method": "flip", "split": "tracked", "metric": "target_density", "mean": 1 / 3,
             "std": 0.0, "n": 1}]
    (tmp_path / "report").mkdir()
    report._write_table(tmp_path / "report" / "table.csv", rows)
    assert report.read_table(tmp_path) == rows


def test_regions_are_8_connected_and_filtered() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal region of 3
    mask[5, 3:6] = True  # a second region of 3
    mask[3, 5] = True  # a single pixel
    assert sorted(statistics.regions(mask, 2)) == [3, 3]
    assert statistics.regions(mask, 4) == []
    assert statistics.regions(np.zeros((3, 3), dtype=bool), 1) == []
