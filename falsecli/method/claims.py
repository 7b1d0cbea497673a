"""The paper's claims (C1–C5, C5 in two: C5a style, C5b locality), each measured on the runs
of a workdir and judged.

Each claim is a set of comparisons with a claimed side, judged by
:func:`falsecli.method.verdicts.judge`: exact sign-flip tests, ``holds`` when every
comparison is significant on its claimed side, ``does not hold`` when Holm's step-down finds
one significantly on the other, ``inconclusive`` otherwise — with what this number of seeds
could have detected — and no verdict below three seeds. The 95 % t intervals shown beside
are descriptive. Each claim says what it compared with what, so a reader can check it
against Table 1 and Table 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from falsecli.method.statistics import Difference, difference, interval
from falsecli.method.verdicts import FAILS, HOLDS, UNSURE, Test, judge, paired

__all__ = ["FAILS", "HOLDS", "UNSURE"]
#: the methods transfer is judged against (C3, C4), in the order they are reported
CONTROLS = ("baseline", "flip", "rotate", "transfer-identity")


@dataclass
class Result:
    """One run as the claims see it: its seed and flat values (``split/metric``)."""

    seed: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Claim:
    """A claim, what was measured, the verdict and, when inconclusive, what the seeds could
    have detected (``note``)."""

    claim: str
    statement: str
    measured: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "statement": self.statement, "measured": self.measured,
                "verdict": self.verdict, "note": self.note, "numbers": self.numbers}


def by_seed(results: Sequence[Result], key: str) -> dict[int, float]:
    """``{seed: value}`` of one value over runs (runs without it, or NaN, left out)."""
    return {r.seed: r.values[key] for r in results
            if key in r.values and not math.isnan(r.values[key])}


def _judged(claim: str, statement: str, measured: str, tests: Sequence[Test],
            numbers: dict[str, Any], can_fail: Sequence[bool] | None = None,
            unit: str = "seed") -> Claim:
    verdict, note = judge(tests, can_fail, unit)
    return Claim(claim, statement, measured, verdict, numbers, note)


def _fmt(d: Difference, digits: int = 3) -> str:
    if math.isnan(d.low):
        return f"{d.mean:+.{digits}f} (n={d.n}, no interval)"
    kind = "paired" if d.paired else "unpaired"
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}] ({kind}, n={d.n})"


def _diff_json(d: Difference) -> dict[str, Any]:
    return {"mean": d.mean, "low": d.low, "high": d.high, "n": d.n, "paired": d.paired}


def _bounds(low: float, high: float, digits: str = ".2f") -> str:
    return "" if math.isnan(low) else f" [{low:{digits}}, {high:{digits}}]"


def standardised_ratio(values: Mapping[str, float], pixels: Mapping[str, int]) -> float:
    """Boundary over interior forgetting density *within* classes: each class that has both
    boundary and interior pixels weighs its two densities by its tracked pixels, so a class
    that is mostly boundary because it is thin cannot pass its own forgetting rate off as a
    boundary effect (forgetting that depends only on the class gives 1)."""
    top = bottom = 0.0
    for c, w in pixels.items():
        b = values.get(f"tracked/boundary_density/{c}", math.nan)
        i = values.get(f"tracked/interior_density/{c}", math.nan)
        if not (math.isnan(b) or math.isnan(i)):
            top, bottom = top + w * b, bottom + w * i
    return top / bottom if bottom > 0 else math.nan


def c1_boundaries(baseline: Sequence[Result], pixels: Mapping[str, int]) -> Claim:
    """Forgetting concentrates at class boundaries: per run, the class-standardised ratio of
    boundary to interior event density (:func:`standardised_ratio`), tested on its log
    (> 0); the ratio across classes, which partly measures how thin a class is, beside it."""
    ratios = {r.seed: standardised_ratio(r.values, pixels) for r in baseline}
    ratios = {s: v for s, v in ratios.items() if v > 0 and math.isfinite(v)}
    mean, low, high = interval(list(ratios.values()))
    across = [r.values["tracked/boundary_density"] / r.values["tracked/interior_density"]
              for r in baseline if r.values.get("tracked/interior_density")]
    within = {c: float(np.mean(v)) for c in pixels
              if (v := [r.values[f"tracked/boundary_density/{c}"] / i for r in baseline
                        if (i := r.values.get(f"tracked/interior_density/{c}", 0.0)) > 0])}
    measured = (f"events per pixel within 2 px of a label boundary / in the interior of the "
                f"same class, class-standardised, baseline: {mean:.2f}{_bounds(low, high)} "
                f"(n={len(ratios)}); per class: "
                + (", ".join(f"{c} {v:.2f}" for c, v in within.items()) or "no interiors")
                + f"; across classes {float(np.mean(across)) if across else math.nan:.2f}"
                + _margin_text(baseline))
    test = Test("log standardised ratio", tuple(math.log(v) for v in ratios.values()))
    return _judged("C1", "forgetting concentrates at class boundaries (within each class)",
                   measured, [test],
                   {"ratio": mean, "low": low, "high": high, "n": len(ratios),
                    "within": within, "across": float(np.mean(across)) if across else None,
                    **{k: float(np.mean(v)) for k in MARGIN_KEYS
                       if (v := list(by_seed(baseline, f"tracked/{k}").values()))}})


#: how forgetting relates to the final softmax margin (:func:`statistics.margin_relation`)
MARGIN_KEYS = ("margin_spearman", "margin_forgotten", "margin_not_forgotten")


def _margin_text(baseline: Sequence[Result]) -> str:
    """The decision boundary itself, shown, not judged: forgetting against the final
    softmax margin (empty for runs recorded without margins)."""
    found = {k: list(by_seed(baseline, f"tracked/{k}").values()) for k in MARGIN_KEYS}
    if not found["margin_spearman"]:
        return ""
    rho, low, high = interval(found["margin_spearman"])
    return (f"; forgetting events against the final softmax margin (p(label) − the likeliest "
            f"other), Spearman ρ {rho:+.2f}{_bounds(low, high, '+.2f')} "
            f"(n={len(found['margin_spearman'])}); mean margin of pixels forgotten at least "
            f"once {np.mean(found['margin_forgotten']):+.2f}, of the others "
            f"{np.mean(found['margin_not_forgotten']):+.2f}")


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
                + _bounds(low, high, "+.3f") + f" (n={len(margins)})"
                + ("; never classified right, so never forgotten: "
                   + ", ".join(f"{c} {v:.0%} of its pixels" for c, v in never.items())
                   if never else ""))
    return _judged("C2", f"the thin classes ({', '.join(thin)}) have the highest forgetting "
                   "density", measured, [Test("margin", tuple(margins))],
                   {"thin": thin, "density": means, "never_learned": never, "margin": mean,
                    "low": low, "high": high, "n": len(margins)})


def _not_measured(claim: str, statement: str, why: str) -> Claim:
    return Claim(claim, statement, why, "not measured")


def c3_regions(runs: Mapping[str, Sequence[Result]], scope: str = "tracked",
               sources: Sequence[str] = ()) -> Claim:
    """Transfer reduces the high-density regions (number and area) more than the controls:
    transfer − control < 0 for every control present, both measures, paired per seed, on
    the values under ``scope/`` — the target class's (``C3``) or every class's
    (``…/all_classes``: ``C3-all``, as the paper states it), on the tracked sections that
    were not style ``sources`` when there are any (their numbers are shown beside, not
    judged: transfer learned the sources' look)."""
    every = scope.endswith("/all_classes")
    name, whose = ("C3-all", "every class's") if every else ("C3", "the target class's")
    statement = (f"transfer reduces {whose} high-density regions (number and area) more "
                 "than flip and rotate")
    if "transfer" not in runs or not any(c in runs for c in CONTROLS):
        return _not_measured(name, statement, "needs transfer and control runs")
    parts, beside, tests, numbers = [], [], [], {}
    on_sources = scope.replace("off_sources", "sources")
    for control in (c for c in CONTROLS if c in runs):
        for key, label in (("high_density_regions", "regions"), ("high_density_area", "area")):
            a = by_seed(runs["transfer"], f"{scope}/{key}")
            b = by_seed(runs[control], f"{scope}/{key}")
            d = difference(a, b)
            parts.append(f"{label} vs {control} {_fmt(d, 1)}")
            tests.append(paired(f"{label} vs {control}", a, b, sign=-1))  # fewer is claimed
            numbers[f"{key}/{control}"] = _diff_json(d)
            if sources:
                s = difference(by_seed(runs["transfer"], f"{on_sources}/{key}"),
                               by_seed(runs[control], f"{on_sources}/{key}"))
                beside.append(f"{label} vs {control} {_fmt(s, 1)}")
                numbers[f"sources/{key}/{control}"] = _diff_json(s)
    where = ("the tracked sections that were not style sources" if sources
             else "the tracked sections")
    measured = (f"transfer − control on {where}: " + "; ".join(parts)
                + (f". On the {len(sources)} style sources ({', '.join(sources)}; not "
                   "judged): " + "; ".join(beside) if sources else "")
                + ("" if every else _fates(runs, numbers)))
    return _judged(name, statement, measured, tests, numbers)


def _fates(runs: Mapping[str, Sequence[Result]], numbers: dict[str, Any]) -> str:
    """What became of train/'s high-density regions in each method's runs (shown, not
    judged): vanished / weakened / kept, mean shares; empty when not measured."""
    fates = ("vanished", "weakened", "kept")
    means = {m: [float(np.mean(v)) if (v := list(by_seed(rs, f"tracked/regions_{f}")
                                                   .values())) else math.nan
                 for f in fates]
             for m, rs in runs.items() if m == "transfer" or m in CONTROLS}
    if all(math.isnan(v) for shares in means.values() for v in shares):
        return ""
    numbers["fate"] = {m: dict(zip(fates, shares)) for m, shares in means.items()}
    return (". train/'s high-density regions vanished / weakened / kept, mean share per "
            "method: " + "; ".join(f"{m} " + "/".join(f"{v:.2f}" for v in shares)
                                   for m, shares in means.items()))


def c4_accuracy(runs: Mapping[str, Sequence[Result]], classes: Sequence[str], target: str,
                split: str, margin: float) -> Claim:
    """Transfer raises the target class's accuracy (against the baseline and the identity
    control) and keeps every other class equivalent to the baseline's: two one-sided tests
    (TOST) that transfer − baseline lies within ±``margin``; a class significantly lower by
    more than the margin makes the claim fail, one merely not shown equivalent leaves it
    open."""
    statement = (f"transfer raises {target} accuracy and keeps the other classes within "
                 f"±{margin:g}")
    if "transfer" not in runs or "baseline" not in runs:
        return _not_measured("C4", statement, "needs transfer and baseline runs")
    key = f"{split}/class_acc/{target}"
    parts, tests, can_fail, numbers = [], [], [], {}
    for control in ("baseline", "transfer-identity"):
        if control in runs:
            a, b = by_seed(runs["transfer"], key), by_seed(runs[control], key)
            d = difference(a, b)
            parts.append(f"{target} vs {control} {_fmt(d)}")
            tests.append(paired(f"{target} vs {control}", a, b))
            can_fail.append(True)
            numbers[f"target/{control}"] = _diff_json(d)
    others = []
    for c in (c for c in classes if c != target):
        k = f"{split}/class_acc/{c}"
        a, b = by_seed(runs["transfer"], k), by_seed(runs["baseline"], k)
        if not set(a) & set(b):
            continue
        d = difference(a, b)
        numbers[f"other/{c}"] = _diff_json(d)
        others.append(f"{c} {_fmt(d)}")
        tests += [paired(f"{c} above −{margin:g}", a, b, shift=margin),
                  paired(f"{c} below +{margin:g}", a, b, sign=-1, shift=margin)]
        can_fail += [True, False]  # rising beyond the margin is no harm to the claim
    parts.append("other classes (transfer − baseline, equivalence margin "
                 f"±{margin:g}): " + ("; ".join(others) or "none"))
    return _judged("C4", statement, f"on {split}: " + "; ".join(parts), tests,
                   {**numbers, "margin": margin}, can_fail)


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


def c5a_style(swap: Sequence[float | None], identity: Sequence[float | None],
              sources: Sequence[str]) -> Claim:
    """The swap moves the class's style toward the source more than its identity control:
    ``style_moved`` of each sample minus that of its identity sample (same target, same
    noise), averaged per style source, tested over the sources (the samples of one source
    share its style: they are not independent draws)."""
    statement = "the swap moves the class's style toward the source more than its identity"
    if not len(swap):
        return _not_measured("C5a", statement, "no transfer samples")
    diffs = [None if a is None or b is None else a - b for a, b in zip(swap, identity)]
    per_source = cluster_means(diffs, sources)
    d, low, high = interval(per_source)
    means = [float(np.nanmean([np.nan if v is None else v for v in x]))
             if any(v is not None for v in x) else float("nan") for x in (swap, identity)]
    measured = (f"style moved toward the source (1: the source's style, 0: the target's), "
                f"swap {means[0]:.3f} vs identity control {means[1]:.3f}; swap − identity "
                f"{d:+.3f}{_bounds(low, high, '+.3f')} (paired per sample, over "
                f"n={len(per_source)} style sources, {len(swap)} samples)")
    return _judged("C5a", statement, measured, [Test("swap − identity", tuple(per_source))],
                   {"style_moved": means[0], "identity_style_moved": means[1],
                    "difference": d, "low": low, "high": high, "sources": len(per_source),
                    "samples": len(swap)}, unit="style source")


def c5_locality(ratio: Sequence[float], relative_outside: Sequence[float], tolerance: float,
                sources: Sequence[str] | None = None) -> Claim:
    """C5b: the swap changes the class, not its surroundings: per sample, the mean change
    inside the class over the same outside it, against the identity sample (> 1; against the
    target the generator's reconstruction error would pass for a change), and the change
    outside relative to the target's own mean |amplitude| there (below ``tolerance``).
    Tested over the style sources' means (over the samples without ``sources``)."""
    statement = "the swap changes the class and keeps its surroundings"
    if not len(ratio):
        return _not_measured("C5b", statement, "no transfer samples")
    ratios, outsides = cluster_means(ratio, sources), cluster_means(relative_outside, sources)
    r, r_low, r_high = interval(ratios)
    o, o_low, o_high = interval(outsides)
    unit = "sample" if sources is None else "style source"
    measured = (f"change inside / outside the class against the identity sample "
                f"{r:.2f}{_bounds(r_low, r_high)}; change outside relative to the target's "
                f"amplitude {o:.3f}{_bounds(o_low, o_high, '.3f')} (tolerance {tolerance}; "
                f"n={len(ratios)} {unit}s, {len(ratio)} samples)")
    tests = [Test("inside / outside − 1", tuple(v - 1 for v in ratios)),
             Test("tolerance − outside", tuple(tolerance - v for v in outsides))]
    return _judged("C5b", statement, measured, tests,
                   {"ratio": r, "ratio_low": r_low, "ratio_high": r_high,
                    "relative_outside": o, "relative_outside_low": o_low,
                    "relative_outside_high": o_high, "tolerance": tolerance,
                    "samples": len(ratio), "clusters": len(ratios)}, unit=unit)


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
