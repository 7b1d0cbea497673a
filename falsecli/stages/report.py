"""Stage 6: the paper's claims measured, Table 1 and Fig. 5, forgetting statistics, paired
differences between methods and training curves.

Collects every complete training run in the workdir: ``baseline`` = ``train/`` and
``retrain/none/seed*``, then ``flip``, ``rotate``, ``transfer`` and the ``transfer-identity``
control. Only like is compared with like: every run records a fingerprint of its data and
tracked sections (:mod:`falsecli.data.provenance`); a run whose fingerprint differs from
``train/``'s, whose epoch count differs from the compared runs', or that repeats a (method,
seed) already counted is left out with one line saying why (in the report and on stderr).
Accuracies are mean ± sample std (ddof = 1) over a method's runs, as read from their
``eval.json``; forgetting statistics are computed here from each run's tracking history over
the one epoch window all compared runs share. Each method is compared with the baseline (and
transfer with its identity control) per seed, with 95 % intervals
(:mod:`falsecli.method.statistics`), and the paper's claims are judged from those
(:mod:`falsecli.method.claims`).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console
from falsecli.core import layout
from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_csv, read_json, save_with, write_csv, write_json, write_text
from falsecli.core.manifest import Stage, StageRun
from falsecli.core.swap import stage_run
from falsecli.data.provenance import differences
from falsecli.method import claims as cl
from falsecli.method.runfolder import read_eval, read_metrics
from falsecli.method.statistics import aggregate, difference, flatten_eval, forgetting_stats
from falsecli.stages import Step
from falsecli.stages.rank import load_ranking

TABLE_CSV = "table.csv"
#: method − control per metric with 95 % intervals
COMPARISON_CSV = "comparison.csv"
#: the claims table (C1–C5), as --json prints it
CLAIMS_JSON = "claims.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIG5 = "figures/fig5_heatmaps.png"
CURVES = "figures/training_curves.png"
#: the heat-map figure of the most-forgotten section, copied from heatmap/ (+ "<section>.png")
SECTION_FIGURE = "figures/most_forgotten_"
#: the style transfer's Fig. 3, copied from transfer/
TRANSFER_FIGURE = "figures/fig3_transfer.png"
#: the columns of table.csv and the type of each
TABLE_COLUMNS = {"method": str, "split": str, "metric": str, "mean": float, "std": float,
                 "n": int}
COMPARISON_COLUMNS = {"method": str, "control": str, "split": str, "metric": str,
                      "difference": float, "low": float, "high": float, "n": int,
                      "paired": int}
#: the retrain folder of each method (train/ is a baseline run too), in report order
METHODS = {"baseline": "none", "flip": "flip", "rotate": "rotate", "transfer": "transfer",
           "transfer-identity": "transfer-identity"}
#: the tracked-section statistics compared between methods besides the accuracies
COMPARED_STATS = ("forgetting_events", "target_density", "high_density_regions",
                  "high_density_area")


@dataclass
class Run:
    """One complete training run and what the report reads from it."""

    method: str
    stage: Stage
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def seed(self) -> int:
        return int(self.manifest["config"]["train"]["seed"])

    @property
    def epochs(self) -> int:
        return int(self.manifest["config"]["train"]["epochs"])

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        return self.manifest.get("fingerprint")

    def eval(self) -> dict[str, Any]:
        return read_eval(self.stage.path)

    def curve(self) -> list[dict[str, Any]]:
        return read_metrics(self.stage.path)


def collect_runs(workdir: Path) -> list[Run]:
    """Every complete training run: ``train/`` first, then each method's seeds in order."""
    runs: list[Run] = []
    train = Stage(workdir, layout.TRAIN)
    if (manifest := train.manifest()) is not None:
        runs.append(Run("baseline", train, manifest))
    for method, aug in METHODS.items():
        for run in layout.runs(workdir, layout.RETRAIN, aug):
            stage = Stage(workdir, run.name)
            if (manifest := stage.manifest()) is not None:
                runs.append(Run(method, stage, manifest))
    return runs


