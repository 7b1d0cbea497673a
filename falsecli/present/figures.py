"""Figures in the paper's style: facies in the F3 benchmark colours, heat maps blue -> red.
The common pieces (palette, scales, axes, saving) and the figures of sections, heat maps and
curves; the transfer's and the trace's figures build on them in
:mod:`falsecli.present.transfer_figures` and :mod:`falsecli.present.trace_figures`.

Figures are built on ``matplotlib.figure.Figure`` (Agg, no pyplot): no global state, no
display needed, and nothing leaks between the many figures a stage draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter, MaxNLocator

from falsecli.core.files import save_with
from falsecli.data.geometry import SectionFrame
from falsecli.present.legends import legend_outside

#: F3 facies benchmark palette (Alaudah et al. 2019), in class order: upper, middle and lower
#: North Sea, Rijnland/chalk, scruff (orange), Zechstein (red)
F3_COLORS: list[tuple[int, int, int]] = [(69, 117, 180), (145, 191, 219), (224, 243, 248),
                                         (254, 224, 144), (252, 141, 89), (215, 48, 39)]
#: ignored pixels (and pixels outside a panel) are drawn in this grey
MISSING = (0.6, 0.6, 0.6, 1.0)
#: the paper's heat maps: dark blue = never forgotten, red = forgotten most
HEAT_CMAP = "jet"
#: colour-bar label of every heat map
HEAT_LABEL = "forgetting events"
DPI = 110
#: outline of a query region (``trace``): visible on facies colours and on grey seismic
REGION_COLOR = "magenta"
DEPTH_LABEL = "depth (samples)"
TRACE_LABEL = "trace"


def count_scale(top: int) -> tuple[Colormap, BoundaryNorm]:
    """A discrete heat scale for integer counts 0..top: one colour per count (blue -> red),
    so a colour bar reads as counts, not as a continuum; ignored pixels grey."""
    top = max(int(top), 1)
    cmap = colormaps[HEAT_CMAP].resampled(top + 1).with_extremes(bad=MISSING)
    return cmap, BoundaryNorm(np.arange(-0.5, top + 1.5), top + 1)


def _count_bar(fig: Figure, image: Any, ax: Any, top: int, label: str = HEAT_LABEL,
               **kwargs: Any) -> None:
    """The labelled colour bar of a count scale, ticked at integers only."""
    bar = fig.colorbar(image, ax=ax, label=label, **kwargs)
    bar.locator = MaxNLocator(integer=True, nbins=min(max(int(top), 1) + 1, 10))
    bar.update_ticks()
    bar.minorticks_off()


def facies_legend(fig: Figure, classes: Sequence[str]) -> None:
    """The facies colours as a legend below the panels, where it covers no data."""
    colors = label_colors(len(classes))
    fig.legend(handles=[Patch(color=colors[i], label=name) for i, name in enumerate(classes)],
               loc="outside lower center", ncol=min(len(classes), 6), fontsize=8,
               title="facies (annotation)", title_fontsize=8, frameon=False)


def section_axes(ax: Any, *, x: bool = True, y: bool = True,
                 frame: SectionFrame | None = None) -> None:
    """The axes of a section panel: with its ``frame``, ticks in the survey's line numbers
    and time/depth (labelled on the outer panels, ``x``/``y``); else traces and samples."""
    if frame is not None:  # columns ticked at whole lines, rows at round times/depths
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins="auto"))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: frame.x(v)))
        end = frame.y_start + frame.y_step * (frame.rows - 1)
        times = [t for t in MaxNLocator(nbins=6).tick_values(frame.y_start, end)
                 if frame.y_start <= t <= end]
        rows = [(t - frame.y_start) / frame.y_step for t in times]
        ax.yaxis.set_major_locator(FixedLocator(rows))
        ax.yaxis.set_major_formatter(FixedFormatter([frame.y(r) for r in rows]))
    if x:
        ax.set_xlabel(TRACE_LABEL if frame is None else frame.x_label)
    if y:
        ax.set_ylabel(DEPTH_LABEL if frame is None else frame.y_label)


def row_label(name: str, frame: SectionFrame | None, caption: str = "") -> str:
    """The y label of a row of sections: its survey name and section name, a caption, its
    vertical axis."""
    if frame is None:
        return "\n".join(t for t in (name, caption, DEPTH_LABEL) if t)
    return "\n".join(t for t in (f"{frame.title} ({name})", caption, frame.y_label) if t)


def label_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` class colours: the F3 palette first, then tab10 for surveys with more classes."""
    extra = colormaps["tab10"].colors
    rgb = [tuple(c / 255 for c in color) for color in F3_COLORS]
    return [rgb[i] if i < len(rgb) else tuple(extra[(i - len(rgb)) % len(extra)])
            for i in range(n)]


