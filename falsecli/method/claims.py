"""The paper's claims (C1–C5, C5 in two: C5a style, C5b locality), each measured on the runs of a workdir and judged.

A verdict is ``holds`` when the 95 % interval of the measured quantity lies entirely on the
claimed side, ``does not hold`` when it lies entirely on the other side, and ``inconclusive
at n seeds`` otherwise (including one seed, which gives no interval). Each claim says what
it compared with what, so a reader can check it against Table 1 and Table 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from falsecli.method.statistics import Difference, difference, interval

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
#: the methods transfer is judged against (C3, C4), in the order they are reported
CONTROLS = ("baseline", "flip", "rotate", "transfer-identity")


@dataclass
class Result:
    """One run as the claims see it: its seed and flat values (``split/metric``)."""

    seed: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Claim:
    """A claim, what was measured and the verdict."""

    claim: str
    statement: str
    measured: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "statement": self.statement, "measured": self.measured,
                "verdict": self.verdict, "numbers": self.numbers}


def by_seed(results: Sequence[Result], key: str) -> dict[int, float]:
    """``{seed: value}`` of one value over runs (runs without it, or NaN, left out)."""
    return {r.seed: r.values[key] for r in results
            if key in r.values and not math.isnan(r.values[key])}


def verdict(sign: int, n: int) -> str:
    """From the side an interval lies on: +1 claimed side, −1 the other, 0 straddling."""
    return {1: HOLDS, -1: FAILS}.get(sign, f"{UNSURE} at {n} seed{'s' * (n != 1)}")


def _interval_sign(low: float, high: float, at: float = 0.0) -> int:
    if low > at:
        return 1
    if high < at:
        return -1
    return 0


def _fmt(d: Difference, digits: int = 3) -> str:
    if math.isnan(d.low):
        return f"{d.mean:+.{digits}f} (n={d.n}, no interval)"
    kind = "paired" if d.paired else "unpaired"
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}] ({kind}, n={d.n})"


def _diff_json(d: Difference) -> dict[str, Any]:
    return {"mean": d.mean, "low": d.low, "high": d.high, "n": d.n, "paired": d.paired}


def c1_boundaries(baseline: Sequence[Result]) -> Claim:
    """Forgetting concentrates at class boundaries: boundary over interior event density."""
    ratios = [r.values["tracked/boundary_density"] / r.values["tracked/interior_density"]
              for r in baseline if r.values.get("tracked/interior_density")]
    mean, low, high = interval(ratios)
    measured = (f"events per pixel within 2 px of a label boundary / in class interiors, "
                f"baseline: {mean:.2f}" + ("" if math.isnan(low) else
                                            f" [{low:.2f}, {high:.2f}]") + f" (n={len(ratios)})")
    return Claim("C1", "forgetting concentrates at class boundaries", measured,
                 verdict(_interval_sign(low, high, 1.0), len(ratios)),
                 {"ratio": mean, "low": low, "high": high, "n": len(ratios)})


def c2_thin_classes(baseline: Sequence[Result], classes: Sequence[str],
                    pixels: Mapping[str, int]) -> Claim:
    """The two classes with the fewest tracked pixels (F3: scruff and Zechstein) have the
    highest forgetting density: per run, the lower of their densities minus the highest
    density of any other class."""
    present = [c for c in classes if pixels.get(c, 0) > 0]
    thin = sorted(present, key=lambda c: pixels[c])[:2]
    others = [c for c in present if c not in thin]
    margins = []
    for r in baseline:
        dens = {c: r.values.get(f"tracked/density/{c}", float("nan")) for c in present}
        if others and all(not math.isnan(dens[c]) for c in present):
            margins.append(min(dens[c] for c in thin) - max(dens[c] for c in others))
    mean, low, high = interval(margins)
    means = {c: float(np.mean([r.values[f"tracked/density/{c}"] for r in baseline]))
             for c in present}
    ranked = ", ".join(f"{c} {means[c]:.3f}" for c in sorted(present, key=lambda c: -means[c]))
    never = {c: float(np.mean(v)) for c in thin
             if (v := [r.values[f"tracked/never_learned/{c}"] for r in baseline
                       if f"tracked/never_learned/{c}" in r.values])}
    measured = (f"forgetting density per class, baseline mean: {ranked}; thinnest classes "
                f"{' and '.join(thin)}; margin over the densest other class {mean:+.3f}"
                + ("" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]")
                + f" (n={len(margins)})"
                + ("; never classified right, so never forgotten: "
                   + ", ".join(f"{c} {v:.0%} of its pixels" for c, v in never.items())
                   if never else ""))
    return Claim("C2", f"the thin classes ({', '.join(thin)}) have the highest forgetting "
                 "density", measured, verdict(_interval_sign(low, high), len(margins)),
                 {"thin": thin, "density": means, "never_learned": never, "margin": mean,
                  "low": low, "high": high, "n": len(margins)})


def _not_measured(claim: str, statement: str, why: str) -> Claim:
    return Claim(claim, statement, why, "not measured")


def c3_regions(runs: Mapping[str, Sequence[Result]]) -> Claim:
    """Transfer reduces the target class's high-density regions (number and area) more than
    the controls: transfer − control < 0 for every control present, both measures."""
    statement = ("transfer reduces the target class's high-density regions (number and area) "
                 "more than flip and rotate")
    if "transfer" not in runs:
        return _not_measured("C3", statement, "no transfer runs")
    parts, signs, numbers = [], [], {}
    for control in (c for c in CONTROLS if c in runs):
        for key, label in (("high_density_regions", "regions"), ("high_density_area", "area")):
            d = difference(by_seed(runs["transfer"], f"tracked/{key}"),
                           by_seed(runs[control], f"tracked/{key}"))
            parts.append(f"{label} vs {control} {_fmt(d, 1)}")
            signs.append(-d.sign())  # fewer is the claimed side
            numbers[f"{key}/{control}"] = _diff_json(d)
    n = min(len(runs["transfer"]), *(len(runs[c]) for c in CONTROLS if c in runs))
    return Claim("C3", statement, "transfer − control: " + "; ".join(parts),
                 _all_or_any(signs, n), numbers)


def _all_or_any(signs: Sequence[int], n: int) -> str:
    """Holds when every comparison is on the claimed side, fails when any is on the other."""
    if signs and all(s == 1 for s in signs):
        return HOLDS
    if any(s == -1 for s in signs):
        return FAILS
    return verdict(0, n)


def c4_accuracy(runs: Mapping[str, Sequence[Result]], classes: Sequence[str], target: str,
                split: str) -> Claim:
    """Transfer raises the target class's accuracy (against the baseline and the identity
    control) and keeps every other class within the seeds' spread (|mean difference| at most
    the larger sample std of the two methods)."""
    statement = (f"transfer raises {target} accuracy and keeps the other classes within the "
                 "seeds' spread")
    if "transfer" not in runs or "baseline" not in runs:
        return _not_measured("C4", statement, "needs transfer and baseline runs")
    key = f"{split}/class_acc/{target}"
    parts, signs, numbers = [], [], {}
    for control in ("baseline", "transfer-identity"):
        if control in runs:
            d = difference(by_seed(runs["transfer"], key), by_seed(runs[control], key))
            parts.append(f"{target} vs {control} {_fmt(d)}")
            signs.append(d.sign())
            numbers[f"target/{control}"] = _diff_json(d)
    outside = []
    for c in classes:
        if c == target:
            continue
        k = f"{split}/class_acc/{c}"
        a, b = by_seed(runs["transfer"], k), by_seed(runs["baseline"], k)
        if len(a) < 2 or len(b) < 2:
            continue
        d = difference(a, b)
        spread = max(np.std(list(a.values()), ddof=1), np.std(list(b.values()), ddof=1))
        numbers[f"other/{c}"] = {**_diff_json(d), "spread": float(spread)}
        if abs(d.mean) > spread:
            outside.append(f"{c} {d.mean:+.3f}")
            if d.high < 0:
                signs.append(-1)  # another class fell, beyond the spread and significantly
    parts.append("other classes beyond the spread (transfer − baseline): "
                 + (", ".join(outside) or "none"))
    n = min(len(runs["transfer"]), len(runs["baseline"]))
    result = _all_or_any(signs, n)
    if result == HOLDS and outside:
        result = verdict(0, n)
    return Claim("C4", statement, f"on {split}: " + "; ".join(parts), result, numbers)


def cluster_means(values: Sequence[float | None], clusters: Sequence[str] | None
                  ) -> list[float]:
    """The mean of ``values`` per cluster (first-seen order; None and NaN left out, clusters
    left without a value dropped); each value its own cluster when ``clusters`` is None."""
    if clusters is None:
        clusters = [str(i) for i in range(len(values))]
    groups: dict[str, list[float]] = {}
    for value, cluster in zip(values, clusters):
        if value is not None and not math.isnan(value):
            groups.setdefault(cluster, []).append(value)
    return [float(np.mean(v)) for v in groups.values()]


def _by_sources(result: str, n: int) -> str:
    return f"{UNSURE} at {n} style source{'s' * (n != 1)}" if result.startswith(UNSURE) else result


def c5a_style(swap: Sequence[float | None], identity: Sequence[float | None],
              sources: Sequence[str]) -> Claim:
    """The swap moves the class's style toward the source more than its identity control:
    ``style_moved`` of each sample minus that of its identity sample (same target, same
    noise), averaged per style source, with a t interval over the sources (the samples of
    one source share its style: they are not independent draws)."""
    statement = "the swap moves the class's style toward the source more than its identity"
    if not len(swap):
        return _not_measured("C5a", statement, "no transfer samples")
    paired = [None if a is None or b is None else a - b for a, b in zip(swap, identity)]
    per_source = cluster_means(paired, sources)
    d, low, high = interval(per_source)
    means = [float(np.nanmean([np.nan if v is None else v for v in x]))
             if any(v is not None for v in x) else float("nan") for x in (swap, identity)]
    measured = (f"style moved toward the source (1: the source's style, 0: the target's), "
                f"swap {means[0]:.3f} vs identity control {means[1]:.3f}; swap − identity "
                f"{d:+.3f}" + ("" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]")
                + f" (paired per sample, interval over n={len(per_source)} style sources, "
                f"{len(swap)} samples)")
    result = _by_sources(verdict(_interval_sign(low, high), len(per_source)), len(per_source))
    return Claim("C5a", statement, measured, result,
                 {"style_moved": means[0], "identity_style_moved": means[1], "difference": d,
                  "low": low, "high": high, "sources": len(per_source), "samples": len(swap)})


def c5_locality(ratio: Sequence[float], relative_outside: Sequence[float], tolerance: float,
                sources: Sequence[str] | None = None) -> Claim:
    """C5b: the swap changes the class, not its surroundings: per sample, the mean change
    inside the class over the same outside it, against the identity sample (> 1; against the
    target the generator's reconstruction error would pass for a change), and the change
    outside relative to the target's own mean |amplitude| there (at most ``tolerance``).
    Intervals over the style sources' means (over the samples without ``sources``)."""
    statement = "the swap changes the class and keeps its surroundings"
    if not len(ratio):
        return _not_measured("C5b", statement, "no transfer samples")
    ratios, outsides = cluster_means(ratio, sources), cluster_means(relative_outside, sources)
    r, r_low, r_high = interval(ratios)
    o, o_low, o_high = interval(outsides)
    unit = "samples" if sources is None else "style sources"
    measured = (f"change inside / outside the class against the identity sample {r:.2f} "
                f"[{r_low:.2f}, {r_high:.2f}]; change outside relative to the target's "
                f"amplitude {o:.3f} [{o_low:.3f}, {o_high:.3f}] (tolerance {tolerance}; "
                f"n={len(ratios)} {unit}, {len(ratio)} samples)")
    local = _interval_sign(r_low, r_high, 1.0)
    kept = -_interval_sign(o_low, o_high, tolerance)
    result = _all_or_any([local, kept], len(ratios))
    if result.startswith(UNSURE):
        result = f"{UNSURE} at {len(ratios)} {unit}"
    return Claim("C5b", statement, measured, result,
                 {"ratio": r, "ratio_low": r_low, "ratio_high": r_high, "relative_outside": o,
                  "relative_outside_low": o_low, "relative_outside_high": o_high,
                  "tolerance": tolerance, "samples": len(ratio), "clusters": len(ratios)})


def c5_claims(swap: Sequence[Mapping[str, Any]], identity: Sequence[Mapping[str, Any]],
              tolerance: float) -> list[Claim]:
    """C5a and C5b from the rows of ``transfer/changes.csv`` of the swapped samples and of
    their identity samples (same order)."""
    sources = [row["source"] for row in swap]
    ratio = [row["change_inside"] / max(row["change_outside"], 1e-12) for row in swap]
    outside = [row["change_outside_vs_target"] / max(row["amplitude_outside"], 1e-12)
               for row in swap]
    return [c5a_style([_moved(row) for row in swap], [_moved(row) for row in identity],
                      sources),
            c5_locality(ratio, outside, tolerance, sources)]


def _moved(row: Mapping[str, Any]) -> float | None:
    value = row["style_moved"]
    return None if value is None or math.isnan(value) else value
