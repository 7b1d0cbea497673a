"""Figures a reader needs no help with: axes named, legends beside the data, colour bars
labelled, discrete for counts, sections at true aspect, Fig. 3 with transfer − target."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox

from falsecli.present import (datamap_figures, figures, style_figures, trace_figures,
                              transfer_figures)

CLASSES = ["upper_ns", "middle_ns", "lower_ns", "rijnland_chalk", "scruff", "zechstein"]


def _overlaps(fig, artist) -> bool:
    """Whether ``artist``'s box overlaps the data area of any image panel."""
    FigureCanvasAgg(fig).draw()
    box = artist.get_window_extent()
    return any(ax.get_images() and box.overlaps(ax.get_window_extent()) for ax in fig.axes)


def _section(depth: int = 40, width: int = 24) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(6), -(-depth // 6))[:depth, None].repeat(width, 1)
    seismic = np.random.default_rng(0).normal(size=(depth, width)).astype(np.float32)
    return seismic, labels.astype(np.uint8)


def test_section_figure_reads_without_help() -> None:
    seismic, labels = _section()
    heat = (labels % 3).astype(np.uint16)
    fig = figures.section_figure(seismic, labels, heat, classes=CLASSES, ignore_index=255,
                                 title="t")
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 3
    for ax in images:  # true aspect: a trace as wide as a sample is deep
        assert ax.get_aspect() == 1.0
    assert images[0].get_ylabel() == "depth (samples)" and images[0].get_xlabel() == "trace"
    bars = [ax for ax in fig.axes if not ax.get_images()]
    assert {ax.get_ylabel() for ax in bars} == {"amplitude (normalised)", "facies",
                                                 "forgetting events"}
    facies = next(ax for ax in bars if ax.get_ylabel() == "facies")  # the legend, beside
    assert [t.get_text() for t in facies.get_yticklabels()] == CLASSES
    assert not any(facies.get_window_extent().overlaps(ax.get_window_extent()) for ax in images)
    heat_bar = next(ax for ax in bars if ax.get_ylabel() == "forgetting events")
    assert all(float(t).is_integer() for t in heat_bar.get_yticks())


def test_fig3_shows_transfer_minus_target_on_shared_symmetric_scales() -> None:
    rows = []
    for scale in (1.0, 10.0):  # two rows whose differences differ 10x
        seismic, labels = _section(48, 32)
        rows.append({"target": seismic, "transfer": seismic + scale, "target_labels": labels,
                     "source": seismic, "source_labels": labels,
                     "names": ["t", "from s", "t", "s", "s"],
                     "difference": np.full(seismic.shape, scale), "difference_name": "a − b"})
    fig = transfer_figures.fig3(rows, CLASSES, 255, "scruff")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles.count("transfer − target") == 2
    change = [ax.get_images()[0] for ax in fig.axes if ax.get_title() == "transfer − target"]
    lo, hi = change[0].get_clim()
    assert lo == -hi and hi >= 10 and {im.get_clim() for im in change} == {(lo, hi)}
    labels = [ax.get_xlabel() for ax in fig.axes if not ax.get_images() and ax.get_xlabel()]
    assert any(label.startswith("transfer − target") for label in labels)
    assert any(label.startswith("difference of transfers") for label in labels)
    assert not _overlaps(fig, fig.legends[0])


def test_loss_curves_have_full_titles() -> None:
    history = [{"step": s, "d": 1.0, "g_adv": 0.5, "fm": 0.2, "l1": 0.3} for s in (10, 20)]
    fig = transfer_figures.loss_figure(history)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [transfer_figures.LOSS_TITLES[k] for k in ("d", "g_adv", "fm", "l1")]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes if ax.get_visible())


def _covering(fig, folder) -> list[str]:
    """What lies over a panel's data area or title: a legend, a colour bar, the figure's title
    or a panel's title (boxes as saved, overlapping by more than a pixel)."""
    figures.save_figure(fig, folder / "figure.png")
    renderer = fig.canvas.get_renderer()
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data() and ax not in bars]
    furniture = [("figure legend", lg) for lg in fig.legends]
    furniture += [("legend", ax.get_legend()) for ax in panels if ax.get_legend()]
    furniture += [("colour bar", ax) for ax in bars]
    furniture += [(f"title {ax.get_title()!r}", ax.title) for ax in panels if ax.get_title()]
    if fig._suptitle is not None:
        furniture.append(("figure title", fig._suptitle))
    covering = []
    for name, artist in furniture:
        box = artist.get_window_extent(renderer)
        for ax in panels:
            common = Bbox.intersection(box, ax.get_window_extent(renderer))
            if common is not None and common.width * common.height > 1:
                covering.append(f"{name} over panel {ax.get_title()!r}")
            common = Bbox.intersection(box, ax.title.get_window_extent(renderer))
            if artist is not ax.title and ax.get_title() and common is not None \
                    and common.width * common.height > 1:
                covering.append(f"{name} over the title {ax.get_title()!r}")
    return covering


def _curves() -> dict:
    run = [{"epoch": e, "train_loss": 1.0 / e, "mean_class_acc": 0.5 + 0.04 * e}
           for e in range(1, 13)]
    return {"baseline": [run, run], "flip": [run], "transfer": [run]}


