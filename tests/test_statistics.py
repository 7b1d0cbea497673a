"""What the report computes from runs, checked against independent computations: high-density
regions, paired and Welch intervals (scipy's), and a run's forgetting statistics (the
plain-loop ``independent`` module)."""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import independent
from falsecli.method import statistics


def test_regions_are_8_connected_and_filtered() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal region of 3
    mask[5, 3:6] = True  # a second region of 3
    mask[3, 5] = True  # a single pixel
    assert sorted(statistics.regions(mask, 2)) == [3, 3]
    assert statistics.regions(mask, 4) == []
    assert statistics.regions(np.zeros((3, 3), dtype=bool), 1) == []


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences() -> None:
    a, b = {0: 3.0, 1: 5.0, 2: 7.0}, {0: 2.0, 1: 3.0, 2: 4.0}  # differences 1, 2, 3
    d = statistics.difference(a, b)
    half = sps.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # sd of (1, 2, 3) is 1
    assert d.paired and d.n == 3
    assert (d.mean, d.low, d.high) == pytest.approx((2.0, 2 - half, 2 + half))
    assert d.sign() == 0  # t(2) is wide: 2 ± 2.48 includes 0
    assert statistics.difference({0: 2.1, 1: 2.0, 2: 2.2}, {0: 0, 1: 0, 2: 0}).sign() == 1


def test_unmatched_seeds_give_welch_interval() -> None:
    a, b = {0: 1.0, 1: 2.0, 2: 4.0}, {5: 0.5, 6: 0.7}
    d = statistics.difference(a, b)
    ci = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False).confidence_interval()
    assert not d.paired
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    one = statistics.difference({0: 1.0}, {0: 0.5})
    assert one.mean == 0.5 and np.isnan(one.low) and one.sign() == 0


