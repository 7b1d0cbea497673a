"""Stage 2: forgetting and switch heat maps of a training run (paper eq. 1-3, Fig. 2).

The heat maps of ``train`` live in ``<workdir>/heatmap/``; those of a retraining run beside
it, in ``<workdir>/retrain/<aug>/seed<k>/heatmap/``, so the report finds every run's maps
at a predictable place.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import save_npz, write_text
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.data.geometry import (NUMBERS, Geometry, recorded, section_frame,
                                    section_numbers)
from falsecli.method.forgetting import EventMaps, SectionStats, event_maps
from falsecli.method.history import Tracking, load_tracking
from falsecli.stages import Step
from falsecli.stages.datamaps import write_datamaps

FORGETTING_NPZ = "forgetting.npz"
SWITCH_NPZ = "switch.npz"
NEVER_LEARNED_NPZ = "never_learned.npz"
SUMMARY_CSV = "summary.csv"
#: folder of the figures, one ``<section>.png`` each
FIGURES = "figures"


def figure_path(section: str) -> str:
    """The Fig. 2-style figure of ``section``, relative to the heat-map folder."""
    return f"{FIGURES}/{section}.png"


#: each map file: the :class:`EventMaps` field it holds, and that field's dtype
MAPS = {FORGETTING_NPZ: ("forgetting", np.uint16), SWITCH_NPZ: ("switch", np.uint16),
        NEVER_LEARNED_NPZ: ("never_learned", np.bool_)}
#: sections listed in the summary dict (all are in summary.csv)
TOP = 5


def load_heatmap(workdir: Path, run: str = "train", *, for_stage: str) -> EventMaps:
    """Read back the heat maps that :func:`heatmap` wrote for ``run`` (for rank, report).

    Refuses maps made from an earlier version of ``run`` (redone since): they would be read
    against the new run's labels and sections.
    """
    run = layout.parse_run(run, "heatmap.run", workdir).name
    stage = Stage(Path(workdir), layout.heatmap_folder(run))
    manifest = stage.manifest()
    redo = layout.command(stage.name)
    if manifest is None:
        raise FalseCliError(f"{for_stage}: no heat maps in {stage.path} — run "
                            f"'falsecli {redo} -w {workdir}' first")
    if not isinstance(manifest.get("epochs"), int) or manifest.get("never_learned") not in (
            "zero", "max"):
        raise FalseCliError(f"{stage.manifest_path}: no epochs or never_learned, so not a "
                            f"heatmap manifest — redo it with 'falsecli {redo} --force'")
    source = Stage(Path(workdir), run)
    source.require(for_stage)
    if manifest["inputs"].get(run) != source.digest():
        raise FalseCliError(f"{for_stage}: the heat maps in {stage.path} are from an earlier "
                            f"{run} run (redone since) — run 'falsecli {redo} --force "
                            f"-w {workdir}' first")
    tracking = load_tracking(source.path)
    maps = {}
    for file, (key, dtype) in MAPS.items():
        path = stage.path / file
        try:
            with np.load(path, allow_pickle=False) as npz:
                images = dict(npz.items())
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise FalseCliError(f"{path}: unreadable ({exc or 'empty'}) — redo it with "
                                f"'falsecli {redo} --force'") from None
        wrong = next((k for k, a in images.items() if a.dtype != dtype), None)
        if wrong is not None:
            raise FalseCliError(f"{path}: map {wrong} is {images[wrong].dtype}, not "
                                f"{np.dtype(dtype).name} — redo it with 'falsecli {redo} "
                                "--force'")
        maps[key] = tracking.flatten(images, path)
    return EventMaps(tracking, int(manifest["epochs"]), str(manifest["never_learned"]),
                     maps["forgetting"], maps["switch"], maps["never_learned"])


def _summary_csv(stats: SectionStats, geometries: dict[str, Geometry]) -> str:
    """summary.csv: one row per section, with its survey line numbers; density is empty where
    the section lacks the class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", *NUMBERS, "split", "pixels", "events", "switch_events",
                     "never_learned"]
                    + [f"{c}_{k}" for c in stats.classes for k in ("pixels", "events",
                                                                     "density")])
    density = stats.density("forgetting")
    for i, s in enumerate(stats.sections):
        per_class = []
        for k in range(len(stats.classes)):
            d = density[i, k]
            per_class += [int(stats.class_pixels[i, k]), int(stats.class_events[i, k]),
                          "" if np.isnan(d) else float(d)]
        numbers = section_numbers(geometries, s.split, s.axis, s.index)
        writer.writerow([s.name, *numbers.values(), s.split, int(stats.pixels[i]),
                         int(stats.events[i]), int(stats.switch_events[i]),
                         int(stats.never_learned[i]), *per_class])
    return buf.getvalue()


