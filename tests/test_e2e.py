"""All six stages chained through the real CLI on a tiny synthetic volume, as a script would.

The chained workdir is built once and shared: a test that runs a command which may write
takes its own copy (``own``), so every test sees the chain as the six stages left it,
whatever ran before it.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, sets_args, shared


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from typer.testing import CliRunner

    from falsecli.cli import app

    work = shared(tmp_path_factory.mktemp("e2e"))
    runner = CliRunner()
    common = ["-w", str(work), *sets_args(TINY), "--json", "--quiet"]
    steps = [
        ["train"],
        ["heatmap"],
        ["rank", "--class", "scruff"],
        ["transfer", "--class", "scruff"],
        ["retrain", "--aug", "none", "--aug", "flip", "--aug", "rotate", "--aug", "transfer",
         "--seeds", "0,1"],
        ["report"],
    ]
    outputs = {}
    for step in steps:
        result = runner.invoke(app, [*step, *common], catch_exceptions=False)
        assert result.exit_code == 0, (step, result.output)
        outputs[step[0]] = json.loads(result.stdout)
    return work, outputs


@pytest.fixture
def own(chain, tmp_path) -> Path:
    """A copy of the chained workdir for a test that changes it. Hard links: falsecli never
    writes a file in place (temp file + os.replace), and conftest checks that the shared
    files stayed as they were."""
    work = tmp_path / "w"
    shutil.copytree(chain[0], work, copy_function=os.link)
    return work


def test_every_stage_is_complete_and_lists_real_files(chain) -> None:
    work, outputs = chain
    for stage in ("train", "heatmap", "rank", "transfer", "report"):
        manifest = json.loads((work / stage / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        for rel in manifest["outputs"]:
            assert (work / stage / rel).is_file(), (stage, rel)
    for aug in ("none", "flip", "rotate", "transfer"):
        for seed in (0, 1):
            assert (work / "retrain" / aug / f"seed{seed}" / "manifest.json").is_file()
    for summary in outputs.values():
        for path in summary["outputs"]:
            assert Path(path).exists(), path


def test_retrain_runs_track_the_same_pixels(chain) -> None:
    work, _ = chain
    base = json.loads((work / "train" / "tracking" / "sections.json").read_text())
    for aug in ("flip", "transfer"):
        other = json.loads((work / "retrain" / aug / "seed1" / "tracking" /
                            "sections.json").read_text())
        assert other["sections"] == base["sections"]
        assert np.array_equal(np.load(work / "train" / "tracking" / "labels.npy"),
                              np.load(work / "retrain" / aug / "seed1" / "tracking" /
                                      "labels.npy"))


def test_report_table_means_equal_eval_json(chain) -> None:
    work, _ = chain
    with open(work / "report" / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    flip = [json.loads((work / "retrain" / "flip" / f"seed{s}" / "eval.json").read_text())
            for s in (0, 1)]
    row = next(r for r in rows if (r["method"], r["split"], r["metric"]) ==
               ("flip", "val", "pixel_acc"))
    assert float(row["mean"]) == pytest.approx(np.mean([e["val"]["pixel_acc"] for e in flip]))
    assert int(row["n"]) == 2
    assert {r["method"] for r in rows} == {"baseline", "flip", "rotate", "transfer"}
    assert any(r["metric"] == "forgetting_events" for r in rows)
    page = (work / "report" / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.split("<pre>")[0]


def test_rerun_is_refused_and_run_skips_everything(chain) -> None:
    from typer.testing import CliRunner

    from falsecli.cli import app

    work, _ = chain
    runner = CliRunner()
    again = runner.invoke(app, ["train", "-w", str(work), *sets_args(TINY)])
    assert again.exit_code == 1 and "--force" in again.stderr
    everything = runner.invoke(app, ["run", "-w", str(work), *sets_args(TINY), "--json",
                                     "--set", "retrain.augs=[none,flip,rotate,transfer]"])
    assert everything.exit_code == 0, everything.output
    stages = json.loads(everything.stdout)["stages"]
    assert all(s["status"] == "skipped" for s in stages.values()), stages


def test_baseline_seed_equal_to_train_is_not_trained_again(own) -> None:
    from typer.testing import CliRunner

    from falsecli.cli import app

    work = own
    result = CliRunner().invoke(app, ["retrain", "-w", str(work), *sets_args(TINY), "--json",
                                      "--aug", "none", "--seeds", "0", "--epochs", "3", "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"] == [{"run": "retrain/none/seed0",
                                                  "status": "same as train"}]


def test_run_redoes_only_what_a_redone_transfer_made_stale(own) -> None:
    from typer.testing import CliRunner

    from falsecli.cli import app

    work = own
    runner = CliRunner()
    args = ["-w", str(work), *sets_args(TINY), "--json", "--quiet"]
    # other samples (a redo with the same ones would leave everything fresh)
    assert runner.invoke(app, ["transfer", "--force", "--per-source", "2", *args]).exit_code == 0
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    assert [stages[s]["status"] for s in ("train", "heatmap", "rank", "transfer")] == \
        ["skipped"] * 4
    runs = {r["run"]: r["status"] for r in stages["retrain"]["runs"]}
    assert runs["retrain/transfer/seed0"] == runs["retrain/transfer/seed1"] == "trained"
    assert {runs[f"retrain/{a}/seed{s}"] for a in ("none", "flip", "rotate") for s in (0, 1)} \
        == {"skipped"}
    assert stages["report"]["status"] == "done"


def test_identical_redo_leaves_downstream_fresh(own) -> None:
    """heatmap --force rewrites the same bytes: nothing downstream is stale (content digests)."""
    from typer.testing import CliRunner

    from falsecli.cli import app

    work = own
    runner = CliRunner()
    args = ["-w", str(work), "--json", "--quiet"]
    before = (work / "heatmap" / "forgetting.npz").stat().st_ino
    assert runner.invoke(app, ["heatmap", "--force", *args]).exit_code == 0
    assert (work / "heatmap" / "forgetting.npz").stat().st_ino != before  # written again
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    assert all(s["status"] == "skipped" for s in stages.values()), stages


def test_the_workdir_remembers_its_settings(own) -> None:
    """Commands without --set use the workdir's settings (TINY), not the packaged defaults;
    another data or model for the same workdir is refused in one line."""
    from typer.testing import CliRunner

    from falsecli.cli import app

    work = own
    runner = CliRunner()
    result = runner.invoke(app, ["rank", "-w", str(work), "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["min_pixels"] == 5  # TINY's; the default is larger
    other = runner.invoke(app, ["rank", "-w", str(work), "--force",
                                "--set", "data.synthetic.shape=[8,8,8]"])
    assert other.exit_code == 1
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.synthetic.shape" in lines[0] and "train --force" in lines[0]
    model = runner.invoke(app, ["heatmap", "-w", str(work), "--set", "model.aspp_channels=8"])
    assert model.exit_code == 1 and "model.aspp_channels" in model.stderr


def test_report_page_is_self_contained_and_says_what_report_md_says(chain) -> None:
    """No external resource, every image decodes, captions under figures and tables, the
    configuration folded away, and report.md with the same headings and captions."""
    import base64
    import io
    from html.parser import HTMLParser

    from PIL import Image

    work, _ = chain
    page = (work / "report" / "report.html").read_text()

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags, self.urls, self.text, self.open = [], [], {}, None

        def handle_starttag(self, tag, attrs) -> None:
            self.tags.append(tag)
            self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data")]
            self.open = tag

        def handle_data(self, data) -> None:
            self.text.setdefault(self.open, []).append(data.strip())

    parsed = Page()
    parsed.feed(page)
    assert "link" not in parsed.tags and "script" not in parsed.tags
    assert parsed.urls and all(url.startswith("data:image/png;base64,") for url in parsed.urls)
    for url in parsed.urls:
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 100 and image.size[1] > 100
    assert "url(" not in page  # no resource from CSS either
    headings = [t for t in parsed.text["h2"] if t]
    assert len(headings) == len(set(headings))  # distinct table and figure titles
    assert any("val" in h for h in headings) and any("test1" in h for h in headings)
    assert any(h.startswith("Fig. 3 ") for h in headings)  # the transfer figure
    assert any(h.startswith("Fig. 3b") for h in headings)  # the style it moved, measured
    assert any(h.startswith("Fig. 2") for h in headings)  # the most-forgotten section
    assert parsed.tags.count("figcaption") == parsed.tags.count("img")
    assert parsed.tags.count("table") == len([t for t in page.split("class='caption'")]) - 1
    assert "details" in parsed.tags and "<pre>" not in page.split("<details>")[0]
    markdown = (work / "report" / "report.md").read_text()
    for text in headings + [t for t in parsed.text.get("figcaption", []) if t]:
        assert text in markdown, text
    assert "<details>" in markdown
    for line in markdown.splitlines():
        if line.startswith("![") and "](" in line:
            assert (work / "report" / line.split("](", 1)[1].rstrip(")")).is_file(), line


def test_report_statistics_match_an_independent_computation(chain) -> None:
    """Table 2's numbers for the baseline are the plain-loop statistics of its runs, for the
    class transfer targeted, over the window every compared run shares."""
    import independent

    work, outputs = chain
    manifest = json.loads((work / "report" / "manifest.json").read_text())
    window, runs = manifest["window"], manifest["runs"]
    assert window == 2 and "train" not in runs  # train/ has 3 epochs, the retraining runs 2
    assert any(line.startswith("train: 3 epochs") for line in outputs["report"]["left_out"])
    rep = manifest["config"]["report"]
    scruff = manifest["config"]["data"]["classes"].index("scruff")
    want = [independent.report_stats(work / run / "tracking", scruff, window,
                                     rep["region_events"], rep["min_region"])
            for run in runs if run.startswith("retrain/none/")]
    with open(work / "report" / "table.csv", newline="") as fh:
        rows = {(r["method"], r["split"], r["metric"]): r for r in csv.DictReader(fh)}
    for metric in ("forgetting_events", "target_events", "target_density",
                   "high_density_regions", "high_density_area", "boundary_density"):
        row = rows[("baseline", "tracked", metric)]
        assert float(row["mean"]) == pytest.approx(np.mean([w[metric] for w in want])), metric
        assert int(row["n"]) == len(want) == 2
    claims = json.loads((work / "report" / "claims.json").read_text())
    assert [c["claim"] for c in claims] == ["C1", "C2", "C3", "C3-all", "C4", "C5a", "C5b"]
    assert all(c["verdict"] in ("holds", "does not hold", "not measured")
               or c["verdict"].startswith("inconclusive") for c in claims)


def test_report_locality_matches_the_samples(chain) -> None:
    """C5b, recomputed by plain loops over the pixels of transfer/samples.npz,
    samples_identity.npz and the targets read from the data (not from transfer's own change
    columns): per sample, the mean |sample − identity sample| inside scruff over the same
    outside, and the outside change against the target over the target's mean |amplitude|
    there; averaged per style source, then their means, 95 % t intervals and the exact
    verdict."""
    import independent

    from falsecli.core.manifest import Stage
    from falsecli.data.dataset import load_dataset

    work, _ = chain
    config = Stage(work, "transfer").manifest()["config"]
    ds = load_dataset(config)
    scruff = config["data"]["classes"].index("scruff")
    known = {s.name: s for s in ds.sections("train")}
    with np.load(work / "transfer" / "samples.npz", allow_pickle=False) as npz, \
            np.load(work / "transfer" / "samples_identity.npz", allow_pickle=False) as ident:
        targets = [ds.image(known[str(name)]) for name in npz["target"]]
        ratio, outside = independent.locality(npz["images"], ident["images"], npz["labels"],
                                               targets, scruff)
        sources = [str(src) for src in npz["source"]]
    c5b = json.loads((work / "report" / "claims.json").read_text())[6]
    numbers, tolerance = c5b["numbers"], config["report"]["surroundings_tolerance"]
    ratios, outsides = (independent.group_means(v, sources) for v in (ratio, outside))
    assert c5b["claim"] == "C5b" and numbers["samples"] == len(ratio)
    assert numbers["clusters"] == len(ratios) == len(set(sources)) > 1
    r, r_low, r_high = independent.t_interval(ratios)
    o, o_low, o_high = independent.t_interval(outsides)
    assert [numbers[k] for k in ("ratio", "ratio_low", "ratio_high")] == \
        pytest.approx([r, r_low, r_high], rel=1e-4)
    assert [numbers[k] for k in ("relative_outside", "relative_outside_low",
                                 "relative_outside_high")] == \
        pytest.approx([o, o_low, o_high], rel=1e-4)
    assert numbers["tolerance"] == tolerance
    want = independent.exact_verdict([[v - 1 for v in ratios],
                                      [tolerance - v for v in outsides]], "style source")
    assert c5b["verdict"] == want


def test_report_style_claim_pairs_each_sample_with_its_identity(chain) -> None:
    """C5a from transfer/changes.csv by plain loops: per sample, the swap's style_moved minus
    its identity sample's (same position in the two methods' rows), averaged per style
    source, then the sources' mean, 95 % t interval and exact verdict. (The descriptor behind
    style_moved is checked against plain loops in test_stylemeasure.)"""
    import math

    import independent

    from falsecli.stages.transfer import load_changes

    work, _ = chain
    swap, ident = load_changes(work, "transfer"), load_changes(work, "transfer-identity")
    assert [r["target"] for r in swap] == [r["target"] for r in ident]
    pairs = [(a["style_moved"] - b["style_moved"], a["source"]) for a, b in zip(swap, ident)
             if not (math.isnan(a["style_moved"]) or math.isnan(b["style_moved"]))]
    per_source = independent.group_means([d for d, _ in pairs], [s for _, s in pairs])
    d, low, high = independent.t_interval(per_source)
    c5a = json.loads((work / "report" / "claims.json").read_text())[5]
    numbers = c5a["numbers"]
    assert c5a["claim"] == "C5a" and numbers["samples"] == len(swap)
    assert numbers["sources"] == len(per_source) > 1
    assert [numbers[k] for k in ("difference", "low", "high")] == \
        pytest.approx([d, low, high], rel=1e-6)
    assert c5a["verdict"] == independent.exact_verdict([per_source], "style source")


def test_report_is_stale_when_anything_it_reads_changes(own) -> None:
    """The report reads transfer/ (Fig. 3, C5), rank/, heatmap/ and the al rounds besides the
    runs: a new active-learning round makes it stale, and removing it makes it fresh again."""
    from falsecli.core.manifest import Stage
    from falsecli.core.swap import stage_run
    from falsecli.stages import report

    work = own
    cfg = Stage(work, "train").manifest()["config"]
    upstream = report.STEP.upstream(cfg, work)
    assert {"train", "heatmap", "rank", "transfer"} <= set(upstream)
    assert Stage(work, "report").is_fresh(upstream)
    with stage_run(work, "al/random/seed0/round0", cfg):
        pass
    try:
        grown = report.STEP.upstream(cfg, work)
        assert "al/random/seed0/round0" in grown
        assert not Stage(work, "report").is_fresh(grown)
    finally:
        shutil.rmtree(work / "al")
    assert Stage(work, "report").is_fresh(report.STEP.upstream(cfg, work))


@pytest.mark.parametrize("width", [1280, 800])
def test_report_page_fits_the_screen_in_a_browser(chain, tmp_path, width) -> None:
    """Laid out by headless Chromium at a wide and a narrow window: nothing is wider than the
    window (a table wider than the page scrolls in its own box), the claims table's prose
    wraps so its verdicts stay in view, and every image loads and shrinks to fit."""
    from browser import measure

    work, _ = chain
    page = measure(work / "report" / "report.html", width, tmp_path)
    assert page["width"] == width
    assert page["scroll"] <= width, page["wide"]
    assert page["wide"] == []
    assert page["tables"] and all(t["overflow"] == "auto" for t in page["tables"])
    claims = [t for t in page["tables"] if "claims" in t["title"]]
    assert claims and not any(t["scrolls"] for t in claims)
    assert page["images"] and all(i["complete"] and i["natural"] > 100 for i in page["images"])
    assert all(i["shown"] <= width for i in page["images"])
