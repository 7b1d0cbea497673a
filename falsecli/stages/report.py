"""Stage 6: the paper's Table 1 and Fig. 5, forgetting statistics and training curves.

Collects every complete training run in the workdir: ``baseline`` = ``train/`` and
``retrain/none/seed*``, then ``flip``, ``rotate`` and ``transfer``. Accuracies are mean and
population standard deviation over a method's runs, exactly as read from their ``eval.json``.
Forgetting statistics are computed here from each run's tracking history, over the epochs
every run has (the shortest run's), so no ``heatmap`` call per run is needed. A
*high-density region* is an 8-connected set of at least ``report.min_region`` pixels of the
target class each forgotten at least ``report.region_events`` times: the paper's claim is
that transfer makes such regions disappear where flip and rotate only weaken them.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import workdir as wd
from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.method.runfolder import read_eval, read_metrics
from falsecli.method.statistics import aggregate, flatten_eval, forgetting_stats
from falsecli.stages.rank import load_ranking, read_csv
from falsecli.stages import Step

TABLE_CSV = "table.csv"
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
METHODS = ("baseline", "flip", "rotate", "transfer")


@dataclass
class Run:
    """One complete training run and what the report reads from it."""

    method: str
    stage: wd.Stage
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.stage.name

    def eval(self) -> dict[str, Any]:
        return read_eval(self.stage.path)

    def curve(self) -> list[dict[str, Any]]:
        return read_metrics(self.stage.path)


def collect_runs(workdir: Path) -> list[Run]:
    """Every complete run, grouped by method; a ``retrain/none`` run that repeats ``train/``
    (same data, model, recipe and epochs: :func:`repeats_train`) is counted once."""
    from falsecli.stages.retrain import repeats_train

    runs: list[Run] = []
    train = wd.Stage(workdir, "train")
    if (manifest := train.manifest()) is not None:
        runs.append(Run("baseline", train, manifest))
    for aug in ("none", "flip", "rotate", "transfer"):
        root = Path(workdir) / "retrain" / aug
        seeds = sorted(root.glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit()
                       else -1)
        for path in seeds:
            stage = wd.Stage(workdir, f"retrain/{aug}/{path.name}")
            manifest = stage.manifest()
            if manifest is None or (aug == "none" and repeats_train(workdir,
                                                                   manifest["config"])):
                continue
            runs.append(Run("baseline" if aug == "none" else aug, stage, manifest))
    return runs


# ---------------------------------------------------------------- aggregation


def target_class(workdir: Path, cfg: Config, classes: list[str]) -> int:
    """The class the workflow targeted: transfer's, else rank's (as they ran, ``--class``
    included), else ``rank.class``."""
    value = cfg["rank"]["class"]
    for name in ("rank", "transfer"):
        manifest = wd.Stage(workdir, name).manifest()
        if manifest is not None:
            value = manifest["config"][name]["class"]
    return class_id({"data": {"classes": classes}}, value)


# ---------------------------------------------------------------- the stage


def report(cfg: Config, workdir: Path, *, force: bool = False, resume: bool = False
           ) -> dict[str, Any]:
    """Write ``report/``: table.csv, report.md, report.html (self-contained), figures/.

    ``resume`` has no effect (this stage keeps no checkpoint); it is accepted so that every
    stage has the same signature.
    """
    from falsecli.method import figures

    workdir = Path(workdir)
    runs = collect_runs(workdir)
    if not runs:
        raise FalseCliError(f"report: no complete training run in {workdir} — run "
                            f"'falsecli train -w {workdir}' first")
    classes = runs[0].manifest["config"]["data"]["classes"]
    target = target_class(workdir, cfg, classes)
    rep = cfg["report"]
    # events grow with the epochs counted: compare every run over the shortest run's epochs
    window = min(r.manifest["config"]["train"]["epochs"] for r in runs)
    by_method: dict[str, list[Run]] = {m: [r for r in runs if r.method == m] for m in METHODS}
    by_method = {m: rs for m, rs in by_method.items() if rs}

    with wd.stage_run(workdir, "report", cfg, upstream=[r.stage for r in runs],
                      force=force) as out:
        rows, heat = _statistics(by_method, target, window, rep)
        _write_table(out.out(TABLE_CSV), rows)

        shown = _fig5_sections(workdir, heat, rep["sections"])
        figures.save_figure(figures.heatmap_grid(
            {m: {s: heat[m][s] for s in shown if s in heat[m]} for m in heat},
            title="Forgetting events per method (first run of each), one colour scale"),
            out.out(FIG5))
        figures.save_figure(figures.training_curves(
            {m: [r.curve() for r in rs] for m, rs in by_method.items()}), out.out(CURVES))
        name = classes[target]
        shown_figures = [_Figure(FIG5, "Fig. 5 — forgetting heat maps per method", (
            f"Forgetting events per pixel over the first {window} epochs in {len(shown)} "
            f"top-ranked sections for {name} (rows; trace across, depth sample down) for the "
            "first run of each method (columns), on one discrete colour scale: dark blue = "
            "never forgotten, red = forgotten most, grey = unlabelled. Bands along unit "
            "boundaries are pixels the network keeps learning and forgetting; fewer and "
            f"bluer bands in the {name} unit mean it was learned more stably."))]
        shown_figures += _borrowed_figures(workdir, out, heat, name)
        shown_figures.append(_Figure(CURVES, "Training curves", (
            "Left: training loss (cross-entropy per labelled pixel) per epoch; right: mean "
            "class accuracy on the tracked validation sections after each epoch. One line per "
            "run, one colour per method.")))
        doc = _Document(classes, target, rows, by_method, runs, cfg, rep, window, shown_figures)
        _active_learning(workdir, out, doc)
        wd.write_text(out.out(REPORT_MD), doc.markdown())
        wd.write_text(out.out(REPORT_HTML), doc.html(out.path))
        out.extra["runs"] = [r.name for r in runs]
    return {"stage": "report", "runs": [r.name for r in runs],
            "methods": {m: len(rs) for m, rs in by_method.items()},
            "outputs": [str(out.path / p) for p in out.outputs]}


def _statistics(by_method: dict[str, list[Run]], target: int, window: int,
                rep: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Table rows (metrics and forgetting statistics per method) and each method's first
    run's heat maps (Fig. 5 shows those; the other runs' maps are freed at once)."""
    per_run_eval = {m: [flatten_eval(r.eval()) for r in rs] for m, rs in by_method.items()}
    stats: dict[str, list[dict[str, Any]]] = {}
    heat = {}
    for method, rs in by_method.items():
        stats[method] = []
        for i, r in enumerate(rs):
            s, h = forgetting_stats(r.stage.path, target, window, rep["region_events"],
                                    rep["min_region"])
            stats[method].append({"tracked": s})
            if i == 0:
                heat[method] = h
    return aggregate(per_run_eval) + aggregate(stats), heat