def label_cmap(n: int) -> ListedColormap:
    """A colour map for label ids 0..n-1; masked (ignored) pixels are grey."""
    return ListedColormap(label_colors(n), name="facies").with_extremes(bad=MISSING)


def mask_ignored(values: np.ndarray, labels: np.ndarray, ignore_index: int) -> np.ma.MaskedArray:
    """``values`` with the ignored pixels masked, so that they are drawn grey."""
    return np.ma.masked_array(values, mask=labels == ignore_index)


def seismic_limits(seismic: np.ndarray) -> tuple[float, float]:
    """Symmetric grey scale clipped at the 99th amplitude percentile (spikes do not wash
    the section out)."""
    finite = np.abs(seismic[np.isfinite(seismic)])
    clip = float(np.percentile(finite, 99)) if finite.size else 1.0
    return -(clip or 1.0), clip or 1.0


def panel_size(shape: tuple[int, int], height: float = 3.0) -> float:
    """Width in inches of a panel of ``shape`` (depth, width) drawn ``height`` inches high."""
    depth, width = shape
    return float(np.clip(height * width / max(depth, 1), 1.0, 3.0 * height))


def _three_panels(shape: tuple[int, int]) -> tuple[Figure, Any, bool]:
    """A figure of three panels side by side at the section's true aspect, stacked for
    sections much wider than deep (F3 inlines are 701 x 255); returns (figure, axes,
    stacked)."""
    depth, width = shape
    stacked = width > 1.5 * depth
    if stacked:
        height = float(np.clip(9.0 * depth / width, 1.2, 4.0))
        fig = Figure(figsize=(11.0, 3 * height + 1.4), dpi=DPI, layout="constrained")
        axes = fig.subplots(3, 1, sharex=True, sharey=True)
    else:
        panel = panel_size(shape)
        fig = Figure(figsize=(3 * panel + 4.4, 4.2), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, 3, sharex=True, sharey=True)
    return fig, axes, stacked


#: where the three-panel figures put their colour bars: beside each panel, covering no data
_BAR = {"location": "right", "shrink": 0.9, "pad": 0.02}


