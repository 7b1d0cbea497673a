"""Figures a reader needs no help with: axes named, legends beside the data, colour bars
labelled, discrete for counts, sections at true aspect, Fig. 3 with transfer − target."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from falsecli.present import figures, transfer_figures

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
