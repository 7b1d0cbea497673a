"""Which pool section to label next: the query strategies of active learning, torch-free.

A *pool section* is an unlabelled training section that the run tracked (``train.track``
includes ``pool``). Every strategy turns the pool's per-section statistics into a priority
order; :func:`spread` then walks that order and builds the batch under the seismic gap rule.

- ``switch`` (FALSE, Benkert et al. 2022): the most switch events first — a section's switch
  score is its switch events (a pixel's prediction changing between consecutive epochs,
  summed over the run's epochs) per pixel.
- ``gauss`` (GauSS, Benkert et al. 2023): a two-component Gaussian mixture fitted to the
  switch scores; the batch is drawn from the sections whose likelier component is the
  high-switching one (the larger mean), each with probability proportional to its posterior
  of that component, without replacement. When that component holds fewer sections than the
  budget, all of them are taken and the rest come in switch order.
- ``entropy``: the highest mean softmax entropy (over ``log(classes)``) of the last epoch.
- ``margin``: the smallest mean margin between the two likeliest classes (score ``1 - margin``).
- ``least_confidence``: the highest mean ``1 - max p``.
- ``random``: a seeded random order.

Each statistic is a mean over a section's pixels, so inlines and crosslines of different
widths compare. Gap rule (beyond the papers): neighbouring sections are near-duplicates, so a
batch never holds two sections of one axis fewer than ``min_gap`` indices apart, nor one that
close to a labelled section. When too few admissible sections remain, the gap shrinks by one
until the batch is full (gap 1: any distinct sections); each chosen section records the gap it
was admitted under.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from falsecli.core.errors import FalseCliError, did_you_mean
from falsecli.core.rules import STRATEGIES
from falsecli.method.history import CONFIDENCE_STATS, TrackedSection

#: bits set in each byte value
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(
    np.uint16)


def _popcount(a: np.ndarray) -> np.ndarray:
    """Set bits per byte: numpy's own (numpy >= 2.0, several times faster), else the table."""
    count = getattr(np, "bitwise_count", None)
    return count(a) if count is not None else _POPCOUNT[a]


#: rows of the history summed per chunk (bounds the uint16 accumulator's overflow: 8 bits x
#: 4096 rows < 65536)
_ROWS_PER_CHUNK = 4096


def switch_counts(rows: Iterable[np.ndarray], sections: Sequence[TrackedSection]
                  ) -> np.ndarray:
    """Switch events per section (int64), summed over ``rows``: the packed rows of a
    history (each ceil(pixels / 8) bytes, as ``np.packbits`` wrote them: MSB first), read
    once, one at a time (a row may be a reused buffer), so memory stays a few row sizes.

    Bits are counted per byte over all rows (uint16 per byte, flushed every 4096 rows), then
    per section with a prefix sum; a byte a section shares with its neighbour is split
    bit-exactly from the boundary bytes, gathered during the same pass.
    """
    n = len(sections)
    starts = np.array([s.offset for s in sections], dtype=np.int64)
    bounds = np.concatenate([starts, starts + [s.size for s in sections]])
    whole, rest = bounds // 8, bounds % 8
    partial = np.flatnonzero(rest)
    shift = (8 - rest[partial]).astype(np.uint8)
    edge = np.zeros(partial.size, dtype=np.int64)  # bits of the boundary bytes before it
    acc = per_byte = None
    for k, row in enumerate(rows):
        if acc is None:
            acc, per_byte = np.zeros(row.size, np.uint16), np.zeros(row.size, np.int64)
        acc += _popcount(row)
        edge += _popcount(row[whole[partial]] >> shift)
        if (k + 1) % _ROWS_PER_CHUNK == 0:
            per_byte += acc
            acc[:] = 0
    if acc is None:
        return np.zeros(n, dtype=np.int64)
    per_byte += acc
    before = np.concatenate([[0], np.cumsum(per_byte)])[whole]  # events in bytes [0, b)
    before[partial] += edge
    return before[n:] - before[:n]


@dataclass
class PoolStats:
    """The pool: its sections and their statistics, one entry per section."""

    names: list[str]
    axes: list[str]
    indices: np.ndarray  # int (n,)
    switch: np.ndarray  # switch events per pixel (n,)
    confidence: np.ndarray | None = None  # (n, 3) in CONFIDENCE_STATS order

    def __len__(self) -> int:
        return len(self.names)

    def stat(self, name: str) -> np.ndarray:
        if self.confidence is None:
            raise FalseCliError(f"the strategy needs the pool's softmax statistics ({name}); "
                                "the run has none")
        return self.confidence[:, CONFIDENCE_STATS.index(name)]


@dataclass
class Choice:
    """A query's result: every pool section's score and place in the priority order, the
    chosen ones (pool positions, in the order taken) and the gap each was admitted under."""

    strategy: str
    scores: np.ndarray
    order: np.ndarray  # pool positions, first = queried first
    chosen: list[int]
    gaps: list[int]
    details: dict[str, Any] = field(default_factory=dict)


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise FalseCliError(f"unknown query strategy '{strategy}'"
                            f"{did_you_mean(strategy, STRATEGIES)} (the strategies are "
                            f"{', '.join(STRATEGIES)})")


