"""``falsecli inspect``: load and validate the configured data and summarise what training
will see, so bad data fails here first, before a run starts."""

from __future__ import annotations

from typing import Any

import numpy as np

from falsecli.core.config import Config
from falsecli.core.console import stdout
from falsecli.data.dataset import load_dataset
from falsecli.data.volumes import Volume, blocks, label_counts

def _describe(vol: Volume, classes: list[str], ignore_index: int) -> dict[str, Any]:
    """Shape, dtype, sample range and class shares of one volume (inline blocks at a time)."""
    lo, hi = np.inf, -np.inf
    for _, block in blocks(vol.seismic):
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    out: dict[str, Any] = {"name": vol.name, "source": vol.source,
                           "labels": vol.labels_source or None, "shape": list(vol.seismic.shape),
                           "dtype": str(vol.seismic.dtype), "min": lo, "max": hi,
                           "geometry": vol.geometry.describe()}
    if vol.labels is not None:
        counts = label_counts(vol.labels)
        labelled = sum(n for v, n in counts.items() if v != ignore_index)
        out["labelled_pixels"] = labelled
        out["ignored_pixels"] = counts.get(ignore_index, 0)
        out["class_shares"] = {name: counts.get(k, 0) / labelled if labelled else 0.0
                               for k, name in enumerate(classes)}
    return out


def inspect_data(cfg: Config) -> dict[str, Any]:
    """``falsecli inspect``: load and validate the data, summarise what training will see."""
    ds = load_dataset(cfg)
    sections = {"train": len(ds.sections("train")), "val": len(ds.sections("val"))}
    for vol in ds.tests:
        sections[vol.name] = len(ds.sections(vol.name))
        sections[f"{vol.name}:all"] = len(ds.sections(f"{vol.name}:all"))
    mean, std = ds.stats
    return {"stage": "inspect", "outputs": [], "source": cfg["data"]["source"],
            "classes": ds.classes, "ignore_index": ds.ignore_index, "val_every": ds.val_every,
            "volumes": [_describe(v, ds.classes, ds.ignore_index) for v in ds.volumes.values()],
            "sections": sections, "normalisation": {"mean": mean, "std": std}}


def print_inspection(summary: dict[str, Any]) -> None:
    """The inspect summary as tables on stdout."""
    from rich import box
    from rich.table import Table

    vols = summary["volumes"]
    style = {"box": box.SIMPLE_HEAD, "pad_edge": False, "title_justify": "left"}
    table = Table(title=f"volumes (data.source: {summary['source']})", **style)
    for col in ("volume", "shape", "dtype", "min", "max"):
        table.add_column(col, justify="right" if col in ("min", "max") else "left", no_wrap=True)
    for v in vols:
        table.add_row(v["name"], " x ".join(str(n) for n in v["shape"]), v["dtype"],
                      f"{v['min']:.6g}", f"{v['max']:.6g}")
    stdout.print(table)
    for v in vols:   # paths unwrapped, so they can be copied
        labels = v["labels"] or ("with the seismic" if "class_shares" in v else "none")
        stdout.print(f"  {v['name']}: seismic {v['source']}, labels {labels}")

    for v in vols:
        stdout.print(f"  {v['name']}: {geometry_line(v['geometry'])}")

    labelled = [v for v in vols if "class_shares" in v]
    table = Table(title="class pixel shares (of labelled pixels)", **style)
    table.add_column("id", justify="right")
    table.add_column("class")
    for v in labelled:
        table.add_column(v["name"], justify="right")
    for k, name in enumerate(summary["classes"]):
        table.add_row(str(k), name, *(f"{v['class_shares'][name]:.2%}" for v in labelled))
    table.add_row("", f"ignored ({summary['ignore_index']})",
                  *(f"{v['ignored_pixels']:,} px" for v in labelled))
    stdout.print(table)

    sec = summary["sections"]
    every = summary["val_every"]
    stdout.print(f"sections: {sec['train']} train, {sec['val']} tracked val (inlines and "
                 f"crosslines with index % {every} == 0)")
    for v in vols[1:]:
        stdout.print(f"  {v['name']}: {sec[v['name']]} tracked, {sec[v['name'] + ':all']} "
                     "inlines evaluated")
    norm = summary["normalisation"]
    stdout.print(f"normalisation (training sections): mean {norm['mean']:.6g}, "
                 f"std {norm['std']:.6g}")


def geometry_line(g: dict[str, Any]) -> str:
    """A volume's geometry in one line: line ranges and steps, samples, CDP extent."""
    def lines(key: str) -> str:
        d = g[key]
        if d["count"] == 1:
            return f"{key} {d['first']} only"
        step = "irregular steps" if d["step"] is None else f"step {d['step']}"
        return f"{key}s {d['first']}-{d['last']} ({d['count']}, {step})"

    if g["unit"] == "sample":
        samples = f"samples 0-{g['sample_end']:g} (indices: a .npy or synthetic volume)"
    else:
        what = "time" if g["unit"] == "ms" else "depth"
        samples = (f"{what} {g['sample_start']:g}-{g['sample_end']:g} {g['unit']} every "
                   f"{g['sample_interval']:g} {g['unit']}")
    out = f"{lines('inline')}, {lines('crossline')}, {samples}"
    if "cdp_x" in g:
        out += (f"; CDP X {g['cdp_x'][0]:.1f}-{g['cdp_x'][1]:.1f}, "
                f"Y {g['cdp_y'][0]:.1f}-{g['cdp_y'][1]:.1f}")
    return out