def test_forgetting_statistics_match_an_independent_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shapes = [("inline_0000", "inline", 0, (12, 9)), ("crossline_0005", "crossline", 5, (12, 7))]
    sections = independent.section_entries(shapes)
    pixels = sum(h * w for *_, (h, w) in shapes)
    labels = np.repeat(np.arange(3), -(-pixels // 3))[:pixels].astype(np.uint8)
    labels[rng.random(pixels) < 0.1] = 255
    # a block of class 1 that flips every epoch, so regions exist
    preds = rng.integers(0, 3, (7, pixels)).astype(np.uint8)
    hot = np.flatnonzero(labels == 1)[:30]
    preds[::2, hot] = 1
    folder = tmp_path / "run"
    independent.write_from_predictions(folder / "tracking", sections, labels, preds,
                                       ["a", "b", "c"])
    got, _ = statistics.forgetting_stats(folder, 1, 6, region_events=2, min_region=3)
    want = independent.report_stats(folder / "tracking", 1, 6, 2, 3)
    assert want["high_density_regions"] >= 1  # the case exercises regions
    assert {k for k in want if k.startswith("interior_density/")}  # and class interiors
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_regions_apart_on_and_off_the_style_sources_and_for_every_class(tmp_path: Path
                                                                         ) -> None:
    """Off-source numbers are those of a run that tracked only the other sections; the
    all-class regions are the sum of each class's own (by the plain-loop flood fill)."""
    rng = np.random.default_rng(5)
    shapes = [("inline_0000", "inline", 0, (10, 8)), ("crossline_0003", "crossline", 3, (9, 7))]
    sizes = [h * w for *_, (h, w) in shapes]
    labels = (np.arange(sum(sizes)) // 48 % 3).astype(np.uint8)  # bands with interiors
    preds = rng.integers(0, 3, (7, sum(sizes))).astype(np.uint8)
    preds[::2] = labels  # right every other epoch: many pixels forgotten 3 times
    independent.write_from_predictions(tmp_path / "all" / "tracking",
                                       independent.section_entries(shapes), labels, preds,
                                       ["a", "b", "c"])
    got, _ = statistics.forgetting_stats(tmp_path / "all", 1, 6, region_events=3, min_region=2,
                                         sources={"inline_0000"})
    off = slice(sizes[0], None)
    independent.write_from_predictions(tmp_path / "off" / "tracking",
                                       independent.section_entries(shapes[1:]), labels[off],
                                       preds[:, off], ["a", "b", "c"])
    want = independent.report_stats(tmp_path / "off" / "tracking", 1, 6, 3, 2)
    assert want["high_density_regions"] >= 1
    assert got["off_sources/high_density_regions"] == want["high_density_regions"]
    assert got["off_sources/high_density_area"] == want["high_density_area"]
    assert got["off_sources/target_density"] == pytest.approx(want["target_density"])
    per_class = [independent.report_stats(tmp_path / "all" / "tracking", k, 6, 3, 2)
                 for k in range(3)]
    assert got["all_classes/high_density_area"] == sum(w["high_density_area"] for w in per_class)
    assert got["all_classes/high_density_regions"] == sum(w["high_density_regions"]
                                                          for w in per_class)
    assert got["sources/high_density_regions"] + got["off_sources/high_density_regions"] == \
        got["high_density_regions"]


def test_regions_vanish_weaken_or_stay() -> None:
    """Each reference region's fate in a run, by hand: no pixel still at region_events
    (vanished), some still but fewer events on average (weakened), else kept."""
    found = np.zeros((4, 6), dtype=np.int32)
    found[0:2, 0:2], found[0:2, 4:6], found[3, 0:3] = 1, 2, 4  # id 3: dropped as too small
    ref = np.where(found > 0, 4, 0)
    heat = ref.copy()
    heat[0:2, 0:2] = 2  # region 1: every pixel below 3 -> vanished
    heat[0, 4] = 1  # region 2: one pixel falls, the rest stay at 4 -> weakened
    got = statistics.region_fate({"s": heat}, {"s": (found, ref)}, region_events=3)
    assert got == {"regions_vanished": 1 / 3, "regions_weakened": 1 / 3,
                   "regions_kept": 1 / 3}
    assert np.isnan(statistics.region_fate({}, {"s": (found, ref)}, 3)["regions_kept"])


def test_reference_regions_are_the_flood_fill_regions(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    shapes = [("inline_0000", "inline", 0, (10, 8)), ("crossline_0003", "crossline", 3, (9, 7))]
    pixels = sum(h * w for *_, (h, w) in shapes)
    labels = (np.arange(pixels) // 48 % 3).astype(np.uint8)
    preds = rng.integers(0, 3, (7, pixels)).astype(np.uint8)
    preds[::2] = labels
    independent.write_from_predictions(tmp_path / "tracking", independent.section_entries(shapes),
                                       labels, preds, ["a", "b", "c"])
    want = independent.report_stats(tmp_path / "tracking", 1, 6, 3, 2)
    ref = statistics.reference_regions(tmp_path, 1, 6, 3, 2)
    found = [(k, int((f == k).sum())) for f, _ in ref.values() for k in np.unique(f) if k]
    assert len(found) == want["high_density_regions"] >= 1
    assert sum(n for _, n in found) == want["high_density_area"]
    assert list(statistics.reference_regions(tmp_path, 1, 6, 3, 2, {"inline_0000"})) == \
        ["crossline_0003"]


def test_forgetting_against_the_final_margin(tmp_path: Path) -> None:
    """Spearman's ρ of events and final margin over the labelled pixels, by hand: margins
    that fall as events rise (tied where they tie) give −1; the mean margins split at one
    event."""
    from falsecli.core.files import save_npy
    from falsecli.method.margin import MARGIN
    from falsecli.method.history import TRACKING

    forgetting = np.array([0, 0, 1, 2, 3, 5])
    labelled = np.array([True, True, True, True, True, False])
    margin = np.array([0.8, 0.8, 0.3, 0.1, -0.2, np.nan], dtype=np.float16)  # ties as events
    assert statistics.margin_relation(tmp_path, forgetting, labelled) == {}  # none recorded
    save_npy(tmp_path / TRACKING / MARGIN, margin)
    got = statistics.margin_relation(tmp_path, forgetting, labelled)
    assert got["margin_spearman"] == pytest.approx(-1.0)
    assert got["margin_forgotten"] == pytest.approx(np.mean(margin[2:5].astype(float)))
    assert got["margin_not_forgotten"] == pytest.approx(np.mean(margin[:2].astype(float)))
    never = statistics.margin_relation(tmp_path, np.zeros(6, int), labelled)  # no events
    assert np.isnan(never["margin_spearman"]) and np.isnan(never["margin_forgotten"])
