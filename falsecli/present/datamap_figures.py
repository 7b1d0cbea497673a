"""The data-map figures: one section's confidence, variability and likely label issues, and
the cartography scatter (Swayamdipta et al., 2020) with its easy / ambiguous / hard zones.

Legends sit in a panel of their own or below the figure, never over data.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from falsecli.data.geometry import SectionFrame
from falsecli.method.datamaps import AMBIGUOUS_STD, EASY_CONFIDENCE
from falsecli.present.figures import (DPI, HEAT_CMAP, REGION_COLOR, label_cmap, label_colors,
                                      mask_ignored, panel_size, section_axes)

#: pixels drawn in a scatter at most (a seeded sample beyond that)
SCATTER_POINTS = 20000
#: the zones' shades in the scatter
ZONE_SHADES = {"easy": "#d9f0d3", "ambiguous": "#fee8c8", "hard": "#e7d4e8"}
#: the largest possible standard deviation of a probability (0 and 1, half the time each)
MAX_STD = 0.5


def cartography(ax: Any, confidence: np.ndarray, variability: np.ndarray,
                labels: np.ndarray, n_classes: int, seed: int = 0) -> None:
    """Variability (x) against confidence (y) of labelled pixels, coloured by their given
    class, on the shaded zones; a seeded sample of :data:`SCATTER_POINTS` when more."""
    ax.axvspan(AMBIGUOUS_STD, MAX_STD, color=ZONE_SHADES["ambiguous"], lw=0)
    ax.fill_between([0, AMBIGUOUS_STD], EASY_CONFIDENCE, 1, color=ZONE_SHADES["easy"], lw=0)
    ax.fill_between([0, AMBIGUOUS_STD], 0, EASY_CONFIDENCE, color=ZONE_SHADES["hard"], lw=0)
    pick = np.arange(confidence.size)
    if pick.size > SCATTER_POINTS:
        pick = np.sort(np.random.default_rng(seed).choice(pick, SCATTER_POINTS, replace=False))
    colors = np.asarray(label_colors(n_classes))[labels[pick]]
    ax.scatter(variability[pick], confidence[pick], s=4, c=colors, edgecolors="0.35",
               linewidths=0.15, alpha=0.7, rasterized=True)  # edges: pale classes show
    ax.set_xlim(0, MAX_STD)
    ax.set_ylim(0, 1)
    ax.set_xlabel("variability: std of p(label) over epochs")
    ax.set_ylabel("confidence: mean p(label)")


def zone_handles() -> list[Patch]:
    return [Patch(color=shade, label=f"{zone}") for zone, shade in ZONE_SHADES.items()]


def cartography_figure(confidence: np.ndarray, variability: np.ndarray, labels: np.ndarray,
                       classes: Sequence[str], title: str) -> Figure:
    """The data map of all labelled tracked pixels, legends below the axes."""
    fig = Figure(figsize=(6.0, 5.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    cartography(ax, confidence, variability, labels, len(classes))
    ax.set_title(title, fontsize=9)
    colors = label_colors(len(classes))
    handles = zone_handles() + [Line2D([], [], ls="", marker="o", color=colors[i], label=name)
                                for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=7,
               frameon=False, title="zones and given classes", title_fontsize=7)
    return fig


def datamap_figure(labels: np.ndarray, confidence: np.ndarray, variability: np.ndarray,
                   score: np.ndarray, mask: np.ndarray, *, classes: Sequence[str],
                   ignore_index: int, title: str, frame: SectionFrame | None = None
                   ) -> Figure:
    """One section: annotation with the likely label issues outlined | confidence |
    variability, then the issue score | the section's cartography | the legend; on the
    survey axes of ``frame`` when given."""
    panel = panel_size(labels.shape, 2.6)
    fig = Figure(figsize=(3 * panel + 4.0, 2 * 2.6 + 1.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 3)
    n = len(classes)
    labelled = labels != ignore_index
    axes[0, 0].imshow(mask_ignored(labels, labels, ignore_index), cmap=label_cmap(n),
                      vmin=-0.5, vmax=n - 0.5, interpolation="nearest")
    axes[0, 0].set_title("annotation, likely label issues outlined", fontsize=8)
    maps = [(axes[0, 1], confidence, "confidence", "mean p(label)", 1.0),
            (axes[0, 2], variability, "variability", "std of p(label)", MAX_STD),
            (axes[1, 0], score, "label-issue score", "late min of p(other) - p(label)", 1.0)]
    for ax, values, name, label, top in maps:
        image = ax.imshow(mask_ignored(values, labels, ignore_index),
                          cmap=colormaps[HEAT_CMAP].with_extremes(bad=(0.6, 0.6, 0.6, 1)),
                          vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        fig.colorbar(image, ax=ax, label=label, shrink=0.9, pad=0.02)
    for ax in (axes[0, 0], axes[1, 0]):
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=REGION_COLOR, linewidths=0.8)
    for ax in (axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0]):
        section_axes(ax, frame=frame)
    cartography(axes[1, 1], confidence[labelled], variability[labelled], labels[labelled], n)
    axes[1, 1].set_title("this section's pixels", fontsize=8)
    axes[1, 2].axis("off")
    colors = label_colors(n)
    axes[1, 2].legend(handles=[Patch(color=colors[i], label=c) for i, c in enumerate(classes)]
                      + zone_handles()
                      + [Line2D([], [], color=REGION_COLOR, label="likely label issue")],
                      loc="center", fontsize=7, frameon=False, title="legend",
                      title_fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig
