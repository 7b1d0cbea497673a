"""The report on hand-made runs: which runs it compares, its means and spreads, each method's
Fig. 5 maps against an independent computation, its files read back, and its page's layout.
(The claims' verdicts: test_claims.py; intervals and forgetting statistics: test_statistics.py.)"""

import copy
from pathlib import Path

import numpy as np
import pytest

import independent
from falsecli.core import config, files
from falsecli.core.errors import FalseCliError
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.method import comparison, statistics
from falsecli.present.document import cell_class, table_cell
from falsecli.stages import report

DATA = {"classes": ["a", "scruff"], "ignore_index": 255, "val_every": 5,
        "holdout": "crossing", "volumes": {"train": {"shape": [8, 8, 8], "seismic": "s0",
                                                     "labels": "l0"}}}


def _run(tmp: Path, name: str, seed: int, val_acc: float, scruff: float | None,
         epochs: int = 3, data: dict | None = None, fingerprint: bool = True,
         sets: tuple[str, ...] = (), upstream: tuple[str, ...] = ()) -> None:
    cfg = config.resolve(sets=[f"train.seed={seed}", f"train.epochs={epochs}",
                               "data.classes=[a, scruff]", *sets])
    with stage_run(tmp, name, cfg, seed=seed,
                   upstream=[Stage(tmp, u) for u in upstream]) as run:
        evaluation = {"val": {"pixel_acc": val_acc, "mean_class_acc": 0.5, "miou": 0.4,
                              "fwiou": 0.6, "class_acc": {"a": 0.9, "scruff": scruff}}}
        files.write_json(run.out("eval.json"), evaluation)
        if fingerprint:
            run.extra["fingerprint"] = {"data": data or DATA, "tracked": "t0",
                                        "tracked_sections": 4, "epochs": epochs}


def test_collect_and_aggregate_with_the_sample_std(tmp_path: Path) -> None:
    _run(tmp_path, "train", 0, 0.80, 0.2)
    _run(tmp_path, "retrain/none/seed0", 0, 0.80, 0.2)  # same seed+epochs as train: counted once
    _run(tmp_path, "retrain/none/seed1", 1, 0.90, 0.4)
    _run(tmp_path, "retrain/flip/seed0", 0, 0.70, None)  # scruff absent from this split
    _run(tmp_path, "retrain/flip/seed1", 1, 0.75, 0.5)
    chosen = comparison.select_runs(comparison.collect_runs(tmp_path))
    assert [(r.method, r.name) for r in chosen.runs] == [
        ("baseline", "train"), ("baseline", "retrain/none/seed1"),
        ("flip", "retrain/flip/seed0"), ("flip", "retrain/flip/seed1")]
    assert chosen.left_out == ["retrain/none/seed0: seed 0 of baseline is already counted "
                               "(train)"]
    per_method = {}
    for r in chosen.runs:
        per_method.setdefault(r.method, []).append(statistics.flatten_eval(r.eval()))
    rows = {(r["method"], r["split"], r["metric"]): r for r in statistics.aggregate(per_method)}
    base = rows[("baseline", "val", "pixel_acc")]
    assert base["mean"] == pytest.approx(0.85) and base["n"] == 2
    assert base["std"] == pytest.approx(np.sqrt(0.005))  # sample std of 0.8, 0.9 (ddof = 1)
    flip_scruff = rows[("flip", "val", "class_acc/scruff")]
    assert (flip_scruff["mean"], flip_scruff["n"]) == (0.5, 1) and np.isnan(flip_scruff["std"])
    with pytest.raises(FalseCliError, match="metrics.jsonl: missing"):
        chosen.runs[0].curve()


