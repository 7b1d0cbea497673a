"""The trace's figures: training sections' influence on a query region, per pixel beside the
query and per kept epoch and class."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from falsecli.data.geometry import SectionFrame
from falsecli.present.figures import (DPI, MISSING, REGION_COLOR, facies_legend, label_cmap,
                                      mask_ignored, section_axes, seismic_limits)


def _diverging(values: Sequence[np.ndarray]) -> float:
    """The top of a symmetric colour scale that shows every value in ``values``."""
    return max([float(np.max(np.abs(v), initial=0)) for v in values] + [1e-30])


def influence_figure(image: np.ndarray, labels: np.ndarray, region: np.ndarray,
                     panels: Sequence[Mapping[str, Any]], *, classes: Sequence[str],
                     ignore_index: int, title: str, frame: SectionFrame | None = None,
                     unit: str = "lr x gradient product") -> Figure:
    """The query section (annotation above, seismic below, the query region outlined in
    magenta) beside training sections, each ``{"name", "score", "labels", "map"}`` (and
    ``"frame"``, its survey axes): its annotation above its per-pixel influence map (red:
    lowers the query loss, blue: raises it; one scale for all, symmetric about 0). A panel's
    ``hide`` (bool, the map's shape) blanks pixels of the map (default: the section's ignored
    pixels); ``map_title`` names it. ``frame``: the query section's survey axes."""
    n = len(classes)
    cols = 1 + len(panels)
    fig = Figure(figsize=(2.4 * cols + 1.4, 5.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    lo, hi = seismic_limits(image)
    top = _diverging([p["map"] for p in panels])
    image_map = None
    for c in range(cols):
        lab = labels if c == 0 else panels[c - 1]["labels"]
        axes[0, c].imshow(mask_ignored(lab, lab, ignore_index), cmap=label_cmap(n),
                          vmin=-0.5, vmax=n - 0.5, aspect="auto", interpolation="nearest")
        if c == 0:
            axes[1, 0].imshow(image, cmap="gray", vmin=lo, vmax=hi, aspect="auto",
                              interpolation="nearest")
            for ax in axes[:, 0]:
                ax.contour(region.astype(np.float32), levels=[0.5], colors=REGION_COLOR,
                           linewidths=1.5)
            axes[0, 0].set_title("query: annotation", fontsize=8)
            axes[1, 0].set_title("query: seismic, region outlined", fontsize=8)
            for r in (0, 1):
                section_axes(axes[r, 0], x=r == 1, frame=frame)
            continue
        panel = panels[c - 1]
        for r in (0, 1):
            section_axes(axes[r, c], x=r == 1, y=False, frame=panel.get("frame"))
        name = panel["name"] if panel.get("frame") is None else \
            f"{panel['frame'].title} ({panel['name']})"
        axes[0, c].set_title(f"{name}\nscore {panel['score']:.2e}", fontsize=8)
        hide = panel.get("hide", panel["labels"] == ignore_index)
        image_map = axes[1, c].imshow(np.ma.masked_array(panel["map"], hide),
                                      cmap=colormaps["RdBu_r"].with_extremes(bad=MISSING),
                                      vmin=-top, vmax=top, aspect="auto",
                                      interpolation="nearest")
        axes[1, c].set_title(panel.get("map_title", "influence per pixel"), fontsize=8)
    facies_legend(fig, classes)
    if image_map is not None:
        fig.colorbar(image_map, ax=axes[1, -1], label=unit, shrink=0.9)
    fig.suptitle(title, fontsize=9)
    return fig


def epoch_class_figure(values: np.ndarray, epochs: Sequence[int], classes: Sequence[str], *,
                       title: str, unit: str = "influence (lr x gradient product)",
                       rows: str = "kept epoch") -> Figure:
    """Influence summed over all training sections per kept epoch (rows) and class of the
    training pixels (columns): red lowered the query loss, blue raised it (or, with ``unit``
    and ``rows``, another quantity per epoch and class)."""
    top = _diverging([values])
    fig = Figure(figsize=(1.0 * len(classes) + 2.6, 0.35 * len(epochs) + 2.2), dpi=DPI,
                 layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(values, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto",
                   interpolation="nearest")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(epochs)), [str(e) for e in epochs])
    ax.set_xlabel("class of the training pixels")
    ax.set_ylabel(rows)
    fig.colorbar(im, ax=ax, label=unit)
    fig.suptitle(title, fontsize=9)
    return fig