def choose(pool: PoolStats, strategy: str, budget: int, *, min_gap: int = 3,
           labelled: Sequence[tuple[str, int]] = (), seed: int = 0) -> Choice:
    """Choose ``budget`` pool sections by ``strategy`` under the gap rule; ``labelled``: the
    (axis, index) of the labelled training sections."""
    check_strategy(strategy)
    if len(pool) == 0:
        raise FalseCliError("the pool holds no unlabelled section: every training section "
                            "is labelled, so there is nothing to query")
    if budget > len(pool):
        raise FalseCliError(f"budget {budget} is larger than the pool ({len(pool)} unlabelled "
                            f"sections); use a budget of at most {len(pool)}")
    rng = np.random.default_rng(seed)
    details: dict[str, Any] = {}
    if strategy == "gauss":
        scores, order, details = _gauss(pool.switch, budget, rng)
    else:
        if strategy == "switch":
            scores = pool.switch
        elif strategy == "entropy":
            scores = pool.stat("entropy")
        elif strategy == "least_confidence":
            scores = pool.stat("least_confidence")
        elif strategy == "margin":
            scores = 1.0 - pool.stat("margin")
        else:  # random
            scores = rng.random(len(pool))
        order = _descending(scores)
    chosen, gaps = spread(order, pool.axes, pool.indices, budget, min_gap, labelled)
    return Choice(strategy, np.asarray(scores, dtype=np.float64), order, chosen, gaps, details)


def _descending(scores: np.ndarray) -> np.ndarray:
    """Positions by score, highest first; ties keep pool order (stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _gauss(switch: np.ndarray, budget: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """GauSS: posterior of the high-switching component as the score; the order is a
    weighted random order of that component's members (Efraimidis-Spirakis keys
    ``u ** (1 / posterior)``: walking it and skipping what the gap rule refuses draws each
    next section in proportion to its posterior among the admissible ones), then the other
    sections in switch order (the fallback, also when the component is too small)."""
    x = np.asarray(switch, dtype=np.float64)
    if np.unique(x).size < 2:  # no spread to model: every section is alike
        posterior = np.ones_like(x)
        details: dict[str, Any] = {"means": [float(x[0])] * 2 if x.size else [],
                                   "weights": [1.0, 0.0], "degenerate": True}
    else:
        from sklearn.mixture import GaussianMixture

        z = ((x - x.mean()) / x.std())[:, None]  # standardised: reg_covar is scale-free
        gmm = GaussianMixture(n_components=2, random_state=int(rng.integers(2**31)), n_init=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes on tiny pools
            gmm.fit(z)
        high = int(np.argmax(gmm.means_[:, 0]))
        posterior = gmm.predict_proba(z)[:, high]
        details = {"means": [float(m * x.std() + x.mean()) for m in gmm.means_[:, 0]],
                   "weights": [float(w) for w in gmm.weights_], "high": high,
                   "degenerate": False}
    members = np.flatnonzero(posterior > 0.5)
    keys = rng.random(members.size) ** (1.0 / np.maximum(posterior[members], 1e-12))
    first = members[np.argsort(-keys, kind="stable")]
    rest = np.setdiff1d(np.arange(x.size), members)
    rest = rest[_descending(x[rest])]
    details.update(high_members=int(members.size), fallback=bool(members.size < budget))
    return posterior, np.concatenate([first, rest]).astype(np.int64), details


def spread(order: Sequence[int], axes: Sequence[str], indices: Sequence[int], budget: int,
           min_gap: int, labelled: Sequence[tuple[str, int]] = ()) -> tuple[list[int], list[int]]:
    """Walk ``order`` and take each section no closer than ``gap`` indices on its axis to a
    taken or labelled one, starting at ``min_gap`` and shrinking the gap by one whenever the
    order is exhausted before ``budget``; returns the taken positions and their gaps."""
    indices = np.asarray(indices, dtype=np.int64)
    top = int(max([*indices, *(i for _, i in labelled)], default=0)) + 1
    chosen: list[int] = []
    gaps: list[int] = []
    taken: set[int] = set()
    for gap in range(min_gap, 0, -1):
        blocked = {axis: np.zeros(top, dtype=bool) for axis in set(axes) | {a for a, _ in labelled}}

        def block(axis: str, index: int) -> None:
            blocked[axis][max(index - gap + 1, 0):index + gap] = True

        for axis, index in labelled:
            block(axis, index)
        for i in chosen:
            block(axes[i], int(indices[i]))
        for i in order:
            if len(chosen) == budget:
                return chosen, gaps
            i = int(i)
            if i in taken or blocked[axes[i]][indices[i]]:
                continue
            chosen.append(i)
            gaps.append(gap)
            taken.add(i)
            block(axes[i], int(indices[i]))
        if len(chosen) == budget:
            break
    return chosen, gaps