@dataclass
class Selection:
    """The runs the report compares, the ones it left out (one line each) and the epoch
    window every compared run is measured over."""

    runs: list[Run]
    left_out: list[str] = field(default_factory=list)
    window: int = 0


def select_runs(runs: list[Run]) -> Selection:
    """Like with like: the runs whose data and tracked sections match ``train/``'s (else the
    first run's), trained for the epochs most of the retraining runs have (``train/``'s when
    there are none), one run per (method, seed)."""
    out = Selection([])
    reference = next((r.fingerprint for r in runs if r.fingerprint is not None), None)
    same = []
    for r in runs:
        if r.fingerprint is None:
            out.left_out.append(f"{r.name}: it records no fingerprint of its data (made by an "
                                "older falsecli) — redo it with --force")
            continue
        diff = differences({k: v for k, v in reference.items() if k != "epochs"},
                           {k: v for k, v in r.fingerprint.items() if k != "epochs"})
        if diff:
            out.left_out.append(f"{r.name}: trained or tracked on other data than "
                                f"{runs[0].name} ({'; '.join(diff[:2])})")
            continue
        same.append(r)
    retrained = [r.epochs for r in same if r.name != "train"] or [r.epochs for r in same]
    if not retrained:
        return out
    counts = Counter(retrained)
    out.window = max(counts, key=lambda e: (counts[e], e))
    seen: dict[tuple[str, int], str] = {}
    for r in same:
        if r.epochs != out.window:
            out.left_out.append(f"{r.name}: {r.epochs} epochs, the compared runs "
                                f"{out.window} — accuracies and forgetting after other "
                                "training lengths are not comparable")
        elif (r.method, r.seed) in seen:
            out.left_out.append(f"{r.name}: seed {r.seed} of {r.method} is already counted "
                                f"({seen[r.method, r.seed]})")
        else:
            seen[r.method, r.seed] = r.name
            out.runs.append(r)
    return out


# ---------------------------------------------------------------- aggregation


def target_class(workdir: Path, cfg: Config, classes: list[str]) -> int:
    """The class the workflow targeted: transfer's, else rank's (as they ran, ``--class``
    included), else ``rank.class``."""
    value = cfg["rank"]["class"]
    for name in ("rank", "transfer"):
        manifest = Stage(workdir, name).manifest()
        if manifest is not None:
            value = manifest["config"][name]["class"]
    return class_id({"data": {"classes": classes}}, value)


@dataclass
class _Measured:
    """What the report measured on the compared runs."""

    rows: list[dict[str, Any]]  # table.csv
    results: dict[str, list[cl.Result]]  # per method, per run
    heat: dict[str, dict[str, np.ndarray]]  # Fig. 5: per method, mean map per shown section
    heat_runs: dict[str, list[str]]  # the runs each method's Fig. 5 maps average
    pixels: dict[str, int]  # tracked pixels per class


def _measure(by_method: dict[str, list[Run]], classes: list[str], target: int, window: int,
             rep: dict[str, Any], shown: list[str]) -> _Measured:
    """Every run's metrics and forgetting statistics, and each method's mean heat maps of
    the ``shown`` sections over its runs: the baseline's over the runs other than ``train/``
    when there are any (train/ chose the sections: its maps are at their worst by selection)."""
    results: dict[str, list[cl.Result]] = {}
    evals: dict[str, list[dict[str, Any]]] = {}
    stats: dict[str, list[dict[str, Any]]] = {}
    heat: dict[str, dict[str, np.ndarray]] = {}
    heat_runs: dict[str, list[str]] = {}
    pixels: dict[str, int] = {}
    for method, rs in by_method.items():
        drawn = [r for r in rs if r.name != "train"] or rs
        heat_runs[method] = [r.name for r in drawn]
        sums: dict[str, np.ma.MaskedArray] = {}
        for r in rs:
            flat = flatten_eval(r.eval())
            s, h = forgetting_stats(r.stage.path, target, window, rep["region_events"],
                                    rep["min_region"], keep=shown if r in drawn else ())
            # the tracked pixels per class are the same in every compared run
            pixels = {c: int(s.pop(f"pixels/{c}")) for c in classes}
            evals.setdefault(method, []).append(flat)
            stats.setdefault(method, []).append({"tracked": s})
            values = {f"{sp}/{m}": v for sp, ms in flat.items() for m, v in ms.items()
                      if v is not None}
            values.update({f"tracked/{k}": v for k, v in s.items()})
            results.setdefault(method, []).append(cl.Result(r.seed, values))
            for name, m in h.items():
                sums[name] = m.astype(np.float64) if name not in sums else sums[name] + m
        heat[method] = {name: m / len(drawn) for name, m in sums.items()}
    training = {m: [{"train": {"steps_per_epoch": r.manifest.get("steps_per_epoch"),
                               "train_samples": r.manifest.get("train_samples")}} for r in rs]
                for m, rs in by_method.items()}
    rows = aggregate(evals) + aggregate(stats) + aggregate(training)
    return _Measured(rows, results, heat, heat_runs, pixels)


