"""The query strategies on hand-made pools: switch counting, each strategy's order, GauSS's
mixture and its fallback, the gap rule and the refusals. Torch-free and fast."""

from __future__ import annotations

import numpy as np
import pytest

from falsecli.core.errors import FalseCliError
from falsecli.core.rules import STRATEGIES
from falsecli.method.history import TrackedSection
from falsecli.method.query import PoolStats, choose, spread, switch_counts


def _sections(shapes: list[tuple[int, int]]) -> list[TrackedSection]:
    out, offset = [], 0
    for i, shape in enumerate(shapes):
        out.append(TrackedSection(f"inline_{i:04d}", "pool", "inline", i, shape, offset))
        offset += shape[0] * shape[1]
    return out


def test_switch_counts_equal_unpacked_sums_across_shared_bytes() -> None:
    # sizes 15, 14, 16, 9, 15: most sections start and end inside a byte
    sections = _sections([(3, 5), (2, 7), (4, 4), (1, 9), (5, 3)])
    n = sum(s.size for s in sections)
    bits = np.random.default_rng(1).random((7, n)) < 0.3
    rows = np.packbits(bits, axis=1)
    got = switch_counts(iter(rows), sections)
    want = [int(bits[:, s.pixels].sum()) for s in sections]
    assert got.tolist() == want


def test_switch_counts_of_a_hand_made_history() -> None:
    # two sections of 4 pixels: epoch 1 no switch (row 0), epoch 2 pixel 1 and 6 switch,
    # epoch 3 pixels 0-3 switch
    sections = _sections([(2, 2), (2, 2)])
    bits = np.array([[0] * 8, [0, 1, 0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]], bool)
    assert switch_counts(list(np.packbits(bits, axis=1)), sections).tolist() == [5, 1]


def _pool(switch: list[float], confidence: list[list[float]] | None = None,
          indices: list[int] | None = None) -> PoolStats:
    n = len(switch)
    idx = np.array(indices if indices is not None else [10 * i for i in range(n)])
    return PoolStats([f"inline_{i:04d}" for i in idx], ["inline"] * n, idx,
                     np.array(switch, float),
                     None if confidence is None else np.array(confidence, float))


#: per section: entropy, least_confidence, margin
CONF = [[0.1, 0.2, 0.9], [0.9, 0.5, 0.6], [0.5, 0.8, 0.3], [0.3, 0.4, 0.05]]


@pytest.mark.parametrize("strategy, first", [
    ("switch", [1, 3]),             # switch 0.2, 0.9, 0.1, 0.5
    ("entropy", [1, 2]),            # entropy 0.1, 0.9, 0.5, 0.3
    ("least_confidence", [2, 1]),   # 1 - max p: 0.2, 0.5, 0.8, 0.4
    ("margin", [3, 2]),             # margins 0.9, 0.6, 0.3, 0.05: smallest first
])
def test_each_ordered_strategy_takes_its_top_sections(strategy: str, first: list[int]) -> None:
    choice = choose(_pool([0.2, 0.9, 0.1, 0.5], CONF), strategy, 2, min_gap=3)
    assert choice.chosen == first and choice.gaps == [3, 3]


def test_random_is_seeded_and_a_permutation() -> None:
    pool = _pool([0.0] * 30)
    a, b = choose(pool, "random", 30, seed=4), choose(pool, "random", 30, seed=4)
    assert a.chosen == b.chosen and sorted(a.chosen) == list(range(30))
    assert choose(pool, "random", 30, seed=5).chosen != a.chosen


def _clustered(rng: np.random.Generator, high: int, low: int) -> PoolStats:
    return _pool(list(rng.normal(0.1, 0.01, low)) + list(rng.normal(0.8, 0.01, high)))


def test_gauss_draws_from_the_high_switching_component_only() -> None:
    rng = np.random.default_rng(0)
    pool = _clustered(rng, high=6, low=24)
    high = set(range(24, 30))
    draws = set()
    for seed in range(20):
        choice = choose(pool, "gauss", 3, seed=seed)
        assert set(choice.chosen) <= high
        assert not choice.details["fallback"] and choice.details["high_members"] == 6
        assert max(choice.details["means"]) == pytest.approx(0.8, abs=0.02)
        draws.add(tuple(sorted(choice.chosen)))
    assert len(draws) > 3  # a draw, not a fixed top-3


