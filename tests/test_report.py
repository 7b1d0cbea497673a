"""The report on hand-made runs: which runs it compares, its means, spreads and intervals, its
forgetting statistics against an independent computation, and its verdicts on the claims."""

import copy
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import independent
from falsecli.core import config, files
from falsecli.core.errors import FalseCliError
from falsecli.core.swap import stage_run
from falsecli.method import claims as cl
from falsecli.method import statistics
from falsecli.stages import report

DATA = {"classes": ["a", "scruff"], "ignore_index": 255, "val_every": 5,
        "holdout": "crossing", "volumes": {"train": {"shape": [8, 8, 8], "seismic": "s0",
                                                     "labels": "l0"}}}


def _run(tmp: Path, name: str, seed: int, val_acc: float, scruff: float | None,
         epochs: int = 3, data: dict | None = None, fingerprint: bool = True) -> None:
    cfg = config.resolve(sets=[f"train.seed={seed}", f"train.epochs={epochs}",
                               "data.classes=[a, scruff]"])
    with stage_run(tmp, name, cfg, seed=seed) as run:
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
    chosen = report.select_runs(report.collect_runs(tmp_path))
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
    chosen = report.select_runs(report.collect_runs(tmp_path))
    assert chosen.window == 2
    assert [r.name for r in chosen.runs] == ["retrain/none/seed0", "retrain/none/seed1",
                                             "retrain/flip/seed1"]
    why = dict(line.split(": ", 1) for line in chosen.left_out)
    assert set(why) == {"train", "retrain/flip/seed0", "retrain/rotate/seed0"}
    assert why["train"].startswith("3 epochs, the compared runs 2")
    assert "data.volumes.train.labels l0 -> l5" in why["retrain/flip/seed0"]
    assert "no fingerprint" in why["retrain/rotate/seed0"]


def test_table_csv_round_trip(tmp_path: Path) -> None:
    rows = [{"method": "baseline", "split": "val", "metric": "pixel_acc", "mean": 0.85,
             "std": 0.05, "n": 2},
            {"method": "flip", "split": "tracked", "metric": "target_density", "mean": 1 / 3,
             "std": 0.0, "n": 1}]
    (tmp_path / "report").mkdir()
    files.write_csv(tmp_path / "report" / report.TABLE_CSV, report.TABLE_COLUMNS, rows)
    assert report.read_table(tmp_path) == rows


def test_regions_are_8_connected_and_filtered() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal region of 3
    mask[5, 3:6] = True  # a second region of 3
    mask[3, 5] = True  # a single pixel
    assert sorted(statistics.regions(mask, 2)) == [3, 3]
    assert statistics.regions(mask, 4) == []
    assert statistics.regions(np.zeros((3, 3), dtype=bool), 1) == []


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences() -> None:
    a, b = {0: 3.0, 1: 5.0, 2: 7.0}, {0: 2.0, 1: 3.0, 2: 4.0}  # differences 1, 2, 3
    d = statistics.difference(a, b)
    half = sps.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # sd of (1, 2, 3) is 1
    assert d.paired and d.n == 3
    assert (d.mean, d.low, d.high) == pytest.approx((2.0, 2 - half, 2 + half))
    assert d.sign() == 0  # t(2) is wide: 2 ± 2.48 includes 0
    assert statistics.difference({0: 2.1, 1: 2.0, 2: 2.2}, {0: 0, 1: 0, 2: 0}).sign() == 1


def test_unmatched_seeds_give_welch_interval() -> None:
    a, b = {0: 1.0, 1: 2.0, 2: 4.0}, {5: 0.5, 6: 0.7}
    d = statistics.difference(a, b)
    ci = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False).confidence_interval()
    assert not d.paired
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    one = statistics.difference({0: 1.0}, {0: 0.5})
    assert one.mean == 0.5 and np.isnan(one.low) and one.sign() == 0


