"""The heatmap stage's data maps: per tracked section the confidence, variability and
label-issue maps, the likely label issues as ranked regions, per-class summaries and the
figures (definitions: docs/definitions.md, "Data maps").

The maps come from the run's accumulators (``tracking/datamap.npz``), which cover every
recorded epoch: ``heatmap.epochs`` (a window of the forgetting history) does not apply to
them. The label-issue ranking is a list of places to re-check, not a verdict.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import read_csv, save_npz, write_csv
from falsecli.core.manifest import Stage
from falsecli.data.geometry import Geometry, section_frame, volume_of
from falsecli.method.datamaps import (CLASS_COLUMNS, Region, class_summary, has_datamap,
                                      issue_score, load_datamap, section_regions)
from falsecli.method.history import TrackedSection, Tracking

CONFIDENCE_NPZ = "confidence.npz"
VARIABILITY_NPZ = "variability.npz"
ISSUE_SCORE_NPZ = "issue_score.npz"
ISSUE_MASK_NPZ = "issue_mask.npz"
LABEL_ISSUES_CSV = "label_issues.csv"
CLASSES_CSV = "datamap_classes.csv"
CARTOGRAPHY_PNG = "cartography.png"
#: folder of the per-section data-map figures, one ``<section>.png`` each
FIGURES = "datamaps"
#: the columns of label_issues.csv, one row per region, best first
ISSUE_COLUMNS = ("section", "inline", "crossline", "top", "bottom", "given_class",
                 "predicted_class", "pixels", "score")


def figure_path(section: str) -> str:
    """The data-map figure of ``section``, relative to the heat-map folder."""
    return f"{FIGURES}/{section}.png"


def section_position(section: TrackedSection, cols: tuple[int, int],
                     geometry: Geometry | None = None) -> tuple[str, str]:
    """(inline, crossline) of a region spanning traces ``cols`` of ``section``: the section's
    own line number on its axis, the range of line numbers it spans on the other (survey
    numbers from ``geometry``; indices into the volume without one)."""
    own, ends = section.index, cols
    if geometry is not None:
        across = geometry.xlines if section.axis == "inline" else geometry.ilines
        own, ends = geometry.line(section.axis, section.index), (int(across[cols[0]]),
                                                                 int(across[cols[1]]))
    span = str(ends[0]) if ends[0] == ends[1] else f"{ends[0]}-{ends[1]}"
    return (str(own), span) if section.axis == "inline" else (span, str(own))


def _issue_row(region: Region, classes: list[str], geometries: Mapping[str, Geometry]
               ) -> dict[str, Any]:
    inline, crossline = section_position(region.section, region.cols,
                                         geometries.get(volume_of(region.section.split)))
    return {"section": region.section.name, "inline": inline, "crossline": crossline,
            "top": region.rows[0], "bottom": region.rows[1],
            "given_class": classes[region.given], "predicted_class": classes[region.predicted],
            "pixels": region.pixels, "score": round(region.score, 4)}


def write_datamaps(out: Any, cfg: Config, run_path: Path, tracking: Tracking,
                   drawn: list[str], geometries: Mapping[str, Geometry] | None = None
                   ) -> dict[str, Any]:
    """Write the data maps of the run at ``run_path`` into the open heatmap stage ``out``;
    returns what the stage summary says of them (only a line for a run trained before data
    maps were kept). ``geometries``: the run's volumes', for the survey line numbers."""
    if not has_datamap(run_path):
        line = f"{out.stage.name}: no data maps — {run_path} was trained without them"
        console.log(line)
        return {"line": line}
    dm = load_datamap(run_path, tracking)
    labelled = tracking.labelled
    score = issue_score(dm, labelled)
    mask = score >= cfg["heatmap"]["issue_margin"]
    found = section_regions(tracking, dm, score, mask)
    maps = {CONFIDENCE_NPZ: dm.confidence, VARIABILITY_NPZ: dm.variability.astype(np.float32),
            ISSUE_SCORE_NPZ: score, ISSUE_MASK_NPZ: mask}
    for file, values in maps.items():
        save_npz(out.out(file), **tracking.images(values))
    write_csv(out.out(LABEL_ISSUES_CSV), ISSUE_COLUMNS,
              [_issue_row(r, tracking.classes, geometries or {}) for r in found])
    write_csv(out.out(CLASSES_CSV), CLASS_COLUMNS,  # classes with tracked pixels only
              [row for row in class_summary(tracking, dm, mask) if row["pixels"]])
    window = (f"epochs {dm.late_from}-{dm.epochs}" if dm.late_epochs else
              f"empty: train.late_from={dm.late_from} > {dm.epochs} epochs")
    if not dm.late_epochs:
        console.log(f"{out.stage.name}: no late window ({window}), so no label issue")
    _draw(out, tracking, dm, score, mask, drawn, window, geometries or {})
    return {"issue_pixels": int(mask.sum()), "issue_regions": len(found),
            "late_window": window, "line": f"{out.stage.name}: {int(mask.sum()):,} pixels "
            f"in {len(found)} regions are likely label issues (late window {window}); "
            f"ranked in {LABEL_ISSUES_CSV}"}


def _draw(out: Any, tracking: Tracking, dm: Any, score: np.ndarray, mask: np.ndarray,
          drawn: list[str], window: str, geometries: Mapping[str, Geometry]) -> None:
    from falsecli.present.datamap_figures import cartography_figure, datamap_figure
    from falsecli.present.figures import save_figure

    labelled = tracking.labelled
    labels = np.asarray(tracking.labels)
    save_figure(cartography_figure(
        dm.confidence[labelled], dm.variability[labelled], labels[labelled], tracking.classes,
        f"data map of {int(labelled.sum()):,} tracked pixels over {dm.epochs} epochs"),
        out.out(CARTOGRAPHY_PNG))
    images = {k: tracking.images(v) for k, v in (
        ("labels", labels), ("confidence", dm.confidence), ("variability", dm.variability),
        ("score", score), ("mask", mask))}
    for name in drawn:
        s = tracking.section(name)
        frame = section_frame(geometries, s.split, s.axis, s.index)
        where = name if frame is None else f"{frame.title} ({name})"
        fig = datamap_figure(*(images[k][name] for k in images), classes=tracking.classes,
                             ignore_index=tracking.ignore_index, frame=frame,
                             title=f"{where}: data map over {dm.epochs} epochs; label issues "
                                   f"over the late window ({window})")
        save_figure(fig, out.out(figure_path(name)))


def has_issue_mask(heatmap_dir: Path) -> bool:
    """Whether the heatmap stage in ``heatmap_dir`` drew data maps."""
    return (Path(heatmap_dir) / ISSUE_MASK_NPZ).exists()


def load_issue_mask(heatmap_dir: Path, tracking: Tracking) -> np.ndarray:
    """bool (P,): the likely label issues a heatmap stage wrote (for export)."""
    path = Path(heatmap_dir) / ISSUE_MASK_NPZ
    try:
        with np.load(path, allow_pickle=False) as npz:
            images = dict(npz.items())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FalseCliError(f"{path}: unreadable ({exc or 'missing'}) — redo it with "
                            "'falsecli heatmap --force'") from None
    return tracking.flatten(images, path).astype(bool)


def data_maps_summary(workdir: Path, run: str = "train"
                      ) -> tuple[list[dict[str, Any]], str, int] | None:
    """(per-class rows, late window, issue regions) of ``run``'s heat maps, None when they
    hold no data maps."""
    stage = Stage(Path(workdir), layout.heatmap_folder(run))
    manifest = stage.manifest()
    if manifest is None or not has_issue_mask(stage.path) or "late_window" not in manifest:
        return None
    return (load_class_summary(workdir, run), str(manifest["late_window"]),
            int(manifest["issue_regions"]))


def load_label_issues(workdir: Path, run: str = "train") -> list[dict[str, Any]]:
    """The rows of ``run``'s label_issues.csv, best first, typed."""
    columns = {c: str for c in ISSUE_COLUMNS}
    columns.update(top=int, bottom=int, pixels=int, score=float)
    return read_csv(workdir, layout.heatmap_folder(run), LABEL_ISSUES_CSV, columns)


def load_class_summary(workdir: Path, run: str = "train") -> list[dict[str, Any]]:
    """The per-class data-map summary of ``run``'s heat maps (for the report): the classes
    with tracked pixels."""
    columns = {"class": str, "pixels": int, "confidence": float, "variability": float,
               "easy": float, "ambiguous": float, "hard": float, "issue_pixels": int}
    return read_csv(workdir, layout.heatmap_folder(run), CLASSES_CSV, columns)
