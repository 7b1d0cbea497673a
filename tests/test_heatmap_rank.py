"""`falsecli heatmap` and `falsecli rank` through the real CLI on hand-made tracking folders,
checked against the plain reference in tests/independent.py."""

from __future__ import annotations

import csv
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, sets_args
from matplotlib.image import imread

import independent
from falsecli.core import config
from falsecli.core.errors import FalseCliError
from falsecli.core.swap import stage_run
from falsecli.data.geometry import MANIFEST_KEY, Geometry, record
from falsecli.present.figures import (MISSING, count_scale, heatmap_grid, label_cmap, label_colors,
                                     mask_ignored, save_figure, training_curves)
from falsecli.method.forgetting import event_maps
from falsecli.method.history import load_tracking
from falsecli.stages.heatmap import heatmap, load_heatmap
from falsecli.stages.rank import load_ranking, rank
from falsecli.stages.report import report

CLASSES = config.load_defaults()["data"]["classes"]
SCRUFF = CLASSES.index("scruff")
E = 5
#: the val sections of the TINY volume [16, 24, 32]: every 5th inline and crossline
TRACKED = ([(f"inline_{i:04d}", "inline", i, (32, 24)) for i in (0, 5, 10, 15)]
           + [(f"crossline_{j:04d}", "crossline", j, (32, 16)) for j in (0, 5, 10, 15, 20)])
FLAGS = [*sets_args(TINY), "--set", "heatmap.figures=0"]  # rank.min_pixels=5 in TINY
#: the survey numbers the hand-made run records: inlines 100.., crosslines 300, 302, ...
LINES = (list(range(100, 116)), list(range(300, 348, 2)))
GEOMETRY = Geometry(np.array(LINES[0]), np.array(LINES[1]), 4.0, 4.0, 32, "ms")


