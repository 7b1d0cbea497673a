"""The style transfer's figures: the paper's Fig. 3 (what the generator changed, and what the
style code alone changes) and the GAN's losses over training."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from falsecli.present.figures import (DPI, facies_legend, label_cmap, mask_ignored, panel_size,
                                      section_axes, seismic_limits)

#: the style-transfer GAN's losses (:data:`falsecli.method.sean.LOSS_NAMES`), said in full
LOSS_TITLES = {"d": "discriminator loss (hinge)", "g_adv": "generator adversarial loss (hinge)",
               "fm": "feature-matching loss (L1 of discriminator features)",
               "l1": "reconstruction loss (L1 of normalised amplitude)",
               "perceptual": "perceptual loss (L1 of the trained backbone's features)"}


def _symmetric_limit(arrays: Sequence[np.ndarray]) -> float:
    """One symmetric scale for several difference images: the 99.5th percentile of |value|
    over all of them (a few extreme pixels do not wash the rest out)."""
    values = np.abs(np.concatenate([np.ravel(a) for a in arrays]))
    return float(np.percentile(values, 99.5)) if values.size else 1.0


def _fig3_panels(row: Mapping[str, Any], change: np.ndarray) -> list[tuple[Any, str, str]]:
    """The seven panels of a Fig. 3 row: (values, kind, title), kind ``seis`` (seismic),
    ``lab`` (annotation), ``change`` or ``style`` (a difference column)."""
    names = row["names"]
    return [(row["target"], "seis", f"target\n{names[0]}"),
            (row["transfer"], "seis", f"transfer\n{names[1]}"),
            (change, "change", "transfer − target"),
            (row["target_labels"], "lab", f"target annotation\n{names[2]}"),
            (row["source"], "seis", f"style source\n{names[3]}"),
            (row["source_labels"], "lab", f"source annotation\n{names[4]}"),
            # one operand a line (names are wider than a panel); its colour bar says
            # "difference of transfers"
            (row["difference"], "style", row["difference_name"].replace(" − ", "\n− "))]


def fig3(rows: Sequence[dict[str, Any]], classes: Sequence[str], ignore_index: int,
         class_name: str) -> Figure:
    """Paper Fig. 3, one row per style source: target | transfer | transfer − target |
    target annotation | style source | source annotation | difference of two transfers of
    the same target. Sections at true aspect with trace and depth axes; each difference
    column shares one labelled symmetric scale over all rows; the facies legend below."""
    n = len(classes)
    cmap = label_cmap(n)
    depth, width = np.shape(rows[0]["target"])
    panel = panel_size((depth, width), 2.4)
    fig = Figure(figsize=(7 * panel + 1.6, 2.6 * len(rows) + 2.4), dpi=DPI,
                 layout="constrained")
    # a thin last row holds the two difference colour bars, aligned under their columns
    grid = fig.add_gridspec(len(rows) + 1, 7, height_ratios=[1.0] * len(rows) + [0.05])
    fig.get_layout_engine().set(hspace=0.06)  # room for the "trace" labels above the bars
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(7)] for r in range(len(rows))])
    for ax in axes.flat[1:]:
        ax.sharex(axes[0, 0])
        ax.sharey(axes[0, 0])
    change = [np.asarray(row["transfer"]) - np.asarray(row["target"]) for row in rows]
    change_lim = _symmetric_limit(change) or 1.0
    style_lim = _symmetric_limit([row["difference"] for row in rows]) or 1.0
    diff_images = {}
    for r, row in enumerate(rows):
        lo, hi = seismic_limits(row["target"])
        for c, (values, kind, panel_title) in enumerate(_fig3_panels(row, change[r])):
            ax = axes[r, c]
            if kind == "seis":
                ax.imshow(values, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            elif kind == "lab":
                ax.imshow(mask_ignored(values, values, ignore_index), cmap=cmap,
                          vmin=-0.5, vmax=n - 0.5, interpolation="nearest")
            else:
                lim = change_lim if kind == "change" else style_lim
                diff_images[c] = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim,
                                           interpolation="nearest")
            ax.set_title(panel_title, fontsize=8)
            section_axes(ax, x=r == len(rows) - 1, y=c == 0)
            ax.tick_params(labelbottom=r == len(rows) - 1, labelleft=c == 0)
    labels = {2: "transfer − target\n(normalised amplitude)",
              6: "difference of transfers\n(normalised amplitude)"}
    for c in range(7):
        if c in diff_images:
            bar = fig.colorbar(diff_images[c], cax=fig.add_subplot(grid[-1, c]),
                               orientation="horizontal")
            bar.set_label(labels[c], fontsize=8)
        else:
            fig.add_subplot(grid[-1, c]).set_axis_off()
    facies_legend(fig, classes)
    fig.suptitle(f"class-specific style transfer of '{class_name}': the target's "
                 f"'{class_name}' takes the style of a most-forgotten section")
    return fig


def loss_figure(history: Sequence[Mapping[str, float]]) -> Figure:
    """The style-transfer GAN's losses over training: ``history`` rows are ``{"step": s,
    loss name: value, ...}`` (means over the ``transfer.log_every`` steps before ``s``)."""
    names = [k for k in history[0] if k != "step" and any(h[k] for h in history)]  # unused: 0
    cols = min(len(names), 2)
    fig = Figure(figsize=(9, 2.8 * -(-len(names) // cols) + 0.6), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(-(-len(names) // cols), cols, squeeze=False).ravel()
    steps = [h["step"] for h in history]
    for ax, name in zip(axes, names):
        ax.plot(steps, [h[name] for h in history], marker=".")
        ax.set_title(LOSS_TITLES.get(name, name), fontsize=10)
        ax.set(xlabel="generator training step", ylabel="loss (mean over the log interval)")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("style-transfer GAN losses during training")
    return fig
