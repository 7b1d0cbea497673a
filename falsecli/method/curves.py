"""Learning curves of active learning: a metric against the labelled sections, per strategy.

Torch-free: rows are those of ``al/curves.csv`` (:mod:`falsecli.stages.al`), one per
(strategy, seed, round). The area under a curve (trapezoid rule over the labelled-section
count, divided by that count's range) is the metric's mean over the labelling budget: one
number per strategy and seed that says how good a strategy is all along the way, not only at
the end. Over seeds it is reported as mean with a 95 % Student-t interval
``mean ± t(0.975, n-1) · s / sqrt(n)`` (s: sample standard deviation; none for one seed),
and every strategy is compared with random and entropy by the same interval over its
per-seed differences of area (same seed: same initial labels and training randomness).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

Row = Mapping[str, Any]
#: (split, metric) panels of the figure and columns of the table
PANELS = (("val", "miou"), ("val", "mean_class_acc"), ("test", "miou"),
          ("test", "mean_class_acc"))
METRIC_NAMES = {"miou": "mIoU", "mean_class_acc": "mean class accuracy",
                "target_acc": "target-class accuracy"}


def common_rounds(rows: Sequence[Row]) -> int:
    """The last round every (strategy, seed) curve has reached: areas compare only over the
    same labelling budget."""
    last: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["strategy"], r["seed"])
        last[key] = max(last.get(key, -1), r["round"])
    return min(last.values(), default=-1)


def _by_curve(rows: Sequence[Row], column: str, rounds: int
              ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """strategy -> seed -> (labelled sections, values) over rounds 0..``rounds``, skipping
    curves with a missing value (a split the runs did not score)."""
    out: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for r in sorted(rows, key=lambda r: (r["strategy"], r["seed"], r["round"])):
        if r["round"] <= rounds:
            out.setdefault(r["strategy"], {}).setdefault(r["seed"], ([], []))
            xs, ys = out[r["strategy"]][r["seed"]]
            xs.append(r["labelled"])
            ys.append(r[column])
    return {s: {k: (np.array(x, dtype=float), np.array(y, dtype=float))
                for k, (x, y) in seeds.items() if None not in y}
            for s, seeds in out.items()}


def band(rows: Sequence[Row], column: str) -> dict[str, tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]]:
    """strategy -> (labelled sections, mean, sample std over seeds (ddof = 1; NaN, no band,
    for one seed)) at each round that every seed of that strategy has."""
    out = {}
    for strategy, seeds in _by_curve(rows, column, 10**9).items():
        if not seeds:
            continue
        n = min(len(x) for x, _ in seeds.values())
        ys = np.stack([y[:n] for _, y in seeds.values()])
        std = ys.std(0, ddof=1) if len(ys) > 1 else np.full(n, np.nan)
        out[strategy] = (next(iter(seeds.values()))[0][:n], ys.mean(0), std)
    return out


def area(x: np.ndarray, y: np.ndarray) -> float:
    """The trapezoid area under ``y(x)`` over x's range, divided by that range (a single
    point: its value)."""
    if len(x) < 2:
        return float(y[0])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def interval(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and the half-width of its 95 % Student-t interval (NaN for one value)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan"), int(v.size)
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half), int(v.size)


def areas(rows: Sequence[Row], column: str) -> dict[str, tuple[float, float, int]]:
    """strategy -> (mean area, 95 % half-width, seeds) over the rounds common to all curves."""
    rounds = common_rounds(rows)
    return {s: interval([area(x, y) for x, y in seeds.values()])
            for s, seeds in _by_curve(rows, column, rounds).items() if seeds}


#: the strategies every other is compared with, paired by seed
REFERENCES = ("random", "entropy")


def paired_areas(rows: Sequence[Row], column: str
                 ) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(strategy, reference) -> mean, 95 % half-width and count of the per-seed differences
    of their areas (over the seeds both have): a strategy is better than random only if it
    beats random with the same seed, initial labels and training randomness."""
    rounds = common_rounds(rows)
    per_seed = {s: {k: area(x, y) for k, (x, y) in seeds.items()}
                for s, seeds in _by_curve(rows, column, rounds).items()}
    out = {}
    for ref in (r for r in REFERENCES if r in per_seed):
        for strategy, got in per_seed.items():
            common = sorted(set(got) & set(per_seed[ref]))
            if strategy != ref and common:
                out[strategy, ref] = interval([got[k] - per_seed[ref][k] for k in common])
    return out


def differences(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The paired areas table: header, one row per (strategy, reference) with the mean
    difference ± 95 % half-width per split and metric that has values."""
    panels = [f"{s}_{m}" for s, m in PANELS if any(r.get(f"{s}_{m}") is not None for r in rows)]
    cols = {p: paired_areas(rows, p) for p in panels}
    pairs = list(dict.fromkeys(k for col in cols.values() for k in col))
    header = ["strategy − reference", "seeds"] + [
        f"{p.split('_', 1)[0]} {METRIC_NAMES[p.split('_', 1)[1]]} AUC" for p in panels]
    body = []
    for pair in pairs:
        found = [col.get(pair) for col in cols.values()]
        cells = ["–" if f is None else f"{f[0]:+.3f}" + ("" if np.isnan(f[1])
                                                           else f" ± {f[1]:.3f}")
                 for f in found]
        body.append([" − ".join(pair), str(max(f[2] for f in found if f))] + cells)
    return header, body


def table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]], int]:
    """The areas table: header, one row per strategy (mean ± 95 % half-width per split and
    metric that has values), and the last round the areas cover."""
    panels = [(split, metric) for split, metric in PANELS
              if any(r.get(f"{split}_{metric}") is not None for r in rows)]
    cols = {f"{s}_{m}": areas(rows, f"{s}_{m}") for s, m in panels}
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    header = ["strategy", "seeds"] + [f"{s} {METRIC_NAMES[m]} AUC" for s, m in panels]
    body = []
    for strategy in strategies:
        cells = []
        seeds = 0
        for col in cols.values():
            mean, half, n = col.get(strategy, (float("nan"), float("nan"), 0))
            seeds = max(seeds, n)
            cells.append("–" if np.isnan(mean) else
                         f"{mean:.3f}" + ("" if np.isnan(half) else f" ± {half:.3f}"))
        body.append([strategy, str(seeds)] + cells)
    return header, body, common_rounds(rows)