def _labels(k: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Layer-cake facies; section k has no scruff (k % 3 == 0), 3 scruff pixels (too few to
    rank with min_pixels 5) or two scruff rows; a few ignored pixels."""
    depth, width = shape
    rows = np.array([0] * 9 + [1] * 4 + [2] * 10 + [3] * 3 + [5] * 6)[:depth]
    lab = np.repeat(rows[:, None], width, axis=1).astype(np.uint8)
    if k % 3 == 1:
        lab[26, :3] = SCRUFF
    elif k % 3 == 2:
        lab[26:28] = SCRUFF
    lab[rng.random(shape) < 0.03] = 255
    return lab.ravel()


def make_run(workdir: Path, run: str = "train", seed: int = 0, force: bool = False) -> Path:
    """A complete training run whose tracking/ holds E epochs of noisy predictions."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([_labels(k, shape, rng) for k, (*_, shape) in enumerate(TRACKED)])
    p_right = rng.uniform(0.2, 0.95, labels.size)
    noise = rng.integers(0, len(CLASSES), (E, labels.size)).astype(np.uint8)
    right = rng.random((E, labels.size)) < p_right
    preds = np.where(right, np.minimum(labels, len(CLASSES) - 1), noise).astype(np.uint8)
    with stage_run(workdir, run, config.resolve(sets=TINY), force=force, seed=seed) as out:
        independent.write_from_predictions(out.path / "tracking",
                                           independent.section_entries(TRACKED), labels, preds,
                                           CLASSES)
        for path in sorted((out.path / "tracking").iterdir()):  # outputs, as train lists them
            out.out(f"tracking/{path.name}")
        out.extra[MANIFEST_KEY] = record({"train": GEOMETRY})
    return out.path / "tracking"


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return dict(npz.items())


def _check_maps(stage_dir: Path, folder: Path, epochs: int | None = None,
                never_learned: str = "zero") -> dict[str, dict[str, np.ndarray]]:
    expected = independent.section_maps(folder, epochs, never_learned)
    for key, dtype in (("forgetting", np.uint16), ("switch", np.uint16),
                       ("never_learned", np.bool_)):
        written = _npz(stage_dir / f"{key}.npz")
        assert list(written) == [name for name, *_ in TRACKED]
        for name, array in written.items():
            assert array.dtype == dtype and array.shape == expected[key][name].shape
            assert np.array_equal(array, expected[key][name]), (key, name)
    return expected


def test_heatmap_and_rank_match_the_reference(cli, tmp_path: Path) -> None:
    folder = make_run(tmp_path)
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    expected = _check_maps(tmp_path / "heatmap", folder)
    assert expected["forgetting"]["inline_0000"].sum() > 0  # a test that can fail
    assert summary["stage"] == "heatmap" and summary["run"] == "train" and summary["epochs"] == E
    total = sum(int(m.sum()) for m in expected["forgetting"].values())
    assert summary["totals"]["events"] == total
    assert all(Path(p).is_file() for p in summary["outputs"])
    manifest = json.loads((tmp_path / "heatmap" / "manifest.json").read_text())
    assert manifest["epochs"] == E and "train" in manifest["inputs"]

    labels = np.load(folder / "labels.npy")
    with open(tmp_path / "heatmap" / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["section"] for r in rows] == [name for name, *_ in TRACKED]
    for (name, *_), entry in zip(TRACKED, independent.section_entries(TRACKED)):
        row = next(r for r in rows if r["section"] == name)
        lab = labels[entry["offset"]: entry["offset"] + 32 * entry["shape"][1]]
        heat = expected["forgetting"][name].ravel()
        assert int(row["events"]) == heat.sum()
        assert int(row["switch_events"]) == expected["switch"][name].sum()
        assert int(row["never_learned"]) == expected["never_learned"][name].sum()
        assert int(row["pixels"]) == np.count_nonzero(lab != 255)
        n, ev = int(np.count_nonzero(lab == SCRUFF)), int(heat[lab == SCRUFF].sum())
        assert (int(row["scruff_pixels"]), int(row["scruff_events"])) == (n, ev)
        assert row["scruff_density"] == (repr(ev / n) if n else "")
        number = str(LINES[0 if entry["axis"] == "inline" else 1][entry["index"]])
        assert (row["inline"], row["crossline"]) == ((number, "") if entry["axis"] == "inline"
                                                     else ("", number))

    result = cli("rank", "-w", tmp_path, *FLAGS, "--class", "scruff")
    assert result.exit_code == 0, result.output
    ranking_csv = (tmp_path / "rank" / "ranking.csv").read_text()
    assert ranking_csv == independent.ranking_csv(folder, "scruff", min_pixels=5,
                                                         lines=LINES)
    ranked = [line.split(",")[2] for line in ranking_csv.splitlines()[1:]]
    assert sorted(ranked) == sorted(name for k, (name, *_) in enumerate(TRACKED) if k % 3 == 2)
    assert ranked[0] in result.stdout and "density" in result.stdout
    saved = json.loads((tmp_path / "rank" / "ranking.json").read_text())
    assert {k: saved[k] for k in ("class", "class_id", "by", "min_pixels", "epochs", "run")} == {
        "class": "scruff", "class_id": SCRUFF, "by": "forgetting", "min_pixels": 5,
        "epochs": E, "run": "train"}
    assert [r["section"] for r in saved["rows"]] == ranked
    assert load_ranking(tmp_path) == load_ranking(tmp_path, "scruff") == saved["rows"]


def test_window_never_learned_max_and_switch_ranking(cli, tmp_path: Path) -> None:
    folder = make_run(tmp_path, seed=1)
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--epochs", "3", "--never-learned", "max")
    assert result.exit_code == 0, result.output
    expected = _check_maps(tmp_path / "heatmap", folder, 3, "max")
    assert any((m == 3).any() for m in expected["forgetting"].values())
    result = cli("rank", "-w", tmp_path, *FLAGS, "--class", "4", "--by", "switch",
                 "--min-pixels", "1", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rank" / "ranking.csv").read_text() == independent.ranking_csv(
        folder, "scruff", "switch", 1, 3, "max", lines=LINES)
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 3 and summary["by"] == "switch" and len(summary["top"]) == 6


def test_stage_errors(cli, tmp_path: Path) -> None:
    result = cli("heatmap", "-w", tmp_path, *FLAGS)
    assert result.exit_code == 1
    assert f"run 'falsecli train -w {tmp_path}' first" in result.stderr
    make_run(tmp_path)
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--epochs", "9")
    assert result.exit_code == 1 and "recorded only 5 epochs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--sections", "inline_0001")
    assert result.exit_code == 1
    assert "unknown section 'inline_0001'" in result.stderr and "inline_0005" in result.stderr
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--run", "retrain/flip")
    assert result.exit_code == 1 and "retrain/<aug>/seed<k>" in result.stderr
    assert not (tmp_path / "heatmap" / "manifest.json").exists()
    result = cli("rank", "-w", tmp_path, *FLAGS)
    assert result.exit_code == 1 and f"run 'falsecli heatmap -w {tmp_path}' first" in result.stderr

    assert cli("heatmap", "-w", tmp_path, *FLAGS).exit_code == 0
    result = cli("heatmap", "-w", tmp_path, *FLAGS)
    assert result.exit_code == 1 and "--force" in result.stderr
    assert cli("heatmap", "-w", tmp_path, *FLAGS, "--force").exit_code == 0
    result = cli("rank", "-w", tmp_path, *FLAGS, "--class", "salt")
    assert result.exit_code == 1
    assert "unknown class 'salt'" in result.stderr and "4=scruff" in result.stderr
    result = cli("rank", "-w", tmp_path, *FLAGS, "--min-pixels", "1000")
    assert result.exit_code == 1 and "lower --min-pixels" in result.stderr

    # train redone since the heat maps were made: rank refuses to mix the two runs
    make_run(tmp_path, seed=3, force=True)
    result = cli("rank", "-w", tmp_path, *FLAGS)
    assert result.exit_code == 1 and "from an earlier train run" in result.stderr
    assert f"'falsecli heatmap --force -w {tmp_path}'" in result.stderr
    assert cli("heatmap", "-w", tmp_path, *FLAGS, "--force").exit_code == 0
    assert cli("rank", "-w", tmp_path, *FLAGS).exit_code == 0