def _comparisons(results: dict[str, list[cl.Result]], classes: list[str], target: int
                 ) -> list[dict[str, Any]]:
    """Each method − baseline (and transfer − transfer-identity), per seed where seeds match:
    target-class accuracy, mean class accuracy and mIoU on every split, and the forgetting
    statistics."""
    if "baseline" not in results:
        return []
    splits = list(dict.fromkeys(k.split("/")[0] for r in results["baseline"] for k in r.values
                                if k.endswith("/miou")))
    metrics = [(sp, m) for sp in splits for m in (f"class_acc/{classes[target]}",
                                                   "mean_class_acc", "miou")]
    metrics += [("tracked", m) for m in COMPARED_STATS]
    pairs = [(m, "baseline") for m in results if m != "baseline"]
    if "transfer" in results and "transfer-identity" in results:
        pairs.append(("transfer", "transfer-identity"))
    rows = []
    for method, control in pairs:
        for split, metric in metrics:
            key = f"{split}/{metric}"
            a, b = cl.by_seed(results[method], key), cl.by_seed(results[control], key)
            if a and b:
                d = difference(a, b)
                rows.append({"method": method, "control": control, "split": split,
                             "metric": metric, "difference": d.mean, "low": d.low,
                             "high": d.high, "n": d.n, "paired": int(d.paired)})
    return rows


def _claims(workdir: Path, m: _Measured, classes: list[str], target: int, tolerance: float
            ) -> list[cl.Claim]:
    """C1–C5 from the compared runs (C1, C2 on the baseline) and the transfer samples."""
    results = m.results
    base = results.get("baseline", [])
    tests = [k.split("/")[0] for k in (base[0].values if base else {})
             if k.endswith("/miou") and not k.startswith("val/")]
    split = tests[0] if tests else "val"
    from falsecli.stages.transfer import load_changes

    return [cl.c1_boundaries(base), cl.c2_thin_classes(base, classes, m.pixels),
            cl.c3_regions(results), cl.c4_accuracy(results, classes, classes[target], split),
            *cl.c5_claims(load_changes(workdir, "transfer"),
                          load_changes(workdir, "transfer-identity"), tolerance)]


# ---------------------------------------------------------------- the stage


