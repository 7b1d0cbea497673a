"""Data maps and likely label issues: the definitions by hand, then `heatmap` and `export` on a
hand-made run with planted label errors, checked against tests/independent.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, sets_args

import independent
from falsecli.core import config
from falsecli.core.swap import stage_run
from falsecli.data import segy
from falsecli.method.datamaps import (UNSTABLE, ZONES, DataMap, issue_score, load_datamap,
                                      zones)
from falsecli.method.history import load_tracking
from falsecli.stages.datamaps import data_maps_summary, load_label_issues

CLASSES = config.load_defaults()["data"]["classes"]
E, LATE_FROM = 6, 4
#: three val sections of the TINY volume [16, 24, 32]
TRACKED = [("inline_0000", "inline", 0, (32, 24)), ("inline_0005", "inline", 5, (32, 24)),
           ("crossline_0010", "crossline", 10, (32, 16))]
#: planted errors: (section k, rows, cols, true class, given class)
PLANTED = [(1, slice(10, 14), slice(3, 9), 1, 0),  # 24 pixels, the larger
           (2, slice(20, 22), slice(5, 10), 2, 3)]  # 10 pixels
#: decoys on section 0: a stable wrong class with a small margin, and one that changes class
SMALL_MARGIN = (slice(2, 4), slice(2, 6))
UNSTABLE_BLOB = (slice(20, 23), slice(10, 14))
FLAGS = [*sets_args(TINY), "--set", "heatmap.figures=0", "--set",
         "heatmap.sections=[inline_0005]"]


def test_issue_score_and_zones_by_hand() -> None:
    """Score = late min margin, clipped at 0, only where labelled and stable; zones by the
    documented thresholds (variability first)."""
    dm = DataMap(6, 4, 3, *(np.zeros(5, np.float32) for _ in range(4)),
                 late_margin=np.array([0.7, -0.2, 0.9, 0.6, 1.0], np.float32),
                 late_class=np.array([2, 2, UNSTABLE, 1, 0], np.uint8))
    labelled = np.array([True, True, True, True, False])
    assert issue_score(dm, labelled).tolist() == pytest.approx([0.7, 0, 0, 0.6, 0])
    empty = DataMap(**{**dm.__dict__, "late_epochs": 0})
    assert not issue_score(empty, labelled).any()
    conf = np.array([0.9, 0.2, 0.9, 0.5, 0.49])
    var = np.array([0.1, 0.1, 0.2, 0.0, 0.19])
    assert [ZONES[z] for z in zones(conf, var)] == ["easy", "hard", "ambiguous", "easy", "hard"]


def _history(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with the planted errors, and a simulated network's per-epoch (E, 2, P)
    probabilities of label and top wrong class and predictions: right with p(label) in
    [0.55, 0.95] on clean pixels, sure of the true class on planted ones."""
    depth = 32
    true = []
    for _, _, _, (d, w) in TRACKED:
        true.append(np.repeat((np.arange(d) * 6 // depth)[:, None], w, 1).astype(np.uint8))
    given = [t.copy() for t in true]
    for k, rows, cols, t_cls, g_cls in PLANTED:
        true[k][rows, cols], given[k][rows, cols] = t_cls, g_cls
    given[0][0, :3] = 255
    P = sum(t.size for t in true)
    p_label = rng.uniform(0.55, 0.95, (E, P))
    p_wrong = (1 - p_label) * rng.uniform(0.3, 0.9, (E, P))
    preds = np.repeat(np.concatenate([t.ravel() for t in true])[None], E, 0)
    flat = np.concatenate([g.ravel() for g in given])
    wrong = flat != preds[0]
    p_label[:, wrong], p_wrong[:, wrong] = 0.08, rng.uniform(0.7, 0.9, (E, int(wrong.sum())))
    small = np.zeros((32, 24), bool)
    small[SMALL_MARGIN] = True  # a stable other class, 0.3 ahead: under issue_margin 0.5
    p_label[:, :small.size][:, small.ravel()], p_wrong[:, :small.size][:, small.ravel()] = 0.3, 0.6
    preds[:, :small.size][:, small.ravel()] = 1
    flip = np.zeros((32, 24), bool)
    flip[UNSTABLE_BLOB] = True  # far ahead, but the other class changes in the late window
    idx = np.flatnonzero(flip.ravel())
    p_label[:, idx], p_wrong[:, idx] = 0.05, 0.9
    preds[:, idx] = np.where(np.arange(E)[:, None] % 2, 0, 4)
    return flat, np.stack([p_label, p_wrong], 1).astype(np.float32), preds.astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """A complete hand-made train run with planted errors and `heatmap` over it."""
    from falsecli.stages.heatmap import heatmap

    work = tmp_path_factory.mktemp("datamaps")
    labels, probs, preds = _history(np.random.default_rng(0))
    cfg = config.resolve(sets=TINY)
    with stage_run(work, "train", cfg, seed=0) as out:
        folder = out.path / "tracking"
        independent.write_from_predictions(folder, independent.section_entries(TRACKED),
                                           labels, preds, CLASSES)
        accumulators = independent.datamap(probs.astype(np.float64), preds, LATE_FROM)
        np.savez(folder / "datamap.npz", **accumulators)
        for path in sorted(folder.iterdir()):
            out.out(f"tracking/{path.name}")
    heatmap(config.resolve(sets=[*TINY, "heatmap.figures=0", "heatmap.sections=[inline_0005]"]),
            work)
    return work, accumulators, labels


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_planted_label_errors_are_the_ranked_regions(planted) -> None:
    """The two planted patches, and nothing else, are the likely label issues, larger first,
    with their extents, classes and mean score; the decoys stay out. Fails when detection is
    off (no score, no mask or no regions)."""
    work, accumulators, labels = planted
    rows = _rows(work / "heatmap" / "label_issues.csv")
    tracking = load_tracking(work / "train")
    dm = load_datamap(work / "train", tracking)
    score = np.where(labels != 255, np.clip(accumulators["late_margin"], 0, 1), 0)
    score[accumulators["late_class"] == 255] = 0
    expected = []
    for k, (name, axis, index, shape) in enumerate(TRACKED):
        s = tracking.section(name)
        img = {key: np.asarray(a)[s.pixels].reshape(shape)
               for key, a in (("score", score), ("labels", labels), ("pred", dm.late_class))}
        for r in independent.regions(img["score"] >= 0.5, img["labels"], img["pred"],
                                     img["score"]):
            lo, hi = r["cols"]
            span = f"{lo}-{hi}" if hi > lo else str(lo)
            expected.append({"section": name, "inline": str(index) if axis == "inline" else span,
                             "crossline": span if axis == "inline" else str(index),
                             "top": str(r["top"]), "bottom": str(r["bottom"]),
                             "given_class": CLASSES[r["given"]],
                             "predicted_class": CLASSES[r["predicted"]],
                             "pixels": str(r["pixels"]), "score": r["score"]})
    expected.sort(key=lambda e: -int(e["pixels"]) * e["score"])
    assert [{**r, "score": None} for r in rows] == [{**e, "score": None} for e in expected]
    assert [float(r["score"]) for r in rows] == pytest.approx([e["score"] for e in expected],
                                                              abs=1e-4)
    assert [(r["section"], r["inline"], r["crossline"], r["top"], r["bottom"],
             r["given_class"], r["predicted_class"], r["pixels"]) for r in rows] == [
        ("inline_0005", "5", "3-8", "10", "13", "upper_ns", "middle_ns", "24"),
        ("crossline_0010", "5-9", "10", "20", "21", "rijnland_chalk",
         "lower_ns", "10")]
    mask = np.load(work / "heatmap" / "issue_mask.npz")
    assert int(sum(m.sum() for m in mask.values())) == 34
    # what the report reads: the typed rows and the window
    typed = load_label_issues(work)
    assert [(r["section"], r["top"], r["pixels"]) for r in typed] == [
        ("inline_0005", 10, 24), ("crossline_0010", 20, 10)]
    assert [r["score"] for r in typed] == [float(r["score"]) for r in rows]
    classes, window, n_regions = data_maps_summary(work)
    assert (window, n_regions) == (f"epochs {LATE_FROM}-{E}", 2) and classes


def test_maps_and_class_summary_match_plain_loops(planted) -> None:
    work, accumulators, labels = planted
    tracking = load_tracking(work / "train")
    conf = tracking.flatten(dict(np.load(work / "heatmap" / "confidence.npz")), work)
    var = tracking.flatten(dict(np.load(work / "heatmap" / "variability.npz")), work)
    np.testing.assert_allclose(conf, accumulators["label_mean"], rtol=1e-6)
    np.testing.assert_allclose(var, np.sqrt(accumulators["label_var"]), rtol=1e-5, atol=1e-7)
    mask = tracking.flatten(dict(np.load(work / "heatmap" / "issue_mask.npz")), work)
    rows = _rows(work / "heatmap" / "datamap_classes.csv")
    for row in rows:
        k = CLASSES.index(row["class"])
        mine = [i for i in range(labels.size) if labels[i] == k]
        assert int(row["pixels"]) == len(mine) > 0
        assert float(row["confidence"]) == pytest.approx(sum(conf[i] for i in mine) / len(mine))
        assert float(row["variability"]) == pytest.approx(sum(var[i] for i in mine) / len(mine))
        ambiguous = sum(var[i] >= 0.2 for i in mine) / len(mine)
        easy = sum(var[i] < 0.2 and conf[i] >= 0.5 for i in mine) / len(mine)
        assert (float(row["ambiguous"]), float(row["easy"])) == pytest.approx((ambiguous, easy))
        assert float(row["hard"]) == pytest.approx(1 - ambiguous - easy)
        assert int(row["issue_pixels"]) == sum(bool(mask[i]) for i in mine)
    assert {r["class"] for r in rows} == {CLASSES[k] for k in set(labels.tolist()) - {255}}
    assert (work / "heatmap" / "datamaps" / "inline_0005.png").is_file()
    assert (work / "heatmap" / "cartography.png").is_file()


def test_export_writes_the_issue_mask_beside_the_heat_maps(planted, cli, tmp_path) -> None:
    work, _, _ = planted
    result = cli("export", "-w", work, *FLAGS, "--out", tmp_path / "exp")
    assert result.exit_code == 0, result.output
    cube = segy.read(tmp_path / "exp" / "train" / "label_issues.sgy")
    inline5 = cube[5].T  # [depth, crossline]
    want = np.zeros_like(inline5)
    want[10:14, 3:9] = 1
    want[20:22, 10] = 1  # where crossline 10 crosses: the larger of the two sections
    assert np.array_equal(inline5, want)
    crossline10 = cube[:, 10].T  # [depth, inline]
    assert crossline10[20:22, 5:10].all() and crossline10.sum() == 10
    assert cube.sum() == 34