def _borrowed_figures(workdir: Path, out: wd.StageRun, heat: dict[str, dict[str, Any]],
                      name: str) -> list[_Figure]:
    """The heat-map figure of the baseline's most-forgotten section (from heatmap/) and the
    style transfer's Fig. 3 (from transfer/), copied into report/ when those stages have
    drawn them, so that report.md's links and report.html stand alone."""
    from falsecli.stages.heatmap import figure_path

    found = []
    baseline = heat.get("baseline", next(iter(heat.values())))
    drawn = wd.Stage(workdir, "heatmap").path
    by_events = sorted(baseline, key=lambda s: -int(np.ma.filled(baseline[s], 0).sum()))
    section = next((s for s in by_events if (drawn / figure_path(s)).is_file()), None)
    if wd.Stage(workdir, "heatmap").is_complete() and section is not None:
        rel = f"{SECTION_FIGURE}{section}.png"
        _copy(drawn / figure_path(section), out.out(rel))
        found.append(_Figure(rel, f"Fig. 2 — the most-forgotten section, {section}", (
            "The tracked section of the baseline run with the most forgetting events (among "
            "those heatmap/ drew): seismic amplitude, the annotation in facies colours, and "
            "the forgetting events per pixel (discrete colour bar). Events concentrate where "
            "units are thin or their boundaries are ambiguous in the seismic.")))
    transfer = wd.Stage(workdir, "transfer")
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


def _active_learning(workdir: Path, out: wd.StageRun, doc: _Document) -> None:
    """The learning curves and their areas, when ``falsecli al`` has run here."""
    from falsecli.method import figures
    from falsecli.stages.al import AL_FIGURE, learning_report

    found = learning_report(workdir)
    if found is None:
        return
    fig, header, body, caption = found
    figures.save_figure(fig, out.out(AL_FIGURE))
    doc.extra.append(("Table 3 — active learning: area under the learning curves", header,
                      body, caption))
    doc.figures.append(_Figure(AL_FIGURE, "Active learning: learning curves", (
        "mIoU and mean class accuracy (val: the tracked validation sections; test: the test "
        "volume) against the training sections labelled, after each round of falsecli al; "
        "line = mean over seeds, band = ± one standard deviation. A curve above the others "
        "reaches the same accuracy with fewer labelled sections.")))