def test_forgetting_statistics_match_an_independent_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shapes = [("inline_0000", "inline", 0, (12, 9)), ("crossline_0005", "crossline", 5, (12, 7))]
    sections = independent.section_entries(shapes)
    pixels = sum(h * w for *_, (h, w) in shapes)
    labels = np.repeat(np.arange(3), -(-pixels // 3))[:pixels].astype(np.uint8)
    labels[rng.random(pixels) < 0.1] = 255
    # a block of class 1 that flips every epoch, so regions exist
    preds = rng.integers(0, 3, (7, pixels)).astype(np.uint8)
    hot = np.flatnonzero(labels == 1)[:30]
    preds[::2, hot] = 1
    folder = tmp_path / "run"
    independent.write_from_predictions(folder / "tracking", sections, labels, preds,
                                       ["a", "b", "c"])
    got, _ = statistics.forgetting_stats(folder, 1, 6, region_events=2, min_region=3)
    want = independent.report_stats(folder / "tracking", 1, 6, 2, 3)
    assert want["high_density_regions"] >= 1  # the case exercises regions
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_fig5_maps_average_every_run_and_never_the_run_that_chose_them(tmp_path) -> None:
    """Each method's Fig. 5 map of a section is the mean of its runs' forgetting maps; the
    baseline's leaves out train/ (whose ranking chose the sections), the others use all seeds."""
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
    chosen = report.select_runs(report.collect_runs(tmp_path))
    assert len(chosen.runs) == len(names) and chosen.window == 3
    by_method = {m: [r for r in chosen.runs if r.method == m] for m in ("baseline", "flip")}
    shown = ["crossline_0002"]
    measured = report._measure(by_method, ["a", "scruff"], 1, chosen.window,
                               config.resolve()["report"], shown)
    maps = {r: independent.section_maps(tmp_path / r / "tracking", 3)["forgetting"][shown[0]]
            for r in names}
    drawn = {"baseline": names[1:3], "flip": names[3:]}
    assert measured.heat_runs == drawn
    for method, runs in drawn.items():
        assert list(measured.heat[method]) == shown
        want = np.mean([maps[r] for r in runs], axis=0)
        assert np.allclose(measured.heat[method][shown[0]], want), method
    with_train = np.mean([maps[r] for r in names[:3]], axis=0)
    assert not np.allclose(measured.heat["baseline"][shown[0]], with_train)  # the case can fail


def _results(values: dict[int, float], key: str) -> list[cl.Result]:
    return [cl.Result(seed, {key: v}) for seed, v in values.items()]


def test_claim_c3_needs_fewer_regions_than_every_control() -> None:
    key = "tracked/high_density_regions"
    area = "tracked/high_density_area"

    def runs(transfer: list[float]) -> dict[str, list[cl.Result]]:
        out = {}
        for method, counts in (("baseline", [8, 9, 10, 9]), ("flip", [7, 8, 9, 8]),
                               ("transfer", transfer)):
            out[method] = [cl.Result(s, {key: c, area: 10 * c}) for s, c in enumerate(counts)]
        return out

    assert cl.c3_regions(runs([1, 2, 1, 2])).verdict == cl.HOLDS
    assert cl.c3_regions(runs([12, 13, 14, 13])).verdict == cl.FAILS
    assert cl.c3_regions(runs([1, 20, 2, 15])).verdict == "inconclusive at 4 seeds"
    assert cl.c3_regions({"baseline": runs([1])["baseline"]}).verdict == "not measured"


def test_claim_c2_takes_the_two_smallest_classes() -> None:
    classes = ["big", "mid", "thin", "thinner"]
    pixels = {"big": 1000, "mid": 500, "thin": 30, "thinner": 10}
    dens = [{"big": 0.1, "mid": 0.2, "thin": 0.9, "thinner": 0.8 + s / 10} for s in range(3)]
    base = [cl.Result(s, {f"tracked/density/{c}": v for c, v in d.items()})
            for s, d in enumerate(dens)]
    claim = cl.c2_thin_classes(base, classes, pixels)
    assert claim.numbers["thin"] == ["thinner", "thin"] and claim.verdict == cl.HOLDS
    assert "never classified right" not in claim.measured  # nothing measured, nothing said
    for r, share in zip(base, (0.9, 0.95, 1.0)):
        r.values["tracked/never_learned/thinner"] = share
    said = cl.c2_thin_classes(base, classes, pixels)
    assert said.numbers["never_learned"] == {"thinner": pytest.approx(0.95)}
    assert "never forgotten: thinner 95% of its pixels" in said.measured
    for r in base:
        r.values["tracked/density/mid"] = 2.0
    assert cl.c2_thin_classes(base, classes, pixels).verdict == cl.FAILS


def test_claim_c4_fails_when_another_class_drops_beyond_the_spread() -> None:
    classes = ["a", "scruff"]

    def runs(a_transfer: float) -> dict[str, list[cl.Result]]:
        return {"baseline": [cl.Result(s, {"val/class_acc/scruff": 0.3 + s / 100,
                                           "val/class_acc/a": 0.9 + s / 1000})
                             for s in range(4)],
                "transfer": [cl.Result(s, {"val/class_acc/scruff": 0.5 + s / 100 + (s % 2) / 50,
                                           "val/class_acc/a": a_transfer + s / 1000})
                             for s in range(4)]}

    assert cl.c4_accuracy(runs(0.9005), classes, "scruff", "val").verdict == cl.HOLDS
    dropped = cl.c4_accuracy(runs(0.5), classes, "scruff", "val")
    assert dropped.verdict == cl.FAILS and "spread (transfer − baseline): a -0.400" in dropped.measured
    # a class that rises beyond the spread is named with its sign, and is no failure
    rose = cl.c4_accuracy(runs(0.99), classes, "scruff", "val")
    assert rose.verdict.startswith("inconclusive") and "a +0.090" in rose.measured


def test_claim_c5_needs_a_local_change() -> None:
    local = cl.c5_locality([5.0, 6.0, 5.5], [0.02, 0.03, 0.025], 0.1)
    assert local.verdict == cl.HOLDS
    whole = cl.c5_locality([1.2, 1.3, 1.25], [0.9, 0.95, 0.92], 0.1)
    assert whole.verdict == cl.FAILS


def test_report_page_wraps_prose_and_keeps_numbers_on_one_line() -> None:
    """The claims table's long 'measured' text wraps in the page (its verdict stays on the
    screen); numbers stay right-aligned."""
    assert report._cell_class("0.683 ± 0.075") == report._cell_class("-0.8 [-14.0, +12.5]") == ""
    assert report._cell_class("–") == ""
    assert report._cell_class("holds") == " class='text'"
    assert report._cell_class("events per pixel within 2 px of a label boundary / in class "
                              "interiors") == " class='text long'"
