"""Active learning end to end: partially labelled training, pool tracking, `falsecli query`
and `falsecli al` through the real CLI on a tiny synthetic volume (2 epochs a round)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, sets_args, shared
from falsecli.cli import app
from falsecli.core import config
from falsecli.core.errors import FalseCliError

ROUND0 = "al/switch/seed0/round0"
ROUND1 = "al/switch/seed0/round1"


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _al(work: Path, *extra: object):
    return _invoke("al", "-w", work, *sets_args(TINY), "--initial", 4, "--budget", 2,
                   "--seeds", 0, "--epochs", 2, "--json", "--quiet", *extra)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    work = shared(tmp_path_factory.mktemp("al"))
    result = _al(work, "--rounds", 1, "--strategies", "switch,random")
    assert result.exit_code == 0, result.output
    return work


@pytest.fixture
def own(study: Path, tmp_path: Path) -> Path:
    """A copy of the study for a test that adds to it (hard links: falsecli replaces files,
    never writes into them; conftest checks that the study stayed as it was)."""
    work = tmp_path / "al"
    shutil.copytree(study, work, copy_function=os.link)
    return work


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def _manifest(work: Path, run: str) -> dict:
    return json.loads((work / run / "manifest.json").read_text())


def test_curves_hold_every_round_with_its_eval(study: Path) -> None:
    with open(study / "al" / "curves.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["strategy"], r["round"], r["labelled"]) for r in rows] == [
        ("random", "0", "4"), ("random", "1", "6"), ("switch", "0", "4"), ("switch", "1", "6")]
    for r in rows:
        run = study / "al" / r["strategy"] / "seed0" / f"round{r['round']}"
        ev = json.loads((run / "eval.json").read_text())
        assert float(r["val_miou"]) == pytest.approx(ev["val"]["miou"])
        assert float(r["test_mean_class_acc"]) == pytest.approx(ev["test1"]["mean_class_acc"])
        assert float(r["val_target_acc"]) == pytest.approx(ev["val"]["class_acc"]["scruff"])
    # round 0 is the same run for every strategy (same sections, same seed)
    assert rows[0]["val_miou"] == rows[2]["val_miou"]


def test_each_round_trains_on_the_last_rounds_labels_and_its_query(study: Path) -> None:
    first = _manifest(study, ROUND0)["config"]["train"]
    second = _manifest(study, ROUND1)["config"]["train"]
    chosen = json.loads((study / ROUND0 / "query" / "chosen.json").read_text())["chosen"]
    names = [c["section"] for c in chosen]
    assert len(names) == 2 and not set(names) & set(first["labelled"])
    assert second["labelled"] == sorted(first["labelled"] + names)
    pool = [s["name"] for s in json.loads((study / ROUND1 / "tracking" /
                                           "sections.json").read_text())["sections"]
            if s["split"] == "pool"]
    assert not set(pool) & set(second["labelled"])
    # 12 + 19 training sections of the 16 x 24 volume, 6 labelled
    assert len(pool) == 31 - 6 and "pool" in second["track"]


def test_pool_pixels_are_unlabelled_and_their_confidence_is_the_models(study: Path) -> None:
    import torch

    from falsecli.data.dataset import load_dataset
    from falsecli.method.history import load_confidence, load_tracking
    from falsecli.method.model import load_model

    run = study / ROUND0
    tracking = load_tracking(run)
    pool = [s for s in tracking.sections if s.split == "pool"]
    labels = np.asarray(tracking.labels)
    assert all((labels[s.pixels] == 255).all() for s in pool)
    assert tracking.switch[1:].any()  # the pool's predictions changed between epochs
    values = load_confidence(run, [s.name for s in pool])
    ds = load_dataset(_manifest(study, ROUND0)["config"])
    section = {s.name: s for s in ds.pool()}[pool[3].name]
    model, _ = load_model(run / "model.pt")
    with torch.no_grad():
        p = model(torch.from_numpy(ds.image(section))[None, None]).softmax(1)[0].double()
    top = p.topk(2, dim=0).values
    entropy = -(p * p.clamp_min(1e-12).log()).sum(0) / np.log(p.shape[0])
    assert values[3] == pytest.approx([float(entropy.mean()), float(1 - top[0].mean()),
                                       float((top[0] - top[1]).mean())], abs=1e-4)


def test_naive_top_n_collapses_onto_neighbours_and_the_gap_rule_spreads_it(study: Path
                                                                           ) -> None:
    """Neighbouring sections of the synthetic volume are near-duplicates with near-equal
    switch scores: the naive top 4 holds two sections of one axis fewer than 3 apart."""
    from falsecli.method.history import load_tracking
    from falsecli.method.query import choose
    from falsecli.stages.query import pool_stats

    run = study / ROUND0
    pool = pool_stats(run, load_tracking(run), False)
    labelled = [(n.split("_")[0], int(n.split("_")[1]))
                for n in _manifest(study, ROUND0)["config"]["train"]["labelled"]]

    def closest(chosen: list[int]) -> int:
        picks = [(pool.axes[i], int(pool.indices[i])) for i in chosen]
        return min(abs(a[1] - b[1]) for k, a in enumerate(picks) for b in picks[k + 1:]
                   + labelled if a[0] == b[0])

    naive = choose(pool, "switch", 4, min_gap=1, labelled=labelled)
    assert closest(naive.chosen) < 3
    spread = choose(pool, "switch", 4, min_gap=3, labelled=labelled)
    assert closest(spread.chosen) >= 3 and spread.gaps == [3] * 4


def test_query_and_heatmap_work_on_a_round(own: Path) -> None:
    run = "al/random/seed0/round1"  # the last round: al has not queried it
    result = _invoke("query", "-w", own, "--run", run, "--strategy", "entropy",
                     "--budget", 3, "--quiet")
    assert result.exit_code == 0, result.output
    names = result.stdout.split()
    folder = own / run / "query"
    with open(folder / "pool.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_name = {r["section"]: r for r in rows}
    assert [by_name[n]["chosen"] for n in names] == ["1", "2", "3"]
    for r in rows:  # synthetic data: the survey numbers are the indices, the other blank
        assert (r["inline"], r["crossline"]) == ((r["index"], "") if r["axis"] == "inline"
                                                 else ("", r["index"]))
    assert all(float(r["score"]) == float(r["entropy"]) for r in rows)
    chosen = [float(by_name[n]["entropy"]) for n in names]
    assert chosen == sorted(chosen, reverse=True)  # taken in score order
    assert (folder / "figures" / "chosen.png").stat().st_size > 1000
    again = _invoke("query", "-w", own, "--run", run, "--strategy", "gauss",
                    "--budget", 2, "--json", "--force", "--quiet")
    record = json.loads(again.stdout)["record"]
    assert record["strategy"] == "gauss" and len(record["chosen"]) == 2
    heat = _invoke("heatmap", "-w", own, "--run", ROUND1, "--quiet")
    assert heat.exit_code == 0, heat.output
    assert (own / ROUND1 / "heatmap" / "switch.npz").is_file()


def test_al_resumes_at_the_next_round_and_refuses_other_settings(own: Path) -> None:
    result = _al(own, "--rounds", 2, "--strategies", "switch")
    assert result.exit_code == 0, result.output
    runs = {r["run"]: r["status"] for r in json.loads(result.stdout)["runs"]}
    assert runs == {ROUND0: "skipped", ROUND1: "skipped", "al/switch/seed0/round2": "done"}
    assert len(_manifest(own, "al/switch/seed0/round2")["config"]["train"]["labelled"]) == 8
    _one_line_error(_al(own, "--rounds", 1, "--strategies", "switch", "--epochs", 3),
                    "was made with other settings (epochs: 2 there, 3 now)")


def test_bad_input_gets_one_line(study: Path, tmp_path: Path) -> None:
    _one_line_error(_invoke("query", "-w", study, "--run", ROUND0, "--budget", 1000,
                            "--force", "--quiet"), "budget 1000 is larger than the pool")
    _one_line_error(_invoke("query", "-w", study, "--run", ROUND0, "--strategy", "entropyy"),
                    "config key 'query.strategy' is 'entropyy'")
    _one_line_error(_al(study, "--strategies", "switch,gauß"),
                    "config key 'al.strategies[1]' is 'gauß'")
    _one_line_error(_al(study, "--rounds", 20), "but the volume has only 31 training sections")
    # a fully labelled volume leaves no pool to query
    work = tmp_path / "full"
    trained = _invoke("train", "-w", work, *sets_args(TINY), "--epochs", 1,
                      "--set", "train.track=[val,pool]", "--quiet")
    assert trained.exit_code == 0, trained.output
    _one_line_error(_invoke("query", "-w", work, "--quiet"), "tracked no pool section")


def test_unlabelled_sections_form_the_pool_and_train_nothing(tmp_path: Path) -> None:
    from make_data import npy_pair, banded_labels

    from falsecli.data.dataset import load_dataset
    from falsecli.method.training import pool_arrays

    shape = (12, 11, 16)
    labels = banded_labels(shape)
    labels[3] = 255  # inline 3 unlabelled: a partially interpreted survey
    seismic, label_path = npy_pair(tmp_path, shape=shape, labels=labels)
    cfg = config.resolve(sets=["data.source=files", f"data.seismic={seismic}",
                               f"data.labels={label_path}"])
    ds = load_dataset(cfg)
    assert [s.name for s in ds.pool()] == ["inline_0003"]
    assert (ds.label(ds.pool()[0]) == 255).all()
    trained = sum(len(img) for img, _ in pool_arrays(ds, None).values())
    assert trained == len(ds.sections("train")) - 1
    cfg["train"]["labelled"] = ["inline_0001", "crossline_0002", "crossline_0003"]
    ds = load_dataset(cfg)
    assert sum(len(img) for img, _ in pool_arrays(ds, None).values()) == 3
    assert "inline_0001" not in {s.name for s in ds.pool()}
    assert len(ds.tracked(["val", "pool"])) == len(ds.sections("val")) + len(ds.pool())
    cfg["train"]["labelled"] = ["inline_0005"]  # a validation section
    with pytest.raises(FalseCliError, match="'inline_0005', which is not a training section"):
        load_dataset(cfg).trainable()


def test_report_adds_the_learning_curves_and_their_areas(own: Path) -> None:
    from falsecli.method import curves
    from falsecli.stages.al import read_curves

    trained = _invoke("train", "-w", own, *sets_args(TINY), "--epochs", 1, "--quiet")
    assert trained.exit_code == 0, trained.output
    result = _invoke("report", "-w", own, "--quiet")
    assert result.exit_code == 0, result.output
    text = (own / "report" / "report.md").read_text()
    assert "Table 5 — active learning" in text
    assert (own / "report" / "figures" / "learning_curves.png").stat().st_size > 1000
    rows = [r for r in read_curves(own) if r["strategy"] == "random"]
    x = np.array([r["labelled"] for r in rows], float)
    y = np.array([r["test_miou"] for r in rows], float)
    # one seed, rounds 0-1 reached by every curve: the trapezoid over 4..6 / 2 = the mean
    assert curves.area(x[:2], y[:2]) == pytest.approx((y[0] + y[1]) / 2)
    line = next(l for l in text.splitlines() if l.startswith("| random |"))
    assert f"{(y[0] + y[1]) / 2:.3f}" in line


def test_strategies_are_compared_with_random_and_entropy_paired_by_seed() -> None:
    """Per seed, a strategy's area minus random's (and entropy's) with the same seed; the
    curve band is the sample std (ddof = 1) of the seeds."""
    from scipy import stats as sps

    from falsecli.method import curves

    values = {("random", 0): [0.1, 0.3], ("random", 1): [0.2, 0.2], ("random", 2): [0.1, 0.5],
              ("entropy", 0): [0.2, 0.4], ("entropy", 1): [0.2, 0.6],
              ("entropy", 2): [0.3, 0.5], ("forgetting", 1): [0.4, 0.6],
              ("forgetting", 2): [0.1, 0.3], ("forgetting", 5): [0.9, 0.9]}
    rows = [{"strategy": s, "seed": k, "round": r, "labelled": 4 + 2 * r, "val_miou": v}
            for (s, k), ys in values.items() for r, v in enumerate(ys)]
    got = curves.paired_areas(rows, "val_miou")
    # areas are the two rounds' means; forgetting shares seeds 1 and 2 with random
    d = [0.5 - 0.2, 0.2 - 0.3]
    half = sps.t.ppf(0.975, 1) * np.std(d, ddof=1) / np.sqrt(2)
    assert got["forgetting", "random"] == pytest.approx((np.mean(d), half, 2))
    e = [0.3 - 0.2, 0.4 - 0.2, 0.4 - 0.3]
    assert got["entropy", "random"][0] == pytest.approx(np.mean(e))
    assert got["random", "entropy"][0] == pytest.approx(-np.mean(e))
    assert ("random", "random") not in got
    header, body = curves.differences(rows)
    assert header[:2] == ["strategy − reference", "seeds"]
    assert ["forgetting − random", "2", f"{np.mean(d):+.3f} ± {half:.3f}"] in body
    x, mean, std = curves.band(rows, "val_miou")["random"]
    assert std == pytest.approx(np.std([[0.1, 0.3], [0.2, 0.2], [0.1, 0.5]], axis=0, ddof=1))
