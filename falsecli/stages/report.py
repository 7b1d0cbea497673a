"""Stage 6: the paper's claims measured, Table 1 and Fig. 5, forgetting statistics, paired
differences between methods and training curves, as ``report/``.

Collects every complete training run in the workdir: ``baseline`` = ``train/`` and
``retrain/none/seed*``, then ``flip``, ``rotate``, ``transfer`` and the ``transfer-identity``
control, and compares only like with like (:mod:`falsecli.method.comparison` selects and
measures; a run left out gets one line saying why, in the report and on stderr).
Accuracies are mean ± sample std (ddof = 1) over a method's runs, as read from their
``eval.json``. Each method is compared with the baseline (and transfer with its identity
control) per seed, with 95 % intervals (:mod:`falsecli.method.statistics`), and the paper's
claims are judged from those (:mod:`falsecli.method.claims`). This module owns report/'s
files; :mod:`falsecli.present` draws the figures and renders report.md and report.html.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_csv, read_json, save_with, write_csv, write_json, write_text
from falsecli.core.manifest import Stage, StageRun
from falsecli.core.swap import stage_run
from falsecli.data.geometry import SectionFrame
from falsecli.method import comparison
from falsecli.method.comparison import Measured, Run, Selection, collect_runs, select_runs
from falsecli.present import captions
from falsecli.present.document import Document, FigureRef
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
#: the class region's style in transfer/'s samples: target, source, transfer
STYLE_FIGURE = "figures/fig3b_style.png"
#: the learning curves of ``falsecli al``, when it has run here
AL_FIGURE = "figures/learning_curves.png"
#: the data map of train/'s tracked pixels, copied from heatmap/
CARTOGRAPHY_FIGURE = "figures/cartography.png"
#: likely label-issue regions listed in the report (all are in heatmap/label_issues.csv)
ISSUES_SHOWN = 10
#: the columns of table.csv and the type of each
TABLE_COLUMNS = {"method": str, "split": str, "metric": str, "mean": float, "std": float,
                 "n": int}
COMPARISON_COLUMNS = {"method": str, "control": str, "split": str, "metric": str,
                      "difference": float, "low": float, "high": float, "n": int,
                      "paired": int}


def report(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Write ``report/``: claims.json, table.csv, comparison.csv, report.md, report.html
    (self-contained), figures/."""
    workdir = Path(workdir)
    found = collect_runs(workdir)
    chosen = _chosen(workdir, found)
    runs, window = chosen.runs, chosen.window
    classes = runs[0].manifest["config"]["data"]["classes"]
    target = comparison.target_class(workdir, cfg, classes)
    rep = cfg["report"]
    by_method = chosen.by_method()
    with stage_run(workdir, "report", cfg, upstream=_upstream(workdir, found),
                   force=force) as out:
        changes = _changes(workdir)
        sources = list(dict.fromkeys(row["source"] for row in changes[0]))
        shown = [s for s in _ranked(workdir) if s not in sources][:rep["sections"]]
        chooser = next((r for r in found if r.name == layout.TRAIN), None)
        measured = comparison.measure(by_method, classes, target, window, rep, shown,
                                      sources, chooser)
        claims = comparison.claims(measured, classes, target, rep, *changes)
        write_csv(out.out(TABLE_CSV), TABLE_COLUMNS, measured.rows)
        compared = comparison.comparisons(measured.results, classes, target)
        write_csv(out.out(COMPARISON_CSV), COMPARISON_COLUMNS, compared)
        write_json(out.out(CLAIMS_JSON), [c.to_json() for c in claims])
        shown_figures = _figures(workdir, out, chosen, measured, shown, classes, target)
        doc = Document(classes, target, measured.rows, compared, claims, by_method, runs,
                       chosen.left_out, cfg, rep, window, shown_figures)
        _active_learning(workdir, out, doc)
        _data_maps(workdir, out, doc)
        write_text(out.out(REPORT_MD), doc.markdown())
        write_text(out.out(REPORT_HTML), doc.html(out.path))
        out.extra.update(runs=[r.name for r in runs], left_out=chosen.left_out,
                         window=window)
    return {"stage": "report", "runs": [r.name for r in runs], "left_out": chosen.left_out,
            "window": window, "methods": {m: len(rs) for m, rs in by_method.items()},
            "claims": [c.to_json() for c in claims],
            "lines": [f"{c.claim} {c.verdict}: {c.statement}" for c in claims],
            "outputs": [str(out.path / p) for p in out.outputs]}


def _chosen(workdir: Path, found: list[Run]) -> Selection:
    """The compared runs (see :func:`falsecli.method.comparison.select_runs`), each left-out
    run said on stderr; one line and exit when there is nothing to compare."""
    if not found:
        raise FalseCliError(f"report: no complete training run in {workdir} — run "
                            f"'falsecli train -w {workdir}' first")
    chosen = select_runs(found)
    for line in chosen.left_out:
        console.log(f"report: left out {line}")
    if not chosen.runs:
        raise FalseCliError(f"report: no comparable runs in {workdir} ({chosen.left_out[0]})")
    return chosen