def _seismic(run_manifest: dict[str, Any], run: str, tracking: Tracking,
             names: list[str]) -> dict[str, np.ndarray]:
    """Seismic of the drawn sections, from the data the run was trained on."""
    from falsecli.data.dataset import load_dataset

    ds = load_dataset(run_manifest["config"])
    splits = list(dict.fromkeys(tracking.section(n).split for n in names))
    by_name = {s.name: s for s in ds.tracked(splits)}
    out = {}
    for name in names:
        section = by_name.get(name)
        if section is None or tuple(section.shape) != tracking.section(name).shape:
            raise FalseCliError(f"section {name} of {tracking.path} is not in the data of "
                                f"{run}'s config any more — the data changed since training; "
                                "restore it or retrain")
        out[name] = np.asarray(ds.raw(section), dtype=np.float32)
    return out


def _figure_sections(cfg: Config, tracking: Tracking, stats: SectionStats | None) -> list[str]:
    """heatmap.sections (validated), else the heatmap.figures sections with most events."""
    names = list(cfg["heatmap"]["sections"])
    for name in names:
        tracking.section(name)
    if names or stats is None:
        return names
    order = np.argsort(-stats.events, kind="stable")[: max(cfg["heatmap"]["figures"], 0)]
    return [stats.sections[i].name for i in order]


def heatmap(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Stage 2: count every tracked pixel's forgetting and switch events over the first T
    epochs; write the maps, a per-section summary and Fig. 2-style figures."""
    opts = cfg["heatmap"]
    run = opts["run"]
    name = layout.heatmap_folder(run)
    source = Stage(Path(workdir), run)
    run_manifest = source.require(name)
    tracking = load_tracking(source.path)
    T = tracking.window(opts["epochs"])
    _figure_sections(cfg, tracking, None)  # unknown names fail before anything is written
    geometries = recorded(run_manifest)
    with stage_run(workdir, name, cfg, upstream=[source], force=force) as out:
        console.log(f"{name}: counting events of {tracking.n_pixels:,} pixels over {T} epochs")
        maps = event_maps(tracking, T, opts["never_learned"])
        stats = maps.stats()
        for file, (key, _) in MAPS.items():
            save_npz(out.out(file), **tracking.images(getattr(maps, key)))
        write_text(out.out(SUMMARY_CSV), _summary_csv(stats, geometries))
        drawn = _figure_sections(cfg, tracking, stats)
        if drawn:
            _draw(out, maps, stats, _seismic(run_manifest, run, tracking, drawn), drawn,
                  geometries)
        datamaps = write_datamaps(out, cfg, source.path, tracking, drawn, geometries)
        out.extra.update(run=run, epochs=T, never_learned=opts["never_learned"],
                         **{k: v for k, v in datamaps.items() if k != "line"})
    summary = _summary(out.path, name, run, maps, stats, [out.path / rel for rel in out.outputs])
    summary["lines"].append(datamaps.pop("line"))
    return {**summary, "datamaps": datamaps}


def _draw(out: Any, maps: EventMaps, stats: SectionStats, seismic: dict[str, np.ndarray],
          names: list[str], geometries: dict[str, Geometry]) -> None:
    """``figures/<section>.png`` on one colour scale (the largest count of any tracked pixel)."""
    from falsecli.present.figures import save_figure, section_figure

    tracking = maps.tracking
    vmax = max(int(maps.forgetting.max(initial=0)), 1)
    labels = tracking.images(np.asarray(tracking.labels))
    heat = tracking.images(maps.forgetting)
    events = dict(zip((s.name for s in stats.sections), stats.events.tolist()))
    with console.progress() as bar:
        task = bar.add_task(f"{out.stage.name}: figures", total=len(names), info="")
        for name in names:
            section = tracking.section(name)
            frame = section_frame(geometries, section.split, section.axis, section.index)
            where = (f"{name} ({section.split})" if frame is None
                     else f"{frame.title} ({name}, {section.split})")
            title = f"{where}: {events[name]:,} forgetting events in {maps.epochs} epochs"
            fig = section_figure(seismic[name], labels[name], heat[name],
                                 classes=tracking.classes, ignore_index=tracking.ignore_index,
                                 title=title, vmax=vmax, frame=frame)
            save_figure(fig, out.out(figure_path(name)))
            bar.advance(task)


def _summary(path: Path, name: str, run: str, maps: EventMaps, stats: SectionStats,
             outputs: list[Path]) -> dict[str, Any]:
    totals = {"sections": len(stats.sections), "pixels": int(stats.pixels.sum()),
              "events": int(stats.events.sum()), "switch_events": int(stats.switch_events.sum()),
              "never_learned": int(stats.never_learned.sum())}
    order = np.argsort(-stats.events, kind="stable")[:TOP]
    top = [{"section": stats.sections[i].name, "split": stats.sections[i].split,
            "events": int(stats.events[i]), "pixels": int(stats.pixels[i])} for i in order]
    line = (f"{name}: {totals['events']:,} forgetting and {totals['switch_events']:,} switch "
            f"events in {totals['sections']} sections over {maps.epochs} epochs")
    if top:
        line += f"; most forgotten: {top[0]['section']} ({top[0]['events']:,})"
    return {"stage": name, "run": run, "epochs": maps.epochs,
            "never_learned": maps.never_learned_mode, "path": str(path), "totals": totals,
            "top": top, "lines": [line], "outputs": [str(p) for p in outputs]}


STEP = Step("heatmap", heatmap, lambda cfg, workdir: [cfg["heatmap"]["run"]])
