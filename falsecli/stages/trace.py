"""``falsecli trace``: which training sections made the network learn, or forget, a region.

Scores every training section of a run by its TracIn influence on the loss over a query
region of one tracked section (a class's pixels, a mask such as a high-density region of
the heat map, or the whole section), from the weights the run kept (``train.keep_every``);
splits each score by the classes of the training section's pixels and by checkpoint. The
computation is :mod:`falsecli.method.influence`'s; this module picks the data, writes
``trace/<section>/`` (``<run>/trace/<section>/`` for a retraining run) and draws it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import write_csv, write_json, write_text
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.data.geometry import NUMBERS, Geometry
from falsecli.stages import Step
from falsecli.stages.tracequery import (EPOCHS_PNG, OPPONENTS_PNG, PROPONENTS_PNG, QUERY_JSON,
                                        query_region, section_name, tracked_section,
                                        trained_on)

INFLUENCE_CSV = "influence.csv"
#: per checkpoint and class, summed over the training sections (the epoch-by-class plot)
EPOCHS_CSV = "epochs.csv"


def _checkpoints(run_path: Path, run: str, workdir: Path) -> list[Any]:
    from falsecli.method.influence import Checkpoint
    from falsecli.method.model import kept_epochs, load_kept

    epochs = kept_epochs(run_path)
    if not epochs:
        how = f"falsecli {layout.command(run)} --force --set train.keep_every=5"
        raise FalseCliError(f"trace: {run_path} kept no weights during training — train it "
                            f"again keeping them every k epochs: '{how} -w {workdir}'")
    out = []
    for epoch in epochs:
        kept = load_kept(run_path, epoch)
        out.append(Checkpoint(epoch, float(kept["lr"]), kept["state_dict"]))
    return out


def trace(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Explain ``trace.section``'s query region by ``trace.method``."""
    if cfg["trace"]["method"] == "representation":
        from falsecli.stages.representation import representation
        return representation(cfg, workdir, force=force)
    return _tracin(cfg, workdir, force=force)


