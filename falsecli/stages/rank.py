"""Stage 3: rank the tracked sections by one class's forgetting density (paper §2.2).

Density of section s for class k = events summed over the class-k pixels of s / number of
class-k pixels of s. Sections with fewer than ``rank.min_pixels`` class pixels are left out,
so that a section with three scruff pixels, all forgotten once, cannot top the list.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console
from falsecli.core.config import Config, class_id
from falsecli.core.errors import FalseCliError
from falsecli.method.forgetting import SectionStats
from falsecli.stages.heatmap import load_heatmap
from falsecli.core.workdir import Stage, stage_run, write_json, write_text

COLUMNS = ("class", "rank", "section", "density", "events", "class_pixels")


def ranking(stats: SectionStats, cls: int, by: str = "forgetting", min_pixels: int = 50,
            source: str = "the tracked sections") -> list[dict[str, Any]]:
    """Rows of the ranking: density descending, ties by events descending, then section order.

    ``source`` names the data in errors. Raises when the class has no pixels at all, or no
    section has ``min_pixels`` (at least 1) of them.
    """
    name = stats.classes[cls]
    pixels = stats.class_pixels[:, cls]
    events = (stats.class_events if by == "forgetting" else stats.class_switch_events)[:, cls]
    if not pixels.any():
        raise FalseCliError(f"class {name} has no pixels in any of the {len(stats.sections)} "
                            f"sections of {source} — rank another class with --class")
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


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


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
    options = {"class": rows[0]["class"], "class_id": cls, "by": opts["by"],
               "min_pixels": opts["min_pixels"], "epochs": maps.epochs,
               "never_learned": maps.never_learned_mode, "run": "train"}
    with stage_run(workdir, "rank", cfg, upstream=[upstream], force=force) as out:
        write_text(out.out("ranking.csv"), _csv(rows))
        write_json(out.out("ranking.json"), {**options, "rows": rows})
        out.extra.update(options)
    return {"stage": "rank", **options, "ranked": len(rows),
            "sections": len(tracking.sections), "top": rows[: max(opts["top"], 0)],
            "outputs": [str(out.path / rel) for rel in out.outputs]}


def print_ranking(summary: dict[str, Any]) -> None:
    """The top rows as a table on stdout."""
    from rich.table import Table

    table = Table(title=f"{summary['class']}: sections by {summary['by']} density "
                        f"({summary['epochs']} epochs, >= {summary['min_pixels']} "
                        f"{summary['class']} pixels; {summary['ranked']} of "
                        f"{summary['sections']} sections ranked)")
    for column in ("rank", "section", "density", "events", "class_pixels"):
        table.add_column(column, justify="left" if column == "section" else "right")
    for row in summary["top"]:
        table.add_row(str(row["rank"]), row["section"], f"{row['density']:.4f}",
                      str(row["events"]), str(row["class_pixels"]))
    console.stdout.print(table)
    for path in summary["outputs"]:
        print(path)