def _style_rows() -> list[dict]:
    seismic, labels = _section(48, 32)
    return [{"target": seismic, "source": seismic[::-1].copy(), "transfer": seismic * 0.5,
             "target_labels": labels, "source_labels": labels[::-1].copy(),
             "names": ["t", "from s", "t", "s", "s"], "difference": seismic - 1,
             "difference_name": "a − b"} for _ in range(2)]


def _influence():
    seismic, labels = _section(48, 32)
    region = labels == 4
    panels = [{"name": f"inline_{i:04d}", "score": 1e-3 * (i - 1), "labels": labels,
               "map": seismic * (i - 1)} for i in range(3)]
    return trace_figures.influence_figure(seismic, labels, region, panels, classes=CLASSES,
                                          ignore_index=255, title="trace")


def _grid():
    seismic, labels = _section(48, 32)
    heat = (labels % 3).astype(np.float32)
    maps = {m: {s: heat + k for k, s in enumerate(("a", "b"))} for m in ("baseline", "flip")}
    return figures.heatmap_grid(maps, title="Fig. 5", context={"a": (seismic, labels),
                                                                "b": (seismic, labels)},
                                classes=CLASSES, outline=4)


def _learning():
    x = np.arange(1, 6)
    curves = {key: {s: (x, 0.5 + 0.05 * x + k, np.full(5, 0.02)) for k, s in
                    enumerate(("switch", "random", "entropy"))} for key in ("val", "test1")}
    return figures.learning_curves(curves, {"val": "val: mIoU", "test1": "test1: mIoU"})


def _sections(shape):
    seismic, labels = _section(*shape)
    return seismic, labels, (labels % 3).astype(np.uint16)


def _datamap():
    seismic, labels = _section(48, 32)
    confidence = np.abs(np.tanh(seismic))
    variability = confidence * 0.4
    return datamap_figures.datamap_figure(labels, confidence, variability, 1 - confidence,
                                          labels == 4, classes=CLASSES, ignore_index=255,
                                          title="inline_0010: data map")


#: every figure the stages draw, on small inputs: name -> builder
FIGURES = {
    "Fig. 2 section": lambda: figures.section_figure(
        *_sections((40, 24)), classes=CLASSES, ignore_index=255, title="t"),
    "Fig. 2 wide section (stacked)": lambda: figures.section_figure(
        *_sections((40, 120)), classes=CLASSES, ignore_index=255, title="t"),
    "predict preview": lambda: figures.prediction_figure(
        *_sections((80, 48))[:2], np.linspace(0.2, 1, 80 * 48).reshape(80, 48),
        classes=CLASSES, title="test1: inline index 8 predicted"),
    "Fig. 5 grid": _grid,
    "training curves": lambda: figures.training_curves(_curves()),
    "query": lambda: figures.query_figure(
        {"a": _section()[0], "b": _section()[0]},
        {"a": _sections((40, 24))[2], "b": _sections((40, 24))[2]}, {"a": "1st"}, title="q"),
    "learning curves": _learning,
    "Fig. 3": lambda: transfer_figures.fig3(_style_rows(), CLASSES, 255, "scruff"),
    "GAN losses": lambda: transfer_figures.loss_figure(
        [{"step": s, "d": 1.0 / s, "g_adv": 0.5, "fm": 0.2, "l1": 0.3} for s in (10, 20)]),
    "Fig. 3b style": lambda: style_figures.style_figure(_style_rows(), 4, "scruff"),
    "trace per pixel": _influence,
    "data map": _datamap,
    "cartography": lambda: datamap_figures.cartography_figure(
        np.linspace(0, 1, 600), np.linspace(0, 0.5, 600), np.arange(600) % 6, CLASSES, "map"),
    "trace per epoch and class": lambda: trace_figures.epoch_class_figure(
        np.arange(18.0).reshape(3, 6) - 9, [2, 4, 6], CLASSES, title="trace"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_no_legend_colour_bar_or_title_covers_data(name: str, tmp_path) -> None:
    fig = FIGURES[name]()
    assert _covering(fig, tmp_path) == []


def test_a_section_on_its_survey_axes() -> None:
    """A frame ticks columns with the line numbers at those columns and rows with the time at
    those rows (start + row x interval), and labels both axes with their unit."""
    from falsecli.data.geometry import Geometry

    geometry = Geometry(np.array([111, 112, 113]), np.arange(875, 893), 4.0, 4.0, 75, "ms")
    frame = geometry.frame("inline", 2)
    rng = np.random.default_rng(0)
    fig = figures.prediction_figure(rng.normal(size=(75, 18)), rng.integers(0, 6, (75, 18)),
                                    rng.uniform(0.2, 1, (75, 18)), classes=list("abcdef"),
                                    title=frame.title, frame=frame)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("time (ms)", "crossline")
    rows = ax.get_yticks()
    assert len(rows) >= 3
    for row, label in zip(rows, ax.get_yticklabels()):
        assert float(label.get_text()) == 4.0 + 4.0 * row and float(label.get_text()) % 50 == 0
    ticks = [(c, t.get_text()) for c, t in zip(ax.get_xticks(), ax.get_xticklabels())
             if 0 <= c <= 17]
    assert len(ticks) >= 2 and all(c == int(c) for c, _ in ticks)
    assert [text for _, text in ticks] == [str(875 + int(c)) for c, _ in ticks]
    assert frame.title == "inline 113"