def test_load_ranking_takes_the_class_rows_in_rank_order(tmp_path: Path) -> None:
    path = tmp_path / "rank" / "ranking.csv"
    missing = re.escape(f"missing — run 'falsecli rank -w {tmp_path}' first")
    with pytest.raises(FalseCliError, match=missing):
        load_ranking(tmp_path)
    path.parent.mkdir()
    header = "class,rank,section,density,events,class_pixels\n"
    path.write_text(header + "zechstein,1,inline_0010,9.0,90,10\n"
                             "scruff,2,crossline_0005,1.0,50,50\n"
                             "scruff,1,inline_0005,2.0,100,50\n"
                             "scruff,3,test1_inline_0000,0.5,25,50\n")
    rows = load_ranking(tmp_path, "scruff")
    assert [r["section"] for r in rows] == ["inline_0005", "crossline_0005", "test1_inline_0000"]
    assert rows[0] == {"class": "scruff", "rank": 1, "section": "inline_0005", "density": 2.0,
                       "events": 100, "class_pixels": 50}
    assert [r["rank"] for r in load_ranking(tmp_path)] == [1, 1, 2, 3]
    with pytest.raises(FalseCliError, match="rank --class upper_ns --force"):
        load_ranking(tmp_path, "upper_ns")
    for text, message in [(header + "scruff,one,inline_0005,2.0,100,50\n", "line 2: invalid"),
                          (header + "scruff,1,,2.0,100,50\n", "line 2: no section"),
                          (header + "scruff,1,inline_0005\n", "line 2: no density"),
                          (header.replace(",density", ""), "no column density")]:
        path.write_text(text)
        with pytest.raises(FalseCliError, match=f"{message} .*'falsecli rank --force -w "):
            load_ranking(tmp_path)