def test_runs_on_other_data_other_lengths_or_unfingerprinted_are_left_out(tmp_path) -> None:
    other = copy.deepcopy(DATA)
    other["volumes"]["train"]["labels"] = "l5"
    _run(tmp_path, "train", 0, 0.80, 0.2, epochs=3)
    _run(tmp_path, "retrain/none/seed0", 0, 0.80, 0.2, epochs=2)
    _run(tmp_path, "retrain/none/seed1", 1, 0.80, 0.2, epochs=2)
    _run(tmp_path, "retrain/flip/seed0", 0, 0.70, 0.3, epochs=2, data=other)
    _run(tmp_path, "retrain/flip/seed1", 1, 0.70, 0.3, epochs=2)
    _run(tmp_path, "retrain/rotate/seed0", 0, 0.70, 0.3, epochs=2, fingerprint=False)
    chosen = comparison.select_runs(comparison.collect_runs(tmp_path))
    assert chosen.window == 2
    assert [r.name for r in chosen.runs] == ["retrain/none/seed0", "retrain/none/seed1",
                                             "retrain/flip/seed1"]
    why = dict(line.split(": ", 1) for line in chosen.left_out)
    assert set(why) == {"train", "retrain/flip/seed0", "retrain/rotate/seed0"}
    assert why["train"].startswith("3 epochs, the compared runs 2")
    assert "data.volumes.train.labels l0 -> l5" in why["retrain/flip/seed0"]
    assert "no fingerprint" in why["retrain/rotate/seed0"]


def _transfer(tmp: Path, content: str) -> None:
    with stage_run(tmp, "transfer", config.resolve(), force=True) as run:
        files.write_text(run.out("changes.csv"), content)


def test_runs_trained_otherwise_or_stale_are_left_out(tmp_path) -> None:
    """The training signature (everything but method and seed) must match; settings that do
    not change what a run learns may differ; a transfer run whose transfer/ was redone since
    is stale."""
    _run(tmp_path, "train", 0, 0.80, 0.2)
    _run(tmp_path, "retrain/none/seed1", 1, 0.80, 0.2, sets=("train.lr=0.01",))
    _run(tmp_path, "retrain/none/seed2", 2, 0.80, 0.2, sets=("train.batch_size=4",))
    _run(tmp_path, "retrain/flip/seed1", 1, 0.80, 0.2, sets=("train.class_weights=true",))
    _run(tmp_path, "retrain/flip/seed2", 2, 0.80, 0.2, sets=("model.aspp_channels=8",))
    _run(tmp_path, "retrain/rotate/seed1", 1, 0.80, 0.2,
         sets=("train.device=cpu", "train.keep_every=2", "train.aug=rotate",
               "train.late_from=2"))
    _transfer(tmp_path, "old")
    _run(tmp_path, "retrain/transfer/seed1", 1, 0.80, 0.2, upstream=("transfer",))
    _run(tmp_path, "retrain/transfer/seed2", 2, 0.80, 0.2, upstream=("transfer",))
    chosen = comparison.select_runs(comparison.collect_runs(tmp_path))
    assert [r.name for r in chosen.runs] == ["train", "retrain/rotate/seed1",
                                             "retrain/transfer/seed1", "retrain/transfer/seed2"]
    why = dict(line.split(": ", 1) for line in chosen.left_out)
    assert "training.lr 0.001 -> 0.01" in why["retrain/none/seed1"]
    assert "training.batch_size 8 -> 4" in why["retrain/none/seed2"]
    assert "training.class_weights False -> True" in why["retrain/flip/seed1"]
    assert "training.model" in why["retrain/flip/seed2"]
    _transfer(tmp_path, "redone")
    chosen = comparison.select_runs(comparison.collect_runs(tmp_path))
    why = dict(line.split(": ", 1) for line in chosen.left_out)
    assert why["retrain/transfer/seed1"].startswith("stale — transfer/ was redone")
    assert "retrain/transfer/seed2" in why and len(chosen.runs) == 2


def test_table_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"method": "baseline", "split": "val", "metric": "pixel_acc", "mean": 0.85,
             "std": 0.05, "n": 2},
            {"method": "flip", "split": "tracked", "metric": "target_density", "mean": 1 / 3,
             "std": 0.0, "n": 1}]
    (tmp_path / "report").mkdir()
    files.write_csv(tmp_path / "report" / report.TABLE_CSV, report.TABLE_COLUMNS, rows)
    assert report.read_table(tmp_path) == rows


def test_claims_json_round_trip(tmp_path: Path) -> None:
    claims = [{"claim": "C1", "statement": "s", "measured": "m", "verdict": "holds",
               "numbers": {"ratio": 1.5}}]
    (tmp_path / "report").mkdir()
    files.write_json(tmp_path / "report" / report.CLAIMS_JSON, claims)
    assert report.read_claims(tmp_path) == claims
    (tmp_path / "report" / report.CLAIMS_JSON).write_text("[")
    with pytest.raises(FalseCliError, match="report --force"):
        report.read_claims(tmp_path)


