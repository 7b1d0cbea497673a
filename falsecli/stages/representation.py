"""``falsecli trace --method representation``: a query region's representation at a traced
layer split into the shares of training that built it — per training section and per class,
per epoch — from the shares a run recorded with ``train.trace``.

The computation is :mod:`falsecli.method.representation`'s; this module picks the data,
writes ``trace/<section>/`` (the folder of ``--method tracin``, which a redo replaces) and
draws it. Every number adds up: the initial weights' part, the shares and the rounding
residual sum to the final representation's value, written beside them in ``query.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from falsecli.core import console, layout
from falsecli.core.config import Config
from falsecli.core.errors import FalseCliError
from falsecli.core.files import write_csv, write_json
from falsecli.core.manifest import Stage
from falsecli.core.swap import stage_run
from falsecli.stages.tracequery import (EPOCHS_PNG, OPPONENTS_PNG, PROPONENTS_PNG, QUERY_JSON,
                                        query_region, section_name, tracked_section)

#: per share set (section, class) and share: its contribution, rank
REPRESENTATION_CSV = "representation.csv"
#: the same per snapshot epoch, accumulated up to it
REPRESENTATION_EPOCHS_CSV = "representation_epochs.csv"
HOW = "falsecli train --force --set 'train.trace={layers: [head], by: [section, class], every: 1}'"


def representation(cfg: Config, workdir: Path, *, force: bool = False) -> dict[str, Any]:
    """Decompose ``trace.layer``'s output over ``trace.section``'s query region."""
    from falsecli.core.runtime import resolve_device
    from falsecli.data.dataset import load_dataset
    from falsecli.method import representation as rep
    from falsecli.method.model import MODEL, load_model

    opts = cfg["trace"]
    run, name, layer = opts["run"], section_name(opts), opts["layer"]
    workdir = Path(workdir)
    source = Stage(workdir, run)
    folder = layout.trace_folder(run, name)
    source.require(folder)
    snaps, own = _snapshots(source.path, run, layer, workdir)
    epochs = list(snaps)
    last = snaps[epochs[-1]]
    device = resolve_device(cfg["train"]["device"])
    model, payload = load_model(source.path / MODEL, device)
    ds = load_dataset(payload["config"])
    section = tracked_section(ds, payload["config"], run, name)
    labels = ds.label(section)
    region, what = query_region(cfg, payload["config"], labels)
    margin = layer == rep.CLASSIFIER
    x = rep.layer_input(model, layer, ds.image(section))
    module = dict(model.named_modules())[layer]
    readout, _ = rep.readout(module, x, region, labels, ds.ignore_index, margin)

    values, parts = _values(readout, snaps, own, device)
    primary = "margin" if margin else "along"
    options = {"run": run, "section": name, "query": what, "method": "representation",
               "layer": layer, "epochs": epochs, "primary": primary,
               "query_pixels": int((region & (labels != ds.ignore_index)).sum()),
               "final": readout.final, **_balance(values[epochs[-1]], parts, readout.final)}
    options["initial"] = options["balance"].pop("initial")
    rows = _rows(values[epochs[-1]], last["names"], primary)
    with stage_run(workdir, folder, cfg, upstream=[source], force=force,
                   device=str(device)) as out:
        console.log(f"{folder}: {layer} over {options['query_pixels']} pixels ({what}), "
                    f"{len(epochs)} snapshots")
        _write(out, rows, values, snaps, list(readout.grads), options)
        _draw(out, ds, section, region, labels, rows, module, x, readout, last, own, values,
              options, opts["top"])
        out.extra.update({k: v for k, v in options.items() if k != "final"})
    top = [r for r in rows if r["by"] == rows[0]["by"]]
    return {"stage": folder, **options, "proponents": top[:opts["top"]],
            "opponents": top[::-1][:opts["top"]],
            "outputs": [str(out.path / rel) for rel in out.outputs]}


def _write(out: Any, rows: list[dict[str, Any]], values: dict[int, Any],
           snaps: dict[int, dict[str, Any]], directions: list[str],
           options: dict[str, Any]) -> None:
    """representation.csv, representation_epochs.csv and query.json."""
    write_csv(out.out(REPRESENTATION_CSV), ["by", "share", "rank", *directions], rows)
    write_csv(out.out(REPRESENTATION_EPOCHS_CSV), ["epoch", "by", "share", *directions],
              [{"epoch": e, "by": by, "share": share,
                **{k: float(v[k][i]) for k in directions}}
               for e, sets in values.items() for by, v in sets.items()
               for i, share in enumerate(snaps[e]["names"][by])])
    write_json(out.out(QUERY_JSON), options)


def _snapshots(run_path: Path, run: str, layer: str, workdir: Path
               ) -> tuple[dict[int, dict[str, Any]], dict[str, str]]:
    """The run's snapshots by epoch, and the traced parameters of ``layer`` (name within the
    layer -> name in the network)."""
    from falsecli.method.tracing import load_snapshot, snapshot_epochs

    epochs = snapshot_epochs(run_path)
    if not epochs:
        raise FalseCliError(f"trace: {run_path} recorded no shares — train it again "
                            f"tracing them: '{HOW} -w {workdir}'")
    snaps = {e: load_snapshot(run_path, e) for e in epochs}
    final = snaps[epochs[-1]]["final"]
    own = {n.removeprefix(layer + "."): n for n in final if n.startswith(layer + ".")}
    if not own:
        traced = sorted({n.rsplit(".", 1)[0] for n in final})
        raise FalseCliError(f"config key 'trace.layer' is {layer!r}, which {run} did not trace; "
                            f"use one of {', '.join(traced)}")
    return snaps, own


def _values(readout: Any, snaps: dict[int, dict[str, Any]], own: dict[str, str], device: Any
            ) -> tuple[dict[int, dict[str, dict[str, np.ndarray]]], dict[str, Any]]:
    """Per epoch and share set, every share's contribution along each direction; and those of
    the initial weights and of each set's residual (after the last epoch)."""
    from falsecli.method.representation import read

    def local(params: dict[str, Any], stacked: bool = True) -> dict[str, Any]:
        return {k: (params[n] if stacked else params[n][None]).to(device)
                for k, n in own.items()}

    last = snaps[max(snaps)]
    values = {e: {by: read(readout, local(s["shares"][by])) for by in s["shares"]}
              for e, s in snaps.items()}
    parts = {"initial": read(readout, local(last["initial"], False)),
             **{f"residual_{by}": read(readout, local(r, False))
                for by, r in last["residual"].items()}}
    return values, parts


