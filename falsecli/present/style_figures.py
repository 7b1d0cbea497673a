"""Fig. 3's style: does the class take the source's style? The three components of the style
descriptor (:mod:`falsecli.method.stylemeasure`) of the class region, for the target, the
style source and the transfer, one row per Fig. 3 row, so a reader sees the style move (or
not) and how far: ``style_moved`` is in each row's title."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from falsecli.method import stylemeasure as sm
from falsecli.present.figures import DPI
from falsecli.present.legends import legend_outside

#: target, source, transfer: line colour and style (the transfer should land on the source)
CURVES = (("target", "tab:blue", "-"), ("style source", "tab:orange", "-"),
          ("transfer", "black", "--"))


def _class_values(row: dict[str, Any], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, class mask) of the target, the source and the transfer (the target's labels)."""
    target_mask = np.asarray(row["target_labels"]) == k
    return [(np.asarray(row["target"]), target_mask),
            (np.asarray(row["source"]), np.asarray(row["source_labels"]) == k),
            (np.asarray(row["transfer"]), target_mask)]


def style_figure(rows: Sequence[dict[str, Any]], k: int, class_name: str) -> Figure:
    """Per row of Fig. 3 (target, source, transfer): the class region's amplitude
    distribution (empirical CDF), its depth spectrum (normalised) and its lateral
    coherence, titled with the transfer's ``style_moved``."""
    fig = Figure(figsize=(12, 2.6 * len(rows) + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    freqs = np.fft.rfftfreq(sm.NFFT)
    for r, row in enumerate(rows):
        regions = _class_values(row, k)
        styles = [sm.describe(image, mask) for image, mask in regions]
        moved = sm.score(regions[2][0], regions[0][0], regions[0][1], styles[1]).moved
        names = row["names"]
        title = (f"{names[0]} {names[1]}: style moved "
                 + ("n/a" if moved is None else f"{moved:+.2f}"))
        cdf, spec, coh = axes[r]
        width = 0.8 / len(CURVES)
        for i, ((image, mask), style, (label, color, line)) in enumerate(
                zip(regions, styles, CURVES)):
            if style is None:  # a source without the class
                continue
            values = np.sort(image[mask])
            cdf.plot(values, (np.arange(len(values)) + 0.5) / len(values), color=color,
                     linestyle=line, label=label)
            spec.plot(freqs, style.spectrum, color=color, linestyle=line, marker=".",
                      label=label)
            coh.bar(np.arange(len(sm.LAGS)) + (i - 1) * width, style.coherence, width,
                    color=color, label=label)
        cdf.set(xlabel=f"amplitude in '{class_name}'", ylabel="cumulative share", title=title)
        spec.set(xlabel="frequency along depth (cycles per sample)",
                 ylabel="amplitude spectrum (sum 1)", title="depth spectrum of the class runs")
        coh.set(xticks=range(len(sm.LAGS)), xticklabels=[f"{lag} trace(s)" for lag in sm.LAGS],
                ylabel="correlation", title="lateral coherence of neighbouring traces")
        for ax in (cdf, spec, coh):
            ax.grid(alpha=0.3)
    legend_outside(fig, below=True)
    fig.suptitle(f"the style of '{class_name}': the transfer (dashed) should lie on the style "
                 "source, away from the target\nstyle moved: 1 = the source's style, "
                 "0 = the target's, < 0 = further from the source")
    return fig