def _seismic_and_facies(fig: Figure, axes: Any, stacked: bool, seismic: np.ndarray,
                        facies: np.ndarray, classes: Sequence[str], title: str,
                        frame: SectionFrame | None) -> None:
    """Seismic (grey, labelled amplitude bar) in the first panel, facies colours in the
    second with the legend as a colour bar beside it (every panel gets a bar, so stacked
    panels keep one width), trace and depth axes on the outer panels."""
    lo, hi = seismic_limits(np.asarray(seismic, dtype=np.float32))
    image = axes[0].imshow(seismic, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    axes[0].set_title("seismic")
    fig.colorbar(image, ax=axes[0], label="amplitude (normalised)", **_BAR)
    n = len(classes)
    image = axes[1].imshow(facies, cmap=label_cmap(n), vmin=-0.5, vmax=n - 0.5,
                           interpolation="nearest")
    axes[1].set_title(title)
    bar = fig.colorbar(image, ax=axes[1], ticks=range(n), **_BAR)
    bar.ax.set_yticklabels(classes, fontsize=7)
    bar.ax.tick_params(length=0)
    bar.ax.invert_yaxis()  # shallow units on top, as in the section
    bar.set_label("facies")
    for ax in axes:
        section_axes(ax, x=not stacked or ax is axes[-1], y=stacked or ax is axes[0],
                     frame=frame)


def section_figure(seismic: np.ndarray, labels: np.ndarray, heat: np.ndarray, *,
                   classes: Sequence[str], ignore_index: int, title: str,
                   vmax: float | None = None, frame: SectionFrame | None = None) -> Figure:
    """Paper Fig. 2: seismic (grey) | annotation (facies colours) | heat map, each at the
    section's true aspect (one trace as wide as one sample is deep), with labelled colour
    bars (the annotation's names the facies).

    Ignored pixels are grey in the annotation and the heat map. ``vmax`` fixes the top of
    the heat scale (pass the same value to make several figures comparable). Sections much
    wider than deep (F3 inlines are 701 x 255) get the three panels stacked instead.
    ``frame``: the section's survey axes (line numbers, time/depth), else traces and samples.
    """
    fig, axes, stacked = _three_panels(labels.shape)
    _seismic_and_facies(fig, axes, stacked, seismic, mask_ignored(labels, labels, ignore_index),
                        classes, "annotation", frame)
    top = int(vmax) if vmax is not None else max(int(np.max(heat, initial=0)), 1)
    cmap, norm = count_scale(top)
    image = axes[2].imshow(mask_ignored(heat, labels, ignore_index), cmap=cmap, norm=norm,
                           interpolation="nearest")
    axes[2].set_title("heat map")
    _count_bar(fig, image, axes[2], top, **_BAR)
    fig.suptitle(title)
    return fig


def prediction_figure(seismic: np.ndarray, facies: np.ndarray, confidence: np.ndarray, *,
                      classes: Sequence[str], title: str,
                      frame: SectionFrame | None = None) -> Figure:
    """A predicted section: seismic (grey) | predicted facies | confidence (blue: unsure,
    red: sure, from 1/classes, a uniform guess, to 1), all [depth, width], on the survey
    axes of ``frame`` when given."""
    fig, axes, stacked = _three_panels(facies.shape)
    _seismic_and_facies(fig, axes, stacked, seismic, facies, classes, "predicted facies",
                        frame)
    image = axes[2].imshow(confidence, cmap=colormaps[HEAT_CMAP], vmin=1.0 / max(len(classes), 1),
                           vmax=1.0, interpolation="nearest")
    axes[2].set_title("confidence")
    fig.colorbar(image, ax=axes[2], label="max softmax probability", **_BAR)
    fig.suptitle(title)
    return fig


def heatmap_grid(maps: Mapping[str, Mapping[str, np.ndarray]], *,
                 title: str | None = None,
                 context: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 classes: Sequence[str] = (), outline: int | None = None,
                 label: str = HEAT_LABEL,
                 frames: Mapping[str, SectionFrame] | None = None) -> Figure:
    """Heat maps side by side on ONE colour scale with one colour bar (paper Fig. 5):
    ``maps[column][row]``, e.g. ``{method: {section: heat}}``: columns = methods, rows =
    sections (in first-seen order; a missing one is an empty grey panel). Pass ``np.ma``
    masked arrays (:func:`mask_ignored`) to grey out pixels. Integer maps get a discrete
    count scale, others (means over seeds) a continuous one; the scale tops out at the
    largest value shown, so equal colours mean equal values in every panel.

    ``context[row] = (seismic, labels)`` adds the section's seismic and annotation (facies
    colours, ``classes``) as the first two columns; ``outline`` draws that class's outline
    in every panel of the row, so the reader sees where the class is. ``frames[row]``: the
    row's survey axes and name (``inline 116``).
    """
    cols = list(maps)
    rows = list(dict.fromkeys(row for col in cols for row in maps[col]))
    if not rows:
        raise ValueError("heatmap_grid: no heat map to draw")
    present = [maps[c][r] for c in cols for r in rows if r in maps[c]]
    counts = all(np.issubdtype(m.dtype, np.integer) for m in present)
    peak = max([float(np.ma.max(m)) for m in present if np.ma.count(m)] + [1.0])
    if counts:
        cmap, norm = count_scale(int(peak))
    else:
        cmap, norm = colormaps[HEAT_CMAP].with_extremes(bad=MISSING), Normalize(0.0, peak)
    lead = 2 if context else 0
    panel = panel_size(present[0].shape, 2.2)
    fig = Figure(figsize=((len(cols) + lead) * panel + 2.6, len(rows) * 2.4 + 1.0), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(len(rows), len(cols) + lead, squeeze=False, sharex="row",
                        sharey="row")
    image = None
    for r, row in enumerate(rows):
        panels = _context_panels(context[row], classes) if context else []
        panels += [(col, None if row not in maps[col] else
                    dict(X=maps[col][row], cmap=cmap, norm=norm)) for col in cols]
        edge = (None if not context or outline is None
                else np.asarray(context[row][1]) == outline)
        drawn = _grid_row(axes[r], panels, row, lead, edge, first=r == 0,
                          last=r == len(rows) - 1, frame=(frames or {}).get(row))
        image = drawn if drawn is not None else image
    if counts:
        _count_bar(fig, image, axes, int(peak), shrink=0.6, label=label)
    else:
        fig.colorbar(image, ax=axes, label=label, shrink=0.6)
    if context and classes:
        facies_legend(fig, classes)
    if title:
        fig.suptitle(title)
    return fig


def _context_panels(context: tuple[np.ndarray, np.ndarray], classes: Sequence[str]
                    ) -> list[tuple[str, dict[str, Any] | None]]:
    """The seismic and annotation panels (title, imshow arguments) that lead a grid row."""
    seismic, labels = context
    lo, hi = seismic_limits(np.asarray(seismic, dtype=np.float32))
    return [("seismic", dict(X=seismic, cmap="gray", vmin=lo, vmax=hi)),
            ("annotation", dict(X=np.ma.masked_greater_equal(labels, len(classes)),
                                cmap=label_cmap(len(classes)), vmin=-0.5,
                                vmax=len(classes) - 0.5))]


def _grid_row(axes: Any, panels: list[tuple[str, dict[str, Any] | None]], row: str, lead: int,
              outline: np.ndarray | None, *, first: bool, last: bool,
              frame: SectionFrame | None = None) -> Any:
    """Draw one row of :func:`heatmap_grid` (a panel without arguments is an empty grey one,
    ``outline`` a mask outlined in every drawn panel); returns the row's last heat image."""
    image = None
    for c, (name, spec) in enumerate(panels):
        ax = axes[c]
        if first:
            ax.set_title(name)
        section_axes(ax, x=last, y=False, frame=frame)
        if c == 0:
            ax.set_ylabel(row_label(row, frame))
        if spec is None:
            ax.set_facecolor(MISSING)
            continue
        shown = ax.imshow(interpolation="nearest", **spec)
        if c >= lead:
            image = shown
        if outline is not None:
            ax.contour(outline, levels=[0.5], colors=REGION_COLOR, linewidths=0.8)
    return image


def training_curves(curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> Figure:
    """Training loss and validation mean class accuracy per epoch: ``curves[method]`` is a
    list of runs, each the records of its ``metrics.jsonl``; one colour per method."""
    fig = Figure(figsize=(10, 3.8), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = colormaps["tab10"].colors
    for m, (method, runs) in enumerate(curves.items()):
        for k, run in enumerate(runs):
            epochs = [rec["epoch"] for rec in run]
            label = method if k == 0 else None
            loss_ax.plot(epochs, [rec["train_loss"] for rec in run], color=colors[m % 10],
                         alpha=0.8, label=label)
            acc_ax.plot(epochs, [rec["mean_class_acc"] for rec in run], color=colors[m % 10],
                        alpha=0.8, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy per labelled pixel",
                title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="mean class accuracy (0-1)",
               title="validation mean class accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if curves:
        legend_outside(fig, title="method (one line per seed)")
    return fig


def query_figure(seismic: Mapping[str, np.ndarray], switch: Mapping[str, np.ndarray],
                 captions: Mapping[str, str], *, title: str,
                 frames: Mapping[str, SectionFrame] | None = None) -> Figure:
    """The sections a query chose, one row each (in the order chosen): seismic (grey) |
    switch events per pixel over the run (one discrete scale for all rows, as in Fig. 5),
    ``captions[name]`` beside each row's name."""
    names = list(seismic)
    top = max([int(np.max(switch[n], initial=0)) for n in names] + [1])
    cmap, norm = count_scale(top)
    panel = panel_size(seismic[names[0]].shape, 2.2)
    fig = Figure(figsize=(2 * panel + 2.8, len(names) * 2.3 + 1.0), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    image = None
    for r, name in enumerate(names):
        lo, hi = seismic_limits(np.asarray(seismic[name], dtype=np.float32))
        axes[r, 0].imshow(seismic[name], cmap="gray", vmin=lo, vmax=hi, aspect="auto",
                          interpolation="nearest")
        image = axes[r, 1].imshow(switch[name], cmap=cmap, norm=norm, aspect="auto",
                                  interpolation="nearest")
        frame = (frames or {}).get(name)
        axes[r, 0].set_ylabel(row_label(name, frame, captions.get(name, "")), fontsize=8)
        for c in (0, 1):
            section_axes(axes[r, c], x=r == len(names) - 1, y=False, frame=frame)
    axes[0, 0].set_title("seismic")
    axes[0, 1].set_title("switch events")
    bar = fig.colorbar(image, ax=axes, label="switch events", shrink=0.6)
    bar.locator = MaxNLocator(integer=True, nbins=min(top + 1, 10))
    bar.update_ticks()
    fig.suptitle(title)
    return fig


def learning_curves(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]]],
                    titles: Mapping[str, str]) -> Figure:
    """Active-learning curves: one panel per ``curves`` key (a split and metric), one line
    per strategy, ``(labelled sections, mean, std)`` over seeds drawn as mean ± std band."""
    panels = list(curves)
    fig = Figure(figsize=(4.6 * len(panels), 3.9), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = colormaps["tab10"].colors
    for ax, key in zip(axes, panels):
        for k, (strategy, (x, mean, std)) in enumerate(curves[key].items()):
            ax.plot(x, mean, marker="o", ms=3, color=colors[k % 10], label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=colors[k % 10], alpha=0.15,
                            linewidth=0)
        ax.set(xlabel="labelled training sections", ylabel=titles[key].split(": ")[-1],
               title=titles[key])
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_outside(fig, title="strategy (mean ± std over seeds)")
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG atomically, rendered by Agg (no display, whatever the backend).
    The layout is settled first: one pass of constrained layout leaves panels of fixed aspect
    (sections) where the figure's title overlaps their titles; the save's draw is the second."""
    FigureCanvasAgg(fig)
    if (engine := fig.get_layout_engine()) is not None:
        engine.execute(fig)
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
