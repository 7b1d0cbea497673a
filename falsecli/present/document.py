"""The report as a document: its content as blocks (headings, paragraphs, tables and
figures, each with a title and a caption), rendered once as Markdown and once as a
self-contained HTML page (styled by ``report.css``, shipped with the package), so the two say
the same."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core.config import Config
from falsecli.method import claims as cl
from falsecli.method.comparison import Run

#: a table of the document: title, header, rows, caption
Table = tuple[str, list[str], list[list[str]], str]


def _css() -> str:
    """The page's style sheet, a package file so that it reads as CSS, not as a string."""
    return resources.files("falsecli.present").joinpath("report.css").read_text("utf-8")


@dataclass
class FigureRef:
    """A figure of the report: its file under report/, title and caption."""

    rel: str
    title: str
    caption: str


@dataclass
class Document:
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
    figures: list[FigureRef]
    #: further tables (title, header, rows, caption): the active-learning areas
    extra: list[Table] = field(default_factory=list)

    def _cell(self, method: str, split: str, metric: str, digits: int = 3) -> str:
        for row in self.rows:
            if (row["method"], row["split"], row["metric"]) == (method, split, metric):
                spread = "" if np.isnan(row["std"]) else f" ± {row['std']:.{digits}f}"
                return f"{row['mean']:.{digits}f}{spread}"
        return "–"

    def _claims_table(self) -> Table:
        return (
            "The paper's claims, measured", ["claim", "statement", "measured", "verdict"],
            [[c.claim, c.statement, c.measured,
              c.verdict + (f" — {c.note}" if c.note else "")] for c in self.claims],
            "Each claim of the paper measured on these runs (definitions: "
            "docs/definitions.md). Each comparison is judged by an exact sign-flip test of "
            "its per-seed values (paired differences where two methods share the seed): a "
            "claim holds when every comparison is significant on the claimed side at "
            "one-sided 2.5 %, does not hold when Holm's step-down over its comparisons finds "
            "one significantly on the other side, and is inconclusive otherwise, with the "
            "smallest effect its seeds could detect (80 % power) and the seeds its observed "
            "effect would need. Fewer than 3 seeds, or values without spread, give no "
            "verdict; an exact test needs at least 6 seeds to reach 2.5 %. The 95 % t "
            "intervals shown are descriptive. C1: within each class, class-standardised, "
            "baseline runs, with forgetting against the final softmax margin beside; C2: baseline runs. C3: transfer against every control present "
            "(baseline, flip, rotate, and transfer-identity: the same generated samples "
            "without the style swap), without the runs that share train/'s seed, on the "
            "tracked sections that were not style sources (the sources' numbers beside), with "
            "what became of train/'s regions (vanished, weakened, kept); C3-all: the same "
            "for every class's regions. C4: on a "
            "test volume, the target class against baseline and transfer-identity, every "
            "other class equivalent to the baseline within report.equivalence_margin (two "
            "one-sided tests). C5a: per transfer sample, how far the class's style moved "
            "toward its source beyond its identity sample's, over the style sources. C5b: "
            "the change inside / outside the class against the identity sample, and outside "
            "against the target's amplitude.")

    def _comparison_table(self) -> Table:
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

    def tables(self) -> list[Table]:
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
                 f"</title><style>{_css()}</style></head><body>",
                 f"<h1>falsecli report</h1><p>{esc(self._intro())}</p><ul>"]
        parts += [f"<li>{esc(t)}</li>" for t in self._notes()]
        parts.append("</ul><p>Runs:</p><ul>")
        parts += [f"<li>{esc(t)}</li>" for t in self._runs_text()]
        parts.append("</ul>")
        for title, header, body, caption in self.tables():
            # the box scrolls a table wider than the page, never the page itself
            parts.append(f"<h2>{esc(title)}</h2><div class='table'><table><tr>"
                         + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(table_cell(c) for c in row) + "</tr>" for row in body]
            parts.append(f"</table></div><p class='caption'>{esc(caption)}</p>")
        for fig in self.figures:
            data = base64.b64encode((folder / fig.rel).read_bytes()).decode()
            parts.append(f"<h2>{esc(fig.title)}</h2><figure><img alt='{esc(fig.title)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{esc(fig.caption)}"
                         "</figcaption></figure>")
        parts.append("<details><summary>Configuration and versions</summary>"
                     f"<pre>{esc(self._settings())}</pre></details></body></html>")
        return "\n".join(parts)


def table_cell(cell: str) -> str:
    """One ``<td>``. A number with its interval and a note ("+0.01 [-0.2, +0.2] (paired, n=2)")
    may break before the interval and before the note, never inside either, so that a table
    of many such columns fits a narrow page."""
    klass = cell_class(cell)
    parts = re.split(r" (?=[\[(])", cell)
    if klass or len(parts) == 1:
        return f"<td{klass}>{html.escape(cell)}</td>"
    return ("<td class='parts'>" + " ".join(f"<span>{html.escape(p)}</span>" for p in parts)
            + "</td>")


def cell_class(cell: str) -> str:
    """Prose (a verdict, what was measured) is left-aligned and wraps, long prose gets room,
    numbers stay right-aligned on one line: a long measurement must not push its verdict off
    the screen."""
    if re.match(r"[-+−]?\d|–?$", cell):
        return ""
    return " class='text long'" if len(cell) > 40 else " class='text'"