def _figures(workdir: Path, out: StageRun, chosen: Selection, measured: Measured,
             shown: list[str], classes: list[str], target: int) -> list[FigureRef]:
    """Fig. 5 (when rank/ chose sections), the figures borrowed from heatmap/ and transfer/,
    and the training curves, drawn or copied into report/."""
    from falsecli.present import figures

    drawn, name = [], classes[target]
    context, frames = _context(chosen.runs[0], shown) if shown else ({}, {})
    if shown and measured.heat:  # no method has a run other than train/'s seed: no Fig. 5
        figures.save_figure(figures.heatmap_grid(
            measured.heat, context=context, classes=classes, outline=target,
            label="forgetting events (mean over runs)", frames=frames,
            title="Forgetting events per method, mean over its runs, one colour scale"),
            out.out(FIG5))
        drawn.append(captions.fig5(FIG5, [_named(n, frames) for n in shown], name,
                                   chosen.window, measured.heat_runs, measured.sources))
    drawn += _borrowed_figures(workdir, out, name, frames)
    figures.save_figure(figures.training_curves(
        {m: [r.curve() for r in rs] for m, rs in chosen.by_method().items()}), out.out(CURVES))
    drawn.append(captions.training_curves(CURVES))
    return drawn


def _context(run: Run, sections: list[str]
             ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, SectionFrame]]:
    """Seismic and annotation of the shown tracked sections, from the run's data, and the
    survey axes of every tracked section (by name)."""
    from falsecli.data.dataset import load_dataset

    ds = load_dataset(run.manifest["config"])
    known = {s.name: s for s in ds.tracked(run.manifest["config"]["train"]["track"])}
    frames = {n: ds.volumes[s.volume].geometry.frame(s.axis, s.index) for n, s in known.items()}
    return {n: (ds.image(known[n]), ds.label(known[n])) for n in sections}, frames


def _named(section: str, frames: dict[str, SectionFrame]) -> str:
    """A section as the report names it: by its survey line (``inline 116 (inline_0005)``)."""
    frame = frames.get(section)
    return section if frame is None else f"{frame.title} ({section})"


def _borrowed_figures(workdir: Path, out: StageRun, name: str,
                      frames: dict[str, SectionFrame]) -> list[FigureRef]:
    """The heat-map figure of the top-ranked section (from heatmap/) and the style
    transfer's Fig. 3 and its style measures (from transfer/), copied into report/ when those stages have drawn
    them, so that report.md's links and report.html stand alone."""
    from falsecli.stages.heatmap import figure_path

    found = []
    drawn = Stage(workdir, "heatmap").path
    section = next((s for s in _ranked(workdir) if (drawn / figure_path(s)).is_file()), None)
    if Stage(workdir, "heatmap").is_complete() and section is not None:
        rel = f"{SECTION_FIGURE}{section}.png"
        _copy(drawn / figure_path(section), out.out(rel))
        found.append(captions.most_forgotten(rel, _named(section, frames), name))
    transfer = Stage(workdir, "transfer")
    if transfer.is_complete():
        from falsecli.stages.transfer import FIG3, FIG3_STYLE

        for drawn_as, rel, caption in ((FIG3, TRANSFER_FIGURE, captions.fig3),
                                       (FIG3_STYLE, STYLE_FIGURE, captions.fig3_style)):
            if (transfer.path / drawn_as).is_file():
                _copy(transfer.path / drawn_as, out.out(rel))
                found.append(caption(rel, name))
    return found


def _active_learning(workdir: Path, out: StageRun, doc: Document) -> None:
    """The learning curves and their areas (Table 5), when ``falsecli al`` has run here."""
    from falsecli.present import figures
    from falsecli.stages.al import learning_report

    found = learning_report(workdir)
    if found is None:
        return
    figures.save_figure(figures.learning_curves(found.bands, found.titles),
                        out.out(AL_FIGURE))
    doc.extra.append(captions.learning_areas(found.header, found.body, found.last))
    if found.paired[1]:
        doc.extra.append(captions.learning_differences(*found.paired, found.last))
    doc.figures.append(captions.learning_curves(AL_FIGURE))


def _data_maps(workdir: Path, out: StageRun, doc: Document) -> None:
    """train/'s data maps per class and its cartography figure, when heatmap/ drew them."""
    from falsecli.stages.datamaps import CARTOGRAPHY_PNG, data_maps_summary, load_label_issues

    heat = Stage(workdir, "heatmap")
    found = data_maps_summary(workdir) if heat.is_complete() else None
    if found is None:
        return
    rows, late_window, regions = found
    doc.extra.append(captions.datamap_classes(rows, late_window, regions))
    if regions:
        doc.extra.append(captions.label_issues(load_label_issues(workdir)[:ISSUES_SHOWN]))
    _copy(heat.path / CARTOGRAPHY_PNG, out.out(CARTOGRAPHY_FIGURE))
    doc.figures.append(captions.cartography(CARTOGRAPHY_FIGURE))


def _copy(source: Path, target: Path) -> None:
    save_with(target, lambda tmp: shutil.copyfile(source, tmp))


def _ranked(workdir: Path) -> list[str]:
    """The validation sections of rank/ in rank order ([] without a complete rank/): Fig. 5
    shows the first ``report.sections`` (without a ranking there is no rule for choosing
    sections that does not favour a method)."""
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


def _changes(workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """transfer/'s change rows of the transfer samples and of their identity control (C5);
    empty without a complete transfer/."""
    from falsecli.stages.transfer import load_changes

    return load_changes(workdir, "transfer"), load_changes(workdir, "transfer-identity")


def read_table(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``report/table.csv`` (method, split, metric, mean, std, n), typed."""
    return read_csv(workdir, "report", TABLE_CSV, TABLE_COLUMNS)


def read_claims(workdir: Path) -> list[dict[str, Any]]:
    """``report/claims.json``: claim, statement, measured, verdict, numbers."""
    return read_json(Stage(workdir, "report").path / CLAIMS_JSON,
                     "rerun 'falsecli report --force'")


STEP = Step("report", report,
            lambda cfg, workdir: [s.name for s in _upstream(workdir, collect_runs(workdir))])
