"""Stage 3: rank the tracked sections by one class's forgetting density (paper §2.2).

Density of section s for class k = events summed over the class-k pixels of s / number of
class-k pixels of s. Sections with fewer than ``rank.min_pixels`` class pixels are left out,
so that a section with three scruff pixels, all forgotten once, cannot top the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console
from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_csv, write_csv, write_json
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.data.geometry import NUMBERS, recorded, section_numbers
from falsecli.method.forgetting import SectionStats
from falsecli.stages import Step
from falsecli.stages.heatmap import load_heatmap

RANKING_CSV = "ranking.csv"
RANKING_JSON = "ranking.json"
#: the columns of ranking.csv and the type of each
COLUMNS = {"class": str, "rank": int, "section": str, "density": float, "events": int,
           "class_pixels": int}
#: the columns ranking.csv is written with: the section's survey line numbers beside its name
#: (read back as text; an inline section's crossline is blank)
WRITTEN = [*list(COLUMNS)[:3], *NUMBERS, *list(COLUMNS)[3:]]


def ranking(stats: SectionStats, cls: int, by: str = "forgetting", min_pixels: int = 50,
            source: str = "the tracked sections") -> list[dict[str, Any]]:
    """Rows of the ranking: density descending, ties by events descending, then section order.

    Only validation sections are ranked: the ranking chooses the style sources that enlarge
    the training pool, so a tracked test section in it would leak test data into training.
    ``source`` names the data in errors. Raises when the class has no pixels in any
    validation section, or no validation section has ``min_pixels`` (at least 1) of them.
    """
    name = stats.classes[cls]
    val = np.array([s.split == "val" for s in stats.sections], dtype=bool)
    pixels = np.where(val, stats.class_pixels[:, cls], 0)
    events = (stats.class_events if by == "forgetting" else stats.class_switch_events)[:, cls]
    if not pixels.any():
        raise FalseCliError(f"class {name} has no pixels in any of the {int(val.sum())} "
                            f"validation sections of {source} — rank another class with --class")
    kept = np.flatnonzero(pixels >= max(min_pixels, 1))
    if not kept.size:
        most = int(np.argmax(pixels))
        raise FalseCliError(f"no section of {source} has {min_pixels} pixels of class {name} "
                            f"(most: {pixels[most]} in {stats.sections[most].name}) — lower "
                            "--min-pixels")
    density = events[kept] / pixels[kept]
    order = np.lexsort((kept, -events[kept], -density))
    return [{"class": name, "rank": r + 1, "section": stats.sections[kept[i]].name,
             "density": float(density[i]), "events": int(events[kept[i]]),
             "class_pixels": int(pixels[kept[i]])} for r, i in enumerate(order)]


def rank(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Stage 3: rank every section tracked in ``train`` by ``rank.class``'s event density,
    from the heat maps of ``heatmap/``."""
    opts = cfg["rank"]
    cls = class_id(cfg, opts["class"])
    maps = load_heatmap(workdir, "train", for_stage="rank")  # checks heatmap/ and train/
    upstream = Stage(Path(workdir), "heatmap")
    tracking = maps.tracking
    if tracking.classes != list(cfg["data"]["classes"]):
        raise FalseCliError(f"data.classes {cfg['data']['classes']} differ from the classes "
                            f"{tracking.classes} of {tracking.path} — use the training config")
    rows = ranking(maps.stats(), cls, opts["by"], opts["min_pixels"], str(tracking.path))
    geometries = recorded(Stage(Path(workdir), "train").manifest() or {})
    numbered = [{**row, **section_numbers(geometries, s.split, s.axis, s.index)}
                for row in rows for s in [tracking.section(row["section"])]]
    options = {"class": rows[0]["class"], "class_id": cls, "by": opts["by"],
               "min_pixels": opts["min_pixels"], "epochs": maps.epochs,
               "never_learned": maps.never_learned_mode, "run": "train",
               "sections": len(tracking.sections)}
    with stage_run(workdir, "rank", cfg, upstream=[upstream], force=force) as out:
        write_csv(out.out(RANKING_CSV), WRITTEN, numbered)
        write_json(out.out(RANKING_JSON), {**options, "rows": rows})
        out.extra.update(options)
    return _summary(options, rows, opts["top"], [out.path / rel for rel in out.outputs])


def _summary(options: dict[str, Any], rows: list[dict[str, Any]], top: int,
             outputs: list[Path]) -> dict[str, Any]:
    """What ``rank`` prints (:func:`print_ranking`), when ranking and when shown again."""
    return {"stage": "rank", **options, "ranked": len(rows), "top": rows[: max(top, 0)],
            "outputs": [str(path) for path in outputs]}


def ranking_summary(cfg: Config, workdir: Path) -> dict[str, Any]:
    """The summary of the ranking on disk, as :func:`rank` returned it (the rows from
    ranking.csv, the options from the manifest), with ``cfg``'s ``rank.top`` rows."""
    stage = Stage(Path(workdir), "rank")
    manifest = stage.require("show")
    options = {key: manifest.get(key) for key in ("class", "class_id", "by", "min_pixels",
                                                  "epochs", "never_learned", "run", "sections")}
    return _summary(options, load_ranking(workdir), cfg["rank"]["top"],
                    [stage.path / rel for rel in manifest["outputs"]])


def load_ranking(workdir: Path, class_name: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``rank/ranking.csv`` in rank order, typed as :func:`ranking` made them;
    only ``class_name``'s when given (an error when it has none).

    The CSV is read, not ranking.json: it is the table users look at and may edit by hand to
    choose other sections.
    """
    rows = read_csv(workdir, "rank", RANKING_CSV, COLUMNS)
    if class_name is not None:
        rows = [row for row in rows if row["class"] == class_name]
        if not rows:
            raise FalseCliError(f"{Path(workdir) / 'rank' / RANKING_CSV} ranks no section for "
                                f"class '{class_name}' — run 'falsecli rank --class "
                                f"{class_name} --force -w {workdir}' first")
    return sorted(rows, key=lambda row: row["rank"])


def print_ranking(summary: dict[str, Any]) -> None:
    """The top rows as a table on stdout."""
    from rich.table import Table

    table = Table(title=f"{summary['class']}: sections by {summary['by']} density "
                        f"({summary['epochs']} epochs, >= {summary['min_pixels']} "
                        f"{summary['class']} pixels; {summary['ranked']} of "
                        f"{summary.get('sections') or '?'} sections ranked)")
    for column in ("rank", "section", "density", "events", "class_pixels"):
        table.add_column(column, justify="left" if column == "section" else "right")
    for row in summary["top"]:
        table.add_row(str(row["rank"]), row["section"], f"{row['density']:.4f}",
                      str(row["events"]), str(row["class_pixels"]))
    console.stdout.print(table)
    for path in summary["outputs"]:
        print(path)


STEP = Step("rank", rank, lambda cfg, workdir: ["heatmap"])