def test_retrain_run_heat_maps_live_beside_it(cli, tmp_path: Path) -> None:
    run = "retrain/flip/seed0"
    result = cli("heatmap", "-w", tmp_path, *FLAGS, "--run", run)
    assert result.exit_code == 1
    assert f"'falsecli retrain --aug flip --seeds 0 -w {tmp_path}'" in result.stderr
    folder = make_run(tmp_path, run, seed=2)
    assert cli("heatmap", "-w", tmp_path, *FLAGS, "--run", run).exit_code == 0
    assert not (tmp_path / "heatmap").exists()
    _check_maps(tmp_path / run / "heatmap", folder)
    loaded = load_heatmap(tmp_path, run, for_stage="report")
    fresh = event_maps(load_tracking(tmp_path / run))
    assert loaded.epochs == E and loaded.never_learned_mode == "zero"
    for key in ("forgetting", "switch", "never_learned"):
        assert np.array_equal(getattr(loaded, key), getattr(fresh, key))
    with pytest.raises(FalseCliError, match=r"'falsecli heatmap -w"):
        load_heatmap(tmp_path, "train", for_stage="report")


def test_palette_and_colour_maps() -> None:
    cmap = label_cmap(6)
    assert np.allclose(cmap(4)[:3], np.array((252, 141, 89)) / 255)  # scruff: orange
    assert np.allclose(cmap(5)[:3], np.array((215, 48, 39)) / 255)  # zechstein: red
    assert np.allclose(cmap(np.ma.masked_array([0], mask=[True]))[0], MISSING)
    assert len(label_colors(8)) == 8 and label_colors(8)[:6] == label_colors(6)
    cmap, norm = count_scale(3)
    low, high = cmap(norm(0)), cmap(norm(3))
    assert low[2] >= 0.5 > low[0] and high[0] >= 0.5 > high[2]  # dark blue -> dark red
    # integer counts get one colour each: a discrete scale, not a continuum
    assert cmap.N == 4 and len({cmap(norm(k)) for k in range(4)}) == 4
    assert cmap(norm(1)) == cmap(norm(1.4))


def test_heatmap_grid_shares_one_scale(tmp_path: Path) -> None:
    a = np.zeros((4, 5), np.uint16)
    a[0, 0] = 3
    labels = np.zeros((4, 5), np.uint8)
    labels[1] = 255
    b = mask_ignored(np.ones((4, 5), np.uint16), labels, 255)
    fig = heatmap_grid({"baseline": {"s1": a, "s2": a}, "transfer": {"s1": b}}, title="t")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3 and len({id(im.norm) for im in images}) == 1
    assert list(images[0].norm.boundaries) == [-0.5, 0.5, 1.5, 2.5, 3.5]  # counts 0..3
    assert len(fig.axes) == 5  # a 2 x 2 grid and one colour bar
    save_figure(fig, tmp_path / "grid.png")
    assert imread(tmp_path / "grid.png").ndim == 3
    run = [{"epoch": 1, "train_loss": 1.0, "mean_class_acc": 0.5},
           {"epoch": 2, "train_loss": 0.5, "mean_class_acc": 0.7}]
    curves = training_curves({"baseline": [run, run], "flip": [run]})
    # one line per run in each panel, the legend names each method once
    assert [len(ax.get_lines()) for ax in curves.axes] == [3, 3]
    assert [t.get_text() for t in curves.legends[0].get_texts()] == ["baseline", "flip"]


def test_figures_of_the_most_forgotten_sections(cli, tmp_path: Path) -> None:
    pytest.importorskip("falsecli.data.volumes")
    make_run(tmp_path)
    result = cli("heatmap", "-w", tmp_path, *sets_args(TINY), "--set", "heatmap.figures=2",
                 "--json")
    assert result.exit_code == 0, result.output
    top = [row["section"] for row in json.loads(result.stdout)["top"][:2]]
    drawn = sorted(p.stem for p in (tmp_path / "heatmap" / "figures").glob("*.png"))
    assert drawn == sorted(top)
    assert imread(tmp_path / "heatmap" / "figures" / f"{top[0]}.png").shape[1] > 600
    result = cli("heatmap", "-w", tmp_path, *sets_args(TINY), "--sections", "crossline_0005",
                 "--force")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "heatmap" / "figures").iterdir()] == [
        "crossline_0005.png"]