def report(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Write ``report/``: claims.json, table.csv, comparison.csv, report.md, report.html
    (self-contained), figures/."""
    from falsecli.method import figures

    workdir = Path(workdir)
    found = collect_runs(workdir)
    if not found:
        raise FalseCliError(f"report: no complete training run in {workdir} — run "
                            f"'falsecli train -w {workdir}' first")
    chosen = select_runs(found)
    for line in chosen.left_out:
        console.log(f"report: left out {line}")
    if not chosen.runs:
        raise FalseCliError(f"report: no comparable runs in {workdir} ({chosen.left_out[0]})")
    runs, window = chosen.runs, chosen.window
    classes = runs[0].manifest["config"]["data"]["classes"]
    target = target_class(workdir, cfg, classes)
    rep = cfg["report"]
    by_method = {m: [r for r in runs if r.method == m] for m in METHODS}
    by_method = {m: rs for m, rs in by_method.items() if rs}

    with stage_run(workdir, "report", cfg, upstream=_upstream(workdir, found),
                      force=force) as out:
        shown = _fig5_sections(workdir, runs[0], rep["sections"])
        measured = _measure(by_method, classes, target, window, rep, shown)
        claims = _claims(workdir, measured, classes, target, rep["surroundings_tolerance"])
        write_csv(out.out(TABLE_CSV), TABLE_COLUMNS, measured.rows)
        comparisons = _comparisons(measured.results, classes, target)
        write_csv(out.out(COMPARISON_CSV), COMPARISON_COLUMNS, comparisons)
        write_json(out.out(CLAIMS_JSON), [c.to_json() for c in claims])
        name = classes[target]
        shown_figures = []
        if shown:
            figures.save_figure(figures.heatmap_grid(
                measured.heat, context=_context(runs[0], shown), classes=classes,
                outline=target, label="forgetting events (mean over runs)",
                title="Forgetting events per method, mean over its runs, one colour scale"),
                out.out(FIG5))
            shown_figures.append(_Figure(FIG5, "Fig. 5 — forgetting heat maps per method", (
                f"Rows: the {len(shown)} validation sections rank/ ranked highest for {name} "
                "forgetting on train/ (trace across, depth sample down): seismic, annotation, "
                "then each method's forgetting events per pixel over the first "
                f"{window} epochs, averaged over its runs ("
                + "; ".join(f"{m}: {', '.join(n)}" for m, n in measured.heat_runs.items())
                + "), on one colour scale: dark blue = never forgotten, red = forgotten most, "
                f"grey = unlabelled; the {name} unit is outlined in magenta. The sections were "
                "chosen on train/, so its maps are at their worst by selection: the baseline "
                "column averages the baseline runs other than train/ whenever there are any, "
                "and no method's column includes the run used for the choice.")))
        shown_figures += _borrowed_figures(workdir, out, runs[0], name)
        figures.save_figure(figures.training_curves(
            {m: [r.curve() for r in rs] for m, rs in by_method.items()}), out.out(CURVES))
        shown_figures.append(_Figure(CURVES, "Training curves", (
            "Left: training loss (cross-entropy per labelled pixel) per epoch; right: mean "
            "class accuracy on the tracked validation sections after each epoch. One line per "
            "run, one colour per method.")))
        doc = _Document(classes, target, measured.rows, comparisons, claims, by_method, runs,
                        chosen.left_out, cfg, rep, window, shown_figures)
        _active_learning(workdir, out, doc)
        write_text(out.out(REPORT_MD), doc.markdown())
        write_text(out.out(REPORT_HTML), doc.html(out.path))
        out.extra.update(runs=[r.name for r in runs], left_out=chosen.left_out,
                         window=window)
    return {"stage": "report", "runs": [r.name for r in runs], "left_out": chosen.left_out,
            "window": window, "methods": {m: len(rs) for m, rs in by_method.items()},
            "claims": [c.to_json() for c in claims],
            "lines": [f"{c.claim} {c.verdict}: {c.statement}" for c in claims],
            "outputs": [str(out.path / p) for p in out.outputs]}


def _context(run: Run, sections: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seismic and annotation of the shown tracked sections, from the run's data."""
    from falsecli.data.dataset import load_dataset

    ds = load_dataset(run.manifest["config"])
    known = {s.name: s for s in ds.tracked(run.manifest["config"]["train"]["track"])}
    return {n: (ds.image(known[n]), ds.label(known[n])) for n in sections}


def _borrowed_figures(workdir: Path, out: StageRun, run: Run, name: str) -> list[_Figure]:
    """The heat-map figure of the top-ranked section (from heatmap/) and the style
    transfer's Fig. 3 (from transfer/), copied into report/ when those stages have drawn
    them, so that report.md's links and report.html stand alone."""
    from falsecli.stages.heatmap import figure_path

    found = []
    drawn = Stage(workdir, "heatmap").path
    ranked = _ranked(workdir, run)
    section = next((s for s in ranked if (drawn / figure_path(s)).is_file()), None)
    if Stage(workdir, "heatmap").is_complete() and section is not None:
        rel = f"{SECTION_FIGURE}{section}.png"
        _copy(drawn / figure_path(section), out.out(rel))
        found.append(_Figure(rel, f"Fig. 2 — the most-forgotten section, {section}", (
            f"The validation section rank/ ranked highest for {name} forgetting (among those "
            "heatmap/ drew), from train/: seismic amplitude, the annotation in facies colours, "
            "and the forgetting events per pixel (discrete colour bar). Events concentrate "
            "where units are thin or their boundaries are ambiguous in the seismic.")))
    transfer = Stage(workdir, "transfer")
    if transfer.is_complete():
        from falsecli.stages.transfer import FIG3

        if (transfer.path / FIG3).is_file():
            _copy(transfer.path / FIG3, out.out(TRANSFER_FIGURE))
            found.append(_Figure(TRANSFER_FIGURE, f"Fig. 3 — style transfer of {name}", (
                f"Each row: a random training section (target) whose {name} takes the style "
                f"of a most-forgotten section (style source); the target's labels are the new "
                f"sample's labels. transfer − target shows what the generator changed (the "
                f"{name} unit should change, the geology around it should not); the last "
                "column, two transfers from different sources into the same target with the "
                "same noise, shows what the style code alone changes. Difference scales are "
                "symmetric and shared by all rows.")))
    return found


def _active_learning(workdir: Path, out: StageRun, doc: _Document) -> None:
    """The learning curves and their areas, when ``falsecli al`` has run here."""
    from falsecli.method import figures
    from falsecli.stages.al import AL_FIGURE, learning_report

    found = learning_report(workdir)
    if found is None:
        return
    fig, header, body, caption = found
    figures.save_figure(fig, out.out(AL_FIGURE))
    doc.extra.append(("Table 5 — active learning: area under the learning curves", header,
                      body, caption))
    doc.figures.append(_Figure(AL_FIGURE, "Active learning: learning curves", (
        "mIoU and mean class accuracy (val: the tracked validation sections; test: the test "
        "volume) against the training sections labelled, after each round of falsecli al; "
        "line = mean over seeds, band = ± one standard deviation. A curve above the others "
        "reaches the same accuracy with fewer labelled sections.")))


def _copy(source: Path, target: Path) -> None:
    save_with(target, lambda tmp: shutil.copyfile(source, tmp))


def _ranked(workdir: Path, run: Run) -> list[str]:
    """The validation sections of rank/ in rank order ([] without a complete rank/)."""
    if not Stage(workdir, "rank").is_complete():
        return []
    return list(dict.fromkeys(row["section"] for row in load_ranking(workdir)))


def _upstream(workdir: Path, found: list[Run]) -> list[Stage]:
    """Every complete stage the report reads: the runs, heatmap/, rank/ and transfer/ (Fig. 3,
    C5) and the active-learning rounds (Table 5), so that a change to any makes it stale."""
    from falsecli.stages.al import complete_rounds

    read = [Stage(workdir, name) for name in ("heatmap", "rank", "transfer")]
    return [r.stage for r in found] + [s for s in read if s.is_complete()] + \
        complete_rounds(workdir)


def _fig5_sections(workdir: Path, run: Run, count: int) -> list[str]:
    """The top-ranked sections of rank/ (the ones the paper's Fig. 5 shows); none without a
    ranking (there is then no rule that does not favour a method)."""
    return _ranked(workdir, run)[:count]


def read_table(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``report/table.csv`` (method, split, metric, mean, std, n), typed."""
    return read_csv(workdir, "report", TABLE_CSV, TABLE_COLUMNS)


def read_comparison(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``report/comparison.csv`` (method − control per metric), typed."""
    return read_csv(workdir, "report", COMPARISON_CSV, COMPARISON_COLUMNS)


def read_claims(workdir: Path) -> list[dict[str, Any]]:
    """``report/claims.json``: claim, statement, measured, verdict, numbers."""
    return read_json(Stage(workdir, "report").path / CLAIMS_JSON,
                        "rerun 'falsecli report --force'")


# ---------------------------------------------------------------- rendering


@dataclass
class _Figure:
    """A figure of the report: its file under report/, title and caption."""

    rel: str
    title: str
    caption: str


@dataclass
class _Document:
    """The report's content as blocks, rendered once as Markdown and once as HTML, so the
    two say the same: headings, paragraphs, tables and figures each with a title and a
    caption below, the configuration folded away."""

    classes: list[str]
    target: int
    rows: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    claims: list[cl.Claim]
    by_method: dict[str, list[Run]]
    runs: list[Run]
    left_out: list[str]
    cfg: Config
    rep: dict[str, Any]
    window: int
    figures: list[_Figure]
    #: further tables (title, header, rows, caption): the active-learning areas
    extra: list[tuple[str, list[str], list[list[str]], str]] = field(default_factory=list)

    def _cell(self, method: str, split: str, metric: str, digits: int = 3) -> str:
        for row in self.rows:
            if (row["method"], row["split"], row["metric"]) == (method, split, metric):
                spread = "" if np.isnan(row["std"]) else f" ± {row['std']:.{digits}f}"
                return f"{row['mean']:.{digits}f}{spread}"
        return "–"

    def _claims_table(self) -> tuple[str, list[str], list[list[str]], str]:
        return (
            "The paper's claims, measured", ["claim", "statement", "measured", "verdict"],
            [[c.claim, c.statement, c.measured, c.verdict] for c in self.claims],
            "Each claim of the paper measured on these runs. Intervals are 95 % t intervals "
            "(paired per seed where both methods have the seed, else Welch's); a claim holds "
            "when its interval lies entirely on the claimed side, does not hold when it lies "
            "entirely on the other side, and is inconclusive otherwise (one run gives no "
            "interval). C1, C2: baseline runs. C3, C4: transfer against every control present "
            "(baseline, flip, rotate, and transfer-identity: the same generated samples "
            "without the style swap, which separates the swap from more, generated, images "
            "and more steps). C5a: per transfer sample, how far the class's style moved toward "
            "its source beyond its identity sample's, interval over the style sources. C5b: "
            "the change inside / outside the class against the identity sample, and outside "
            "against the target's amplitude.")

    def _comparison_table(self) -> tuple[str, list[str], list[list[str]], str]:
        def fmt(r: dict[str, Any]) -> str:
            if np.isnan(r["low"]):
                return f"{r['difference']:+.3f} (n={r['n']})"
            return (f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] "
                    f"({'paired' if r['paired'] else 'unpaired'}, n={r['n']})")

        metrics = list(dict.fromkeys((r["split"], r["metric"]) for r in self.comparisons))
        pairs = list(dict.fromkeys((r["method"], r["control"]) for r in self.comparisons))
        cells = {(r["method"], r["control"], r["split"], r["metric"]): fmt(r)
                 for r in self.comparisons}
        body = [[f"{m} − {c}"] + [cells.get((m, c, sp, me), "–") for sp, me in metrics]
                for m, c in pairs]
        return ("Table 4 — differences between methods",
                ["method − control"] + [f"{me} ({sp})" for sp, me in metrics], body,
                "Mean difference with its 95 % interval: paired t over the seeds both methods "
                "have (at least two), else Welch's t; no interval from fewer than two runs. "
                "An interval that excludes 0 is a difference the seeds cannot explain.")

    def tables(self) -> list[tuple[str, list[str], list[list[str]], str]]:
        """(title, header, rows, caption) of every table; one accuracy table per split."""
        splits = list(dict.fromkeys(r["split"] for r in self.rows
                                    if r["metric"] == "pixel_acc"))
        acc_cols = [f"class_acc/{c}" for c in self.classes] + ["pixel_acc", "mean_class_acc",
                                                               "miou"]
        header = ["method", "runs"] + self.classes + ["pixel acc", "mean class acc", "mIoU"]
        out = [self._claims_table()]
        every = self.cfg["data"]["val_every"]
        for i, split in enumerate(splits):
            body = [[m, str(len(rs))] + [self._cell(m, split, c) for c in acc_cols]
                    for m, rs in self.by_method.items()]
            where = (f"the tracked validation sections (every {every}th inline and crossline "
                     "of the training volume, never trained on as sections)" if split == "val"
                     else f"the test volume {split}, which no run saw in training")
            letter = chr(ord("a") + i) if len(splits) > 1 else ""
            out.append((
                f"Table 1{letter} — class accuracy on {split}", header, body,
                f"Accuracy on {where}, as mean ± standard deviation over the runs of each "
                "method (column runs; baseline = train/ and retrain/none/). Class accuracy is "
                "per-class recall: the share of a class's labelled pixels predicted as that "
                "class; mIoU is the mean intersection over union. Higher is better; compare "
                f"the {self.classes[self.target]} column across methods."))
        name = self.classes[self.target]
        stat_cols = [("forgetting_events", 0), ("target_events", 0), ("target_density", 3),
                     ("high_density_regions", 1), ("high_density_area", 0)]
        body = [[m, str(len(rs))] + [self._cell(m, "tracked", c, d) for c, d in stat_cols]
                for m, rs in self.by_method.items()]
        out.append((
            "Table 2 — forgetting statistics", ["method", "runs", "all events",
                                                 f"{name} events", f"{name} density",
                                                 "high-density regions", "their area (px)"],
            body,
            f"Forgetting events on the tracked sections over the first {self.window} epochs "
            f"of every run (mean ± std over runs). A forgetting event: a pixel predicted "
            f"right after one epoch and wrong after the next. {name} density = {name} events "
            f"per {name} pixel. A high-density region: ≥ {self.rep['min_region']} connected "
            f"{name} pixels each forgotten ≥ {self.rep['region_events']} times. Fewer events "
            f"and a lower density mean the method learned {name} more stably."))
        body = [[m, str(len(rs)), ", ".join(str(r.seed) for r in rs), str(self.window),
                 self._cell(m, "train", "steps_per_epoch", 0),
                 self._cell(m, "train", "train_samples", 0)]
                for m, rs in self.by_method.items()]
        out.append((
            "Table 3 — what each method trained on", ["method", "runs", "seeds", "epochs",
                                                       "steps per epoch", "training samples"],
            body,
            "Optimisation steps (batches of train.batch_size) per epoch and training samples "
            "(sections, plus generated samples for transfer and transfer-identity): a method "
            "with more steps has had more optimisation, which transfer-identity controls for."))
        if self.comparisons:
            out.append(self._comparison_table())
        return out + self.extra

    def _notes(self) -> list[str]:
        """What the reader must know to trust the comparison: the window, what was left out
        and how the tracked sections were held out."""
        every = self.cfg["data"]["val_every"]
        holdout = self.runs[0].manifest["config"]["data"].get("holdout", "crossing")
        seen = round(100 * (every - 1) / every)
        notes = [f"Every compared run trained for {self.window} epochs; forgetting statistics "
                 f"use that one window of {self.window} epochs for every method."]
        if holdout == "crossing":
            notes.append(
                f"Held out as sections, not as pixels (data.holdout: crossing, the paper's "
                f"protocol): the tracked validation sections are never trained on as sections, "
                f"but about {seen} % of a tracked inline's pixels lie on training crosslines "
                "(and likewise for crosslines), whose labels the network does train on; "
                "validation scores are therefore optimistic. data.holdout: strict ignores "
                "those pixels in training.")
        else:
            notes.append("Held out strictly (data.holdout: strict): no tracked pixel's label is "
                         "trained on, not even through the training sections that cross it.")
        notes += [f"Left out: {line}" for line in self.left_out]
        return notes

    def _runs_text(self) -> list[str]:
        return [f"{r.method}: {r.name} (seed {r.manifest['seed']}, "
                f"{r.manifest['config']['train']['epochs']} epochs, {r.manifest['device']})"
                for r in self.runs]

    def _settings(self) -> str:
        return json.dumps({"config": self.cfg, "versions": self.runs[0].manifest["versions"]},
                          indent=2)

    def _intro(self) -> str:
        return (f"How the methods compare on the class {self.classes[self.target]} "
                f"({len(self.runs)} training runs over {len(self.by_method)} methods): the "
                "paper's claims measured, accuracy per class (Table 1), forgetting statistics "
                "(Table 2), what each method trained on (Table 3), the differences between "
                "methods with their intervals (Table 4), the heat maps "
                "of the same sections per method (Fig. 5), the most-forgotten section, the "
                "style transfer that enlarged the training pool, and the training curves.")

    def markdown(self) -> str:
        lines = ["# falsecli report", "", self._intro(), ""]
        lines += [f"- {t}" for t in self._notes()] + ["", "Runs:", ""]
        lines += [f"- {t}" for t in self._runs_text()] + [""]
        for title, header, body, caption in self.tables():
            lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            lines += ["", f"*{caption}*", ""]
        for fig in self.figures:
            lines += [f"## {fig.title}", "", f"![{fig.title}]({fig.rel})", "",
                      f"*{fig.caption}*", ""]
        lines += ["<details><summary>Configuration and versions</summary>", "", "```json",
                  self._settings(), "```", "", "</details>", ""]
        return "\n".join(lines)

    def html(self, folder: Path) -> str:
        """The page, self-contained: every figure (read from ``folder``) embedded."""
        esc = html.escape
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>falsecli report"
                 "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto;"
                 "padding:0 1em}table{border-collapse:collapse;margin:1em 0 .3em;display:block;"
                 "overflow-x:auto}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
                 "th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
                 "td.text{text-align:left;white-space:normal}td.long{min-width:20em}"
                 "td:first-child{white-space:nowrap}"
                 "figure{margin:1em 0}.caption,figcaption{color:#444;font-size:.92em;"
                 "max-width:60em;margin:.3em 0 1.5em}pre{background:#f6f6f6;padding:1em;"
                 "overflow:auto}</style></head><body>",
                 f"<h1>falsecli report</h1><p>{esc(self._intro())}</p><ul>"]
        parts += [f"<li>{esc(t)}</li>" for t in self._notes()]
        parts.append("</ul><p>Runs:</p><ul>")
        parts += [f"<li>{esc(t)}</li>" for t in self._runs_text()]
        parts.append("</ul>")
        for title, header, body, caption in self.tables():
            parts.append(f"<h2>{esc(title)}</h2><table><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td{_cell_class(c)}>{esc(c)}</td>" for c in row)
                      + "</tr>" for row in body]
            parts.append(f"</table><p class='caption'>{esc(caption)}</p>")
        for fig in self.figures:
            data = base64.b64encode((folder / fig.rel).read_bytes()).decode()
            parts.append(f"<h2>{esc(fig.title)}</h2><figure><img alt='{esc(fig.title)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{esc(fig.caption)}"
                         "</figcaption></figure>")
        parts.append("<details><summary>Configuration and versions</summary>"
                     f"<pre>{esc(self._settings())}</pre></details></body></html>")
        return "\n".join(parts)


def _cell_class(cell: str) -> str:
    """Prose (a verdict, what was measured) is left-aligned and wraps, long prose gets room,
    numbers stay right-aligned on one line: a long measurement must not push its verdict off
    the screen."""
    if re.match(r"[-+−]?\d|–?$", cell):
        return ""
    return " class='text long'" if len(cell) > 40 else " class='text'"


STEP = Step("report", report,
            lambda cfg, workdir: [s.name for s in _upstream(workdir, collect_runs(workdir))])