def test_gauss_samples_in_proportion_to_the_posterior() -> None:
    # two high sections with near-certain posterior and a borderline one: over many seeds
    # the borderline one is drawn less often
    pool = _pool([0.1] * 20 + [0.9, 0.9, 0.55])
    counts = np.zeros(23)
    for seed in range(300):
        choice = choose(pool, "gauss", 1, seed=seed)
        counts[choice.chosen] += 1
    posterior = choose(pool, "gauss", 1, seed=0).scores
    if posterior[22] > 0.5:  # the borderline section is in the component: drawn less
        assert counts[22] < counts[20] and counts[22] < counts[21]
    assert counts[:20].sum() == 0


def test_gauss_falls_back_to_switch_order_when_the_component_is_small() -> None:
    rng = np.random.default_rng(1)
    pool = _clustered(rng, high=3, low=27)
    choice = choose(pool, "gauss", 5, seed=0)
    assert choice.details["fallback"] and choice.details["high_members"] == 3
    assert set(choice.chosen[:3]) == {27, 28, 29}
    rest = np.argsort(-pool.switch[:27])[:2]
    assert choice.chosen[3:] == rest.tolist()


def test_gauss_on_equal_scores_draws_from_all() -> None:
    choice = choose(_pool([0.3] * 10), "gauss", 4, seed=0)
    assert choice.details["degenerate"] and len(set(choice.chosen)) == 4


def test_gap_rule_spreads_adjacent_sections_and_keeps_off_labelled_ones() -> None:
    axes = ["inline"] * 8
    indices = [1, 2, 3, 4, 5, 6, 7, 12]
    chosen, gaps = spread(range(8), axes, indices, 3, 3, labelled=[("inline", 13)])
    # 1 taken; 2, 3 too close; 4 taken; 5, 6 too close; 7 taken; 12 next to labelled 13
    assert [indices[i] for i in chosen] == [1, 4, 7] and gaps == [3, 3, 3]


def test_gap_rule_relaxes_only_when_too_few_sections_remain() -> None:
    axes = ["inline"] * 4 + ["crossline"]
    indices = [1, 2, 3, 4, 2]
    chosen, gaps = spread(range(5), axes, indices, 4, 3)
    # gap 3: inline 1, inline 4 (3 apart) and crossline 2; gap 2 admits neither inline 2
    # nor 3 (1 from a taken one); gap 1 admits inline 2, the first left in the order
    assert [(axes[i], indices[i]) for i in chosen] == [
        ("inline", 1), ("inline", 4), ("crossline", 2), ("inline", 2)]
    assert gaps == [3, 3, 3, 1]


def test_refusals_are_one_line() -> None:
    pool = _pool([0.1, 0.2])
    with pytest.raises(FalseCliError, match="budget 3 is larger than the pool \\(2"):
        choose(pool, "switch", 3)
    with pytest.raises(FalseCliError, match="unknown query strategy 'swich'.*switch"):
        choose(pool, "swich", 1)
    with pytest.raises(FalseCliError, match="pool holds no unlabelled section"):
        choose(_pool([]), "switch", 1)
    with pytest.raises(FalseCliError, match="softmax statistics"):
        choose(pool, "entropy", 1)


def test_every_strategy_fills_the_budget_with_distinct_sections() -> None:
    rng = np.random.default_rng(2)
    pool = _pool(list(rng.random(12)), rng.random((12, 3)).tolist(), indices=list(range(12)))
    for strategy in STRATEGIES:
        choice = choose(pool, strategy, 6, min_gap=3)
        assert len(set(choice.chosen)) == 6, strategy
        # 12 adjacent inlines, min_gap 3: at most 4 fit at gap 3, the rest at smaller gaps
        assert sum(g == 3 for g in choice.gaps) <= 4 and choice.gaps == sorted(
            choice.gaps, reverse=True)


def test_area_and_its_interval_by_hand() -> None:
    from falsecli.method.curves import area, interval

    # trapezoids over 4, 6, 10 of 0.2, 0.4, 0.4: (0.3 * 2 + 0.4 * 4) / 6
    assert area(np.array([4, 6, 10.0]), np.array([0.2, 0.4, 0.4])) == pytest.approx(2.2 / 6)
    mean, half, n = interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert np.isnan(interval([0.5])[1])