def test_fig5_maps_average_every_run_and_never_the_run_that_chose_them(tmp_path) -> None:
    """Each method's Fig. 5 map of a section is the mean of its runs' forgetting maps, without
    train/ (whose ranking chose the sections) and without every method's run with train/'s
    seed (same initial weights and batch order)."""
    rng = np.random.default_rng(7)
    shapes = [("inline_0000", "inline", 0, (6, 5)), ("crossline_0002", "crossline", 2, (6, 4))]
    sections = independent.section_entries(shapes)
    pixels = sum(h * w for *_, (h, w) in shapes)
    labels = rng.integers(0, 2, pixels).astype(np.uint8)
    names = ["train", "retrain/none/seed1", "retrain/none/seed2", "retrain/flip/seed0",
             "retrain/flip/seed1", "retrain/flip/seed2"]
    for name in names:
        seed = 0 if name == "train" else int(name[-1])
        _run(tmp_path, name, seed, 0.8, 0.3)
        preds = rng.integers(0, 2, (3, pixels)).astype(np.uint8)
        independent.write_from_predictions(tmp_path / name / "tracking", sections, labels,
                                           preds, ["a", "scruff"])
    found = comparison.collect_runs(tmp_path)
    chosen = comparison.select_runs(found)
    assert len(chosen.runs) == len(names) and chosen.window == 3
    by_method = chosen.by_method()
    assert list(by_method) == ["baseline", "flip"]
    shown = ["crossline_0002"]
    measured = comparison.measure(by_method, ["a", "scruff"], 1, chosen.window,
                                  config.resolve()["report"], shown, chooser=found[0])
    assert measured.chooser == 0 and found[0].name == "train"
    maps = {r: independent.section_maps(tmp_path / r / "tracking", 3)["forgetting"][shown[0]]
            for r in names}
    drawn = {"baseline": names[1:3], "flip": names[4:]}
    assert measured.heat_runs == drawn
    for method, runs in drawn.items():
        assert list(measured.heat[method]) == shown
        want = np.mean([maps[r] for r in runs], axis=0)
        assert np.allclose(measured.heat[method][shown[0]], want), method
    with_train = np.mean([maps[r] for r in names[:3]], axis=0)
    assert not np.allclose(measured.heat["baseline"][shown[0]], with_train)  # the case can fail
    with_seed0 = np.mean([maps[r] for r in names[3:]], axis=0)
    assert not np.allclose(measured.heat["flip"][shown[0]], with_seed0)
    # train/ left out of the comparison (say, another length) still chose the sections
    others = {"baseline": by_method["baseline"][1:], "flip": by_method["flip"]}
    again = comparison.measure(others, ["a", "scruff"], 1, chosen.window,
                               config.resolve()["report"], shown, chooser=found[0])
    assert again.heat_runs == drawn


def test_report_page_wraps_prose_and_keeps_numbers_on_one_line() -> None:
    """The claims table's long 'measured' text wraps in the page (its verdict stays on the
    screen); numbers stay right-aligned."""
    assert cell_class("0.683 ± 0.075") == cell_class("-0.8 [-14.0, +12.5]") == ""
    assert cell_class("–") == ""
    assert cell_class("holds") == " class='text'"
    assert cell_class("events per pixel within 2 px of a label boundary / in class "
                      "interiors") == " class='text long'"


def test_a_difference_breaks_before_its_interval_and_note_never_inside() -> None:
    """Table 4's cells may wrap onto three lines (value, interval, note) in a narrow window,
    each piece kept whole; other cells are one piece."""
    assert table_cell("+0.014 [-0.210, +0.238] (paired, n=2)") == (
        "<td class='parts'><span>+0.014</span> <span>[-0.210, +0.238]</span> "
        "<span>(paired, n=2)</span></td>")
    assert table_cell("0.683 ± 0.075") == "<td>0.683 ± 0.075</td>"
    assert table_cell("holds (n=2)") == "<td class='text'>holds (n=2)</td>"
    assert table_cell("a < b") == "<td class='text'>a &lt; b</td>"
