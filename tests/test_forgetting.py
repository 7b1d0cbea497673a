"""Forgetting / switch definitions (SPEC §6) on hand-computed and random histories."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import independent
from falsecli.core.errors import FalseCliError
from falsecli.method.forgetting import SectionStats, event_maps, section_stats
from falsecli.method.history import TrackedSection, load_tracking
from falsecli.stages.rank import ranking

CLASSES = ["a", "b", "c"]
IGN = 255
# eleven pixels (not a multiple of 8) in two sections: A is 2 x 3, B is 1 x 5
SECTIONS = independent.section_entries([("A", "inline", 0, (2, 3)), ("B", "crossline", 5, (1, 5))])
LABELS = np.array([0, 1, 1, IGN, 2, 0, 1, 1, IGN, 2, 0])
# acc history, one row per pixel (epochs 0..5); transposed to (E, P) below
ACC = np.array([
    [0, 1, 1, 1, 1, 1],  # p0  first learning is not an event: L = 0
    [1, 0, 1, 0, 0, 1],  # p1  forgotten, relearned, forgotten again: L = 2
    [0, 0, 0, 0, 0, 0],  # p2  never learned: 0 (zero) or T (max)
    [1, 0, 1, 0, 1, 0],  # p3  ignored: no forgetting, never "never learned"
    [1, 1, 1, 1, 1, 0],  # p4  forgotten at the last step: L = 1
    [1, 0, 0, 0, 0, 0],  # p5  L = 1
    [0, 0, 0, 0, 0, 1],  # p6  learned last: L = 0, never-learned only in a window T <= 5
    [1, 0, 1, 0, 1, 0],  # p7  L = 3
    [0, 0, 0, 0, 0, 0],  # p8  ignored and never correct: still not never-learned
    [0, 1, 0, 1, 0, 1],  # p9  L = 2
    [1, 1, 1, 1, 1, 1],  # p10 L = 0
]).T
SWITCH = np.array([
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # epoch 0: not a switch event whatever it says
    [0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0],  # epoch 1
    [0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0],  # epoch 2
    [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1],  # epoch 3
    [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # epoch 4
    [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # epoch 5
])


@pytest.fixture
def tracking(tmp_path: Path):
    independent.write_tracking(tmp_path / "tracking", SECTIONS, LABELS, ACC, SWITCH, CLASSES)
    return load_tracking(tmp_path)


def test_hand_computed_full_window(tracking) -> None:
    maps = event_maps(tracking)
    assert maps.epochs == 6 and maps.forgetting.dtype == np.uint16
    assert maps.forgetting.tolist() == [0, 2, 0, 0, 1, 1, 0, 3, 0, 2, 0]
    assert maps.never_learned.tolist() == [i == 2 for i in range(11)]
    assert maps.switch.tolist() == [0, 3, 1, 5, 0, 0, 0, 0, 2, 0, 1]
    assert maps.switch.dtype == np.uint16 and maps.never_learned.dtype == bool


def test_never_learned_max_gives_T(tracking) -> None:
    maps = event_maps(tracking, never_learned="max")
    assert maps.forgetting.tolist() == [0, 2, 6, 0, 1, 1, 0, 3, 0, 2, 0]


def test_window_smaller_than_recorded(tracking) -> None:
    maps = event_maps(tracking, epochs=3, never_learned="max")
    # first three epochs only: p6 (0 0 0) is never learned in this window
    assert maps.forgetting.tolist() == [0, 1, 3, 0, 0, 1, 3, 1, 0, 1, 0]
    assert np.flatnonzero(maps.never_learned).tolist() == [2, 6]
    assert maps.switch.tolist() == [0, 1, 1, 2, 0, 0, 0, 0, 2, 0, 0]
    one = event_maps(tracking, epochs=1)
    assert not one.forgetting.any() and not one.switch.any()
    assert np.flatnonzero(one.never_learned).tolist() == [0, 2, 6, 9]


def test_window_errors(tracking) -> None:
    with pytest.raises(FalseCliError, match="recorded only 6 epochs"):
        event_maps(tracking, epochs=7)
    with pytest.raises(FalseCliError, match="at least 1"):
        event_maps(tracking, epochs=0)
    with pytest.raises(FalseCliError, match="zero or max"):
        event_maps(tracking, never_learned="min")


def test_section_and_class_reductions(tracking) -> None:
    stats = event_maps(tracking).stats()
    # A: labels 0 1 1 - 2 0, L 0 2 0 - 1 1;  B: labels 1 1 - 2 0, L 0 3 - 2 0
    assert stats.pixels.tolist() == [5, 4]
    assert stats.events.tolist() == [4, 5]
    assert stats.switch_events.tolist() == [9, 3]
    assert stats.never_learned.tolist() == [1, 0]
    assert stats.class_pixels.tolist() == [[2, 2, 1], [1, 2, 1]]
    assert stats.class_events.tolist() == [[1, 2, 1], [0, 3, 2]]
    assert stats.class_switch_events.tolist() == [[0, 4, 0], [1, 0, 0]]
    assert stats.density().tolist() == [[0.5, 1.0, 1.0], [0.0, 1.5, 2.0]]
    assert stats.density("switch").tolist() == [[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]


def test_images_and_flatten_round_trip(tracking, tmp_path: Path) -> None:
    maps = event_maps(tracking)
    images = tracking.images(maps.forgetting)
    assert images["A"].tolist() == [[0, 2, 0], [0, 1, 1]]
    assert images["B"].tolist() == [[0, 3, 0, 2, 0]]
    assert tracking.flatten(images, tmp_path).tolist() == maps.forgetting.tolist()
    with pytest.raises(FalseCliError, match="section B has shape"):
        tracking.flatten({**images, "B": images["B"].T}, tmp_path)
    with pytest.raises(FalseCliError, match="unknown section 'C'.*A, B"):
        tracking.section("C")


def _rewrite_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "tracking" / "sections.json").read_text())
    meta.update(changes)
    (folder / "tracking" / "sections.json").write_text(json.dumps(meta))


def test_tracking_validation(tmp_path: Path) -> None:
    folder = tmp_path / "tracking"
    independent.write_tracking(folder, SECTIONS, LABELS, ACC, SWITCH, CLASSES)
    np.save(folder / "correct.npy", np.zeros((6, 1), np.uint8))
    with pytest.raises(FalseCliError, match=r"correct.npy: expected uint8 \[6, 2\]"):
        load_tracking(tmp_path)
    independent.write_tracking(folder, SECTIONS, LABELS, ACC, SWITCH, CLASSES)
    _rewrite_meta(tmp_path, n_pixels=12)
    with pytest.raises(FalseCliError, match="hold 11 pixels but n_pixels is 12"):
        load_tracking(tmp_path)
    bad = [dict(s) for s in SECTIONS]
    bad[1]["offset"] = 5
    _rewrite_meta(tmp_path, n_pixels=11, sections=bad)
    with pytest.raises(FalseCliError, match="section B starts at pixel 5, expected 6"):
        load_tracking(tmp_path)
    independent.write_tracking(folder, SECTIONS, np.where(LABELS == 2, 7, LABELS), ACC,
                               SWITCH, CLASSES)
    with pytest.raises(FalseCliError, match="label 7 is neither a class id"):
        load_tracking(tmp_path)
    (folder / "switch.npy").unlink()
    with pytest.raises(FalseCliError, match="switch.npy: missing"):
        load_tracking(tmp_path)


def _stats(pixels: list[int], events: list[int]) -> SectionStats:
    sections = [TrackedSection(f"s{i}", "val", "inline", i, (1, 1), i) for i in range(len(pixels))]
    col = lambda v: np.array(v, np.int64)[:, None]  # noqa: E731
    zeros = np.zeros(len(pixels), np.int64)
    return SectionStats(sections, ["k"], col(pixels)[:, 0], col(events)[:, 0], zeros, zeros,
                        col(pixels), col(events), col(events) * 10)


def test_ranking_leaves_out_tracked_test_sections() -> None:
    """A tracked test section with the highest density is never ranked: the ranking picks
    style sources for training, and test data must not feed training."""
    stats = _stats(pixels=[4, 8, 8], events=[2, 8, 4])
    stats.sections[1] = TrackedSection("test1_inline_0000", "test1", "inline", 0, (1, 1), 1)
    assert [r["section"] for r in ranking(stats, 0, min_pixels=1)] == ["s2", "s0"]
    only_test = _stats(pixels=[0, 8], events=[0, 8])
    only_test.sections[1] = TrackedSection("test1_inline_0000", "test1", "inline", 0, (1, 1), 1)
    with pytest.raises(FalseCliError, match="no pixels in any of the 1 validation sections"):
        ranking(only_test, 0, min_pixels=1)


def test_ranking_order_ties_and_min_pixels() -> None:
    stats = _stats(pixels=[4, 8, 8, 1, 0, 10], events=[2, 4, 4, 1, 0, 1])
    rows = ranking(stats, 0, "forgetting", min_pixels=2)
    # equal density 0.5: more events first, then section order; s3 (1 pixel) and s4 left out
    assert [(r["rank"], r["section"], r["density"], r["events"], r["class_pixels"])
            for r in rows] == [(1, "s1", 0.5, 4, 8), (2, "s2", 0.5, 4, 8), (3, "s0", 0.5, 2, 4),
                               (4, "s5", 0.1, 1, 10)]
    assert rows[0]["class"] == "k"
    assert [r["section"] for r in ranking(stats, 0, "switch", min_pixels=1)] == [
        "s3", "s1", "s2", "s0", "s5"]
    with pytest.raises(FalseCliError, match=r"no section .* has 11 pixels .*most: 10 in s5"):
        ranking(stats, 0, min_pixels=11)
    with pytest.raises(FalseCliError, match="class k has no pixels"):
        ranking(_stats([0, 0], [0, 0]), 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_plain_per_pixel_loops(data) -> None:
    """Random histories, windows and chunk sizes against the independent reference."""
    E = data.draw(st.integers(1, 9), label="E")
    shapes = data.draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 7)), min_size=1,
                                max_size=4), label="shapes")
    sections = independent.section_entries(
        [(f"s{i}", "inline", i, shape) for i, shape in enumerate(shapes)])
    P = sum(h * w for h, w in shapes)
    bits = st.lists(st.lists(st.integers(0, 1), min_size=P, max_size=P), min_size=E, max_size=E)
    correct = np.array(data.draw(bits, label="correct"))
    switch = np.array(data.draw(bits, label="switch"))
    labels = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2, IGN]), min_size=P,
                                         max_size=P), label="labels"))
    T = data.draw(st.integers(1, E), label="T")
    mode = data.draw(st.sampled_from(["zero", "max"]), label="mode")
    chunk = data.draw(st.sampled_from([1, 2, 3, 1 << 17]), label="chunk_bytes")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tracking"
        independent.write_tracking(folder, sections, labels, correct, switch, CLASSES)
        maps = event_maps(load_tracking(folder.parent), T, mode, chunk_bytes=chunk)
        forgetting, switches, never = independent.pixel_events(folder, T, mode)
    assert maps.forgetting.tolist() == forgetting
    assert maps.switch.tolist() == switches
    assert maps.never_learned.tolist() == never


def test_counts_up_to_uint16_epochs(tmp_path: Path) -> None:
    """Many epochs: alternating 1 0 1 0 ... over 301 epochs forgets 150 times, switches 300."""
    E = 301
    acc = (np.arange(E) % 2 == 0)[:, None].repeat(9, axis=1)
    independent.write_tracking(tmp_path / "tracking",
                               independent.section_entries([("s", "inline", 0, (3, 3))]),
                               np.zeros(9), acc, np.ones((E, 9)), CLASSES)
    maps = event_maps(load_tracking(tmp_path), chunk_bytes=1)
    assert set(maps.forgetting.tolist()) == {150} and set(maps.switch.tolist()) == {E - 1}
    stats = section_stats(maps.tracking, maps.forgetting, maps.switch, maps.never_learned)
    assert stats.events.tolist() == [1350]