def _tracin(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Score every trained-on section of ``trace.run`` by its influence on
    ``trace.section``'s query region."""
    from falsecli.core.runtime import resolve_device
    from falsecli.data.dataset import load_dataset
    from falsecli.method import influence
    from falsecli.method.model import MODEL, load_model
    from falsecli.method.pool import by_shape

    opts = cfg["trace"]
    run, name = opts["run"], section_name(opts)
    workdir = Path(workdir)
    source = Stage(workdir, run)
    source.require(layout.trace_folder(run, name))
    checkpoints = _checkpoints(source.path, run, workdir)
    device = resolve_device(cfg["train"]["device"])
    model, payload = load_model(source.path / MODEL, device)
    run_cfg = payload["config"]
    ds = load_dataset(run_cfg)
    section = tracked_section(ds, run_cfg, run, name)
    labels = ds.label(section)
    region, what = query_region(cfg, run_cfg, labels)
    query = influence.Query(ds.image(section), labels, region)
    names = influence.parameter_names(model, opts["layers"])
    sections = trained_on(ds)
    n_params = sum(p.numel() for n, p in model.named_parameters() if n in names)
    n_batches = len(checkpoints) * sum(
        -(-len(g) // opts["batch_size"]) for g in by_shape(sections).values())
    folder = layout.trace_folder(run, name)
    pixels = int((region & (labels != ds.ignore_index)).sum())
    with stage_run(workdir, folder, cfg, upstream=[source], force=force,
                   device=str(device)) as out, console.progress() as bar:
        console.log(f"{folder}: {len(sections)} training sections x {len(checkpoints)} kept "
                    f"checkpoints, {n_params:,} parameters ({opts['layers']}), query: {what} "
                    f"({pixels} pixels)")
        task = bar.add_task("trace", total=n_batches, info="")
        scores = influence.class_scores(model, checkpoints, names, query, ds, sections,
                                        opts["batch_size"], lambda: bar.advance(task),
                                        normalize=opts["normalize"])
        rows = _rows(scores, sections, ds.classes, ds.train.geometry)
        top = opts["top"]
        maps = _top_maps(model, checkpoints, names, query, ds, sections, rows, opts)
        write_csv(out.out(INFLUENCE_CSV), ["section", *NUMBERS, "score", "rank", *ds.classes],
                  rows)
        per_epoch = scores.sum(0)  # (checkpoints, classes)
        epochs = [c.epoch for c in checkpoints]
        write_text(out.out(EPOCHS_CSV), _epochs_csv(per_epoch, epochs, ds.classes))
        options = {"run": run, "section": name, "query": what, "method": "tracin",
                   "normalize": opts["normalize"], "layers": opts["layers"],
                   "parameters": n_params, "epochs": epochs,
                   "lr": [c.lr for c in checkpoints], "query_pixels": pixels}
        write_json(out.out(QUERY_JSON), options)
        _draw(out, ds, section, query, rows, maps, per_epoch, epochs, options, top)
        out.extra.update(options)
    class_totals = dict(zip(ds.classes, scores.sum((0, 1)).tolist()))
    return {"stage": folder, **options, "training_sections": len(rows),
            "proponents": rows[:top], "opponents": rows[::-1][:top],
            "class_totals": class_totals,
            "outputs": [str(out.path / rel) for rel in out.outputs]}


def _top_maps(model: Any, checkpoints: list[Any], names: list[str], query: Any, ds: Any,
              sections: list[Any], rows: list[dict[str, Any]], opts: dict[str, Any]
              ) -> dict[str, np.ndarray]:
    """Per-pixel influence maps of the ``trace.top`` proponents and opponents (the sections
    the figures show), by name; only those: a map costs a backward pass per pixel batch."""
    from falsecli.method import influence

    top = opts["top"]
    chosen = list(dict.fromkeys(r["section"] for r in rows[:top] + rows[::-1][:top]))
    by_name = {s.name: s for s in sections}
    return dict(zip(chosen, influence.influence_maps(
        model, checkpoints, names, query, ds, [by_name[c] for c in chosen],
        opts["batch_size"], normalize=opts["normalize"])))


def _rows(scores: np.ndarray, sections: list[Any], classes: list[str], geometry: Geometry
          ) -> list[dict[str, Any]]:
    """Rows of influence.csv (with the training sections' line numbers), most positive first
    (ties: section order)."""
    totals = scores.sum((1, 2))
    order = np.lexsort((np.arange(len(totals)), -totals))
    per_class = scores.sum(1)
    return [{"section": sections[i].name,
             **geometry.numbers(sections[i].axis, sections[i].index),
             "score": float(totals[i]), "rank": r + 1,
             **{c: float(per_class[i, k]) for k, c in enumerate(classes)}}
            for r, i in enumerate(order)]


def _epochs_csv(per_epoch: np.ndarray, epochs: list[int], classes: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *classes])
    for epoch, row in zip(epochs, per_epoch):
        writer.writerow([epoch, *(repr(float(v)) for v in row)])
    return buf.getvalue()


def load_influence(path: Path) -> list[dict[str, Any]]:
    """The rows of a trace's ``influence.csv`` (``path``) in rank order: section, its line
    numbers (int, or '' where blank), score, rank and one float per class."""
    def value(key: str, text: str) -> Any:
        if key == "section" or (key in NUMBERS and not text):
            return text
        return int(text) if key in ("rank", *NUMBERS) else float(text)

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        out = [{k: value(k, v) for k, v in row.items()} for row in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise FalseCliError(f"{path}: missing or unreadable ({exc}) — redo the trace with "
                            "--force") from None
    return sorted(out, key=lambda row: row["rank"])


def _draw(out: Any, ds: Any, section: Any, query: Any, rows: list[dict[str, Any]],
          maps: dict[str, np.ndarray], per_epoch: np.ndarray, epochs: list[int],
          options: dict[str, Any], top: int) -> None:
    from falsecli.present.figures import save_figure
    from falsecli.present.trace_figures import epoch_class_figure, influence_figure

    by_name = {s.name: s for s in ds.sections("train")}
    frame = ds.volumes[section.volume].geometry.frame(section.axis, section.index)
    title = (f"{frame.title} ({options['section']}; {options['query']}, "
             f"{options['query_pixels']} px): "
             f"{{}} of {options['run']} ({options['layers']} layers, epochs "
             f"{', '.join(map(str, epochs))})")
    for kind, chosen, png in (("proponents", rows[:top], PROPONENTS_PNG),
                              ("opponents", rows[::-1][:top], OPPONENTS_PNG)):
        panels = [{"name": r["section"], "score": r["score"],
                   "labels": ds.label(by_name[r["section"]]), "map": maps[r["section"]],
                   "frame": ds.train.geometry.frame(by_name[r["section"]].axis,
                                                    by_name[r["section"]].index)}
                  for r in chosen]
        fig = influence_figure(query.image, query.labels, query.region, panels,
                               classes=ds.classes, ignore_index=ds.ignore_index,
                               title=title.format(kind), frame=frame)
        save_figure(fig, out.out(png))
    fig = epoch_class_figure(per_epoch, epochs, ds.classes,
                             title=title.format("influence by epoch and class"))
    save_figure(fig, out.out(EPOCHS_PNG))


def print_trace(summary: dict[str, Any]) -> None:
    """Top proponents and opponents as tables on stdout."""
    from rich.table import Table

    if summary["method"] == "representation":
        from falsecli.stages.representation import print_representation
        print_representation(summary)
        return
    classes = list(summary["class_totals"])
    for kind in ("proponents", "opponents"):
        table = Table(title=f"{summary['section']} ({summary['query']}): {kind} among "
                            f"{summary['training_sections']} training sections of "
                            f"{summary['run']}")
        for column in ("rank", "section", "score", "largest class share"):
            table.add_column(column, justify="left" if column == "section" else "right")
        for row in summary[kind]:
            main = max(classes, key=lambda c: abs(row[c]))
            table.add_row(str(row["rank"]), row["section"], f"{row['score']:.3e}",
                          f"{main} {row[main]:.2e}")
        console.stdout.print(table)
    for path in summary["outputs"]:
        print(path)


STEP = Step("trace", trace, lambda cfg, workdir: [cfg["trace"]["run"]],
            lambda cfg, workdir: {
                layout.trace_folder(cfg["trace"]["run"], cfg["trace"]["section"]): cfg})