def _balance(values: dict[str, dict[str, np.ndarray]], parts: dict[str, dict[str, float]],
             final: dict[str, float]) -> dict[str, Any]:
    """``{"balance": ...}``: the initial weights' part, and per share set and direction the
    shares' sum, the residual and how far their total is from the final value (relative)."""
    out: dict[str, Any] = {"initial": {k: float(v[0]) for k, v in parts["initial"].items()}}
    for by, v in values.items():
        sums = {k: float(a.sum()) for k, a in v.items()}
        res = {k: float(a[0]) for k, a in parts[f"residual_{by}"].items()}
        out[by] = {"shares": sums, "residual": res, "relative_error": {
            k: abs(out["initial"][k] + sums[k] + res[k] - final[k]) / max(abs(final[k]), 1e-30)
            for k in final}}
    return {"balance": out}


def _rows(values: dict[str, dict[str, np.ndarray]], names: dict[str, list[str]],
          primary: str) -> list[dict[str, Any]]:
    """Rows of representation.csv: per set (sections first), shares by ``primary``, largest
    first."""
    rows = []
    for by in sorted(values, key=lambda b: b != "section"):
        v = values[by]
        order = np.lexsort((np.arange(len(v[primary])), -v[primary]))
        rows += [{"by": by, "share": names[by][i], "rank": r + 1,
                  **{k: float(a[i]) for k, a in v.items()}} for r, i in enumerate(order)]
    return rows


def _draw(out: Any, ds: Any, section: Any, region: np.ndarray, labels: np.ndarray,
          rows: list[dict[str, Any]], module: Any, x: Any, readout: Any, last: dict[str, Any],
          own: dict[str, str], values: dict[int, dict[str, dict[str, np.ndarray]]],
          options: dict[str, Any], top: int) -> None:
    """Proponent and opponent sections (each with where in the query it contributed), and
    the class shares' contributions per snapshot epoch."""
    from falsecli.method.representation import pixel_map
    from falsecli.present.figures import save_figure
    from falsecli.present.trace_figures import epoch_class_figure, influence_figure

    primary = options["primary"]
    def title(what: str) -> str:
        return (f"{options['section']} ({options['query']}, {options['query_pixels']} px): "
                f"{what} of {options['run']}'s {options['layer']} ({primary})")

    by_name = {s.name: s for s in ds.sections("train")}
    ranked = [r for r in rows if r["by"] == "section" and r["share"] in by_name]
    names = last["names"].get("section", [])
    hide = ~(region & (labels != ds.ignore_index))
    for kind, chosen, png in (("proponents", ranked[:top], PROPONENTS_PNG),
                              ("opponents", ranked[::-1][:top], OPPONENTS_PNG)):
        panels = []
        for r in chosen:
            share = {k: last["shares"]["section"][n][names.index(r["share"])].to(x.device)
                     for k, n in own.items()}
            panels.append({"name": r["share"], "score": r[primary],
                           "labels": ds.label(by_name[r["share"]]), "hide": hide,
                           "map_title": "its part, in the query",
                           "map": pixel_map(module, x, share, readout.directions[primary])})
        fig = influence_figure(ds.image(section), labels, region, panels, classes=ds.classes,
                               ignore_index=ds.ignore_index, title=title(kind),
                               unit=f"contribution ({primary})")
        save_figure(fig, out.out(png))
    if "class" in last["names"]:
        epochs = options["epochs"]
        cumulative = np.array([values[e]["class"][primary][:len(ds.classes)] for e in epochs])
        per_epoch = np.diff(cumulative, axis=0, prepend=0)
        fig = epoch_class_figure(per_epoch, epochs, ds.classes,
                                 title=title("contribution by epoch and class"),
                                 unit=f"contribution ({primary})",
                                 rows="epoch (steps since the previous row)")
        save_figure(fig, out.out(EPOCHS_PNG))


def print_representation(summary: dict[str, Any]) -> None:
    """Top proponent and opponent shares, and the balance, on stdout."""
    from rich.table import Table

    primary = summary["primary"]
    for kind in ("proponents", "opponents"):
        table = Table(title=f"{summary['section']} ({summary['query']}): {kind} of "
                            f"{summary['run']}'s {summary['layer']} ({primary})")
        for column in ("rank", "by", "share", primary):
            table.add_column(column, justify="left" if column in ("by", "share") else "right")
        for row in summary[kind]:
            table.add_row(str(row["rank"]), row["by"], row["share"], f"{row[primary]:.3e}")
        console.stdout.print(table)
    for by, b in summary["balance"].items():
        console.stdout.print(
            f"{by}: final {summary['final'][primary]:.4e} = initial "
            f"{summary['initial'][primary]:.4e} + shares {b['shares'][primary]:.4e} + "
            f"residual {b['residual'][primary]:.1e} (relative error "
            f"{b['relative_error'][primary]:.1e})")
    for path in summary["outputs"]:
        print(path)