def _copy(source: Path, target: Path) -> None:
    wd.save_with(target, lambda tmp: shutil.copyfile(source, tmp))


def _fig5_sections(workdir: Path, heat: dict[str, dict[str, np.ndarray]], count: int
                   ) -> list[str]:
    """The top-ranked sections of rank/ (the ones the paper's Fig. 5 shows), else the
    baseline's most-forgotten ones."""
    names = list(next(iter(heat.values())))
    if wd.Stage(workdir, "rank").is_complete():
        ranked = [row["section"] for row in load_ranking(workdir)]
        ranked = [s for s in dict.fromkeys(ranked) if s in names]
        if ranked:
            return ranked[:count]
    first = next(iter(heat.values()))
    return sorted(names, key=lambda s: -int(np.ma.filled(first[s], 0).sum()))[:count]


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(TABLE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    wd.write_text(path, buf.getvalue())


def read_table(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``report/table.csv`` (method, split, metric, mean, std, n), typed."""
    return read_csv(workdir, "report", TABLE_CSV, TABLE_COLUMNS)


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
    by_method: dict[str, list[Run]]
    runs: list[Run]
    cfg: Config
    rep: dict[str, Any]
    window: int
    figures: list[_Figure]
    #: further tables (title, header, rows, caption): the active-learning areas
    extra: list[tuple[str, list[str], list[list[str]], str]] = field(default_factory=list)

    def _cell(self, method: str, split: str, metric: str, digits: int = 3) -> str:
        for row in self.rows:
            if (row["method"], row["split"], row["metric"]) == (method, split, metric):
                return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"
        return "–"

    def tables(self) -> list[tuple[str, list[str], list[list[str]], str]]:
        """(title, header, rows, caption) of every table; one accuracy table per split."""
        splits = list(dict.fromkeys(r["split"] for r in self.rows
                                    if r["metric"] == "pixel_acc"))
        acc_cols = [f"class_acc/{c}" for c in self.classes] + ["pixel_acc", "mean_class_acc",
                                                               "miou"]
        header = ["method", "runs"] + self.classes + ["pixel acc", "mean class acc", "mIoU"]
        out = []
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
        return out + self.extra

    def _runs_text(self) -> list[str]:
        return [f"{r.method}: {r.name} (seed {r.manifest['seed']}, "
                f"{r.manifest['config']['train']['epochs']} epochs, {r.manifest['device']})"
                for r in self.runs]

    def _settings(self) -> str:
        return json.dumps({"config": self.cfg, "versions": self.runs[0].manifest["versions"]},
                          indent=2)

    def _intro(self) -> str:
        return (f"How the methods compare on the class {self.classes[self.target]} "
                f"({len(self.runs)} training runs over {len(self.by_method)} methods): "
                "accuracy per class (Table 1), forgetting statistics (Table 2), the heat maps "
                "of the same sections per method (Fig. 5), the most-forgotten section, the "
                "style transfer that enlarged the training pool, and the training curves.")

    def markdown(self) -> str:
        lines = ["# falsecli report", "", self._intro(), "", "Runs:", ""]
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
                 "figure{margin:1em 0}.caption,figcaption{color:#444;font-size:.92em;"
                 "max-width:60em;margin:.3em 0 1.5em}pre{background:#f6f6f6;padding:1em;"
                 "overflow:auto}</style></head><body>",
                 f"<h1>falsecli report</h1><p>{esc(self._intro())}</p><p>Runs:</p><ul>"]
        parts += [f"<li>{esc(t)}</li>" for t in self._runs_text()]
        parts.append("</ul>")
        for title, header, body, caption in self.tables():
            parts.append(f"<h2>{esc(title)}</h2><table><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                      for row in body]
            parts.append(f"</table><p class='caption'>{esc(caption)}</p>")
        for fig in self.figures:
            data = base64.b64encode((folder / fig.rel).read_bytes()).decode()
            parts.append(f"<h2>{esc(fig.title)}</h2><figure><img alt='{esc(fig.title)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{esc(fig.caption)}"
                         "</figcaption></figure>")
        parts.append("<details><summary>Configuration and versions</summary>"
                     f"<pre>{esc(self._settings())}</pre></details></body></html>")
        return "\n".join(parts)


STEP = Step("report", report, lambda cfg, workdir: [r.name for r in collect_runs(workdir)])
