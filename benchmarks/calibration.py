"""How often the report's verdicts are wrong, and how often right, under known truths.

    python benchmarks/calibration.py [--draws 1000] [--seeds 2-8] [--json]

Simulates the report's inputs — per-seed run values as :mod:`falsecli.method.comparison`
hands them to the claims — and judges them with the report's own claim functions
(:mod:`falsecli.method.claims`), under three truths per claim: ``null`` (no difference
between methods, no boundary or thin-class effect), ``claimed`` (an effect of the stated
size on the claimed side) and ``other`` (the same size on the other side). A verdict is
wrong when it says ``holds`` under null or other, or ``does not hold`` under null or
claimed. The goal: a wrong verdict at most 5 % at every number of seeds; the power (holds
under claimed, does not hold under other) is what the seeds buy.

The simulated values are made to be awkward where the real ones are: C3's region counts
are Poisson integers that tie across seeds, its areas are correlated with them, runs with
the same seed share a per-seed effect (pairing), and C1's ratio is of densities per class.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable

import numpy as np

from falsecli.method import claims as cl

CLASSES = ["a", "b", "thin", "thinner", "scruff"]
PIXELS = {"a": 5000, "b": 3000, "thin": 60, "thinner": 40, "scruff": 800}
#: the planted effect of each claim (in its units) and how it is put into the values
EFFECTS = {"C1": "boundary density ×1.35 within every class",
           "C2": "thin classes' density +0.15 over the densest other",
           "C3": "transfer: 40 % fewer high-density regions (and area) than every control",
           "C4": f"scruff accuracy +0.10; other classes equal (margin {0.05})",
           "C5a": "style moved +0.10 beyond the identity sample per style source"}
TRUTHS = {"null": 0.0, "claimed": 1.0, "other": -1.0}


def c1(rng: np.random.Generator, n: int, side: float) -> cl.Claim:
    """Per class, interior density ~ gamma; boundary = interior · exp(side · log 1.35 + noise)."""
    runs = []
    for s in range(n):
        values = {}
        for c in CLASSES:
            interior = rng.gamma(4.0, 0.05)
            values[f"tracked/interior_density/{c}"] = interior
            values[f"tracked/boundary_density/{c}"] = interior * np.exp(
                side * np.log(1.35) + rng.normal(0, 0.2))
        values["tracked/boundary_density"] = values["tracked/interior_density"] = 1.0
        runs.append(cl.Result(s, values))
    return cl.c1_boundaries(runs, PIXELS)


def c2(rng: np.random.Generator, n: int, side: float) -> cl.Claim:
    """The two thin classes at the densest other class's level + side · 0.15, per-run noise."""
    runs = []
    for s in range(n):
        top = 0.5 + rng.normal(0, 0.1)
        thin = top + side * 0.15 + rng.normal(0, 0.1)
        dens = {"a": top, "b": top - 0.3, "scruff": top - 0.2, "thin": thin,
                "thinner": thin + abs(rng.normal(0, 0.02))}
        runs.append(cl.Result(s, {f"tracked/density/{c}": v for c, v in dens.items()}))
    return cl.c2_thin_classes(runs, CLASSES, PIXELS)


def c3(rng: np.random.Generator, n: int, side: float) -> cl.Claim:
    """Poisson region counts around a per-seed level (shared by every method with the seed),
    transfer's scaled by 1 − side · 0.4; area ≈ 30 px per region plus noise."""
    level = rng.gamma(8.0, 1.0, n)
    runs = {}
    for method in ("baseline", "flip", "rotate", "transfer-identity", "transfer"):
        scale = 1 - side * 0.4 if method == "transfer" else 1.0
        counts = rng.poisson(level * scale)
        runs[method] = [cl.Result(s, {"tracked/high_density_regions": float(k),
                                      "tracked/high_density_area":
                                      float(30 * k + abs(rng.normal(0, 10)) * k)})
                        for s, k in enumerate(counts)]
    return cl.c3_regions(runs)


def c4(rng: np.random.Generator, n: int, side: float) -> cl.Claim:
    """Class accuracies around a per-seed level; transfer's scruff + side · 0.10; the other
    classes equal in truth (the claim's second half true) with seed noise sd 0.015."""
    runs = {}
    level = rng.normal(0, 0.03, n)
    for method in ("baseline", "transfer-identity", "transfer"):
        shift = side * 0.10 if method == "transfer" else 0.0
        runs[method] = [cl.Result(s, {f"test/class_acc/{c}": (
            0.4 + shift + level[s] + rng.normal(0, 0.05) if c == "scruff"
            else 0.8 + rng.normal(0, 0.015)) for c in CLASSES}) for s in range(n)]
    return cl.c4_accuracy(runs, CLASSES, "scruff", "test", 0.05)


def c5a(rng: np.random.Generator, n: int, side: float) -> cl.Claim:
    """n style sources of 8 samples; a per-source effect shared by its samples (clustering)."""
    sources = [f"s{k}" for k in range(n) for _ in range(8)]
    per_source = {f"s{k}": side * 0.10 + rng.normal(0, 0.08) for k in range(n)}
    identity = list(rng.normal(0.2, 0.1, len(sources)))
    swap = [i + per_source[s] + rng.normal(0, 0.1) for i, s in zip(identity, sources)]
    return cl.c5a_style(swap, identity, sources)


SCENARIOS: dict[str, Callable[[np.random.Generator, int, float], cl.Claim]] = {
    "C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5a": c5a}


def category(verdict: str) -> str:
    return {cl.HOLDS: "holds", cl.FAILS: "fails"}.get(verdict, "inconclusive")


def wrong(truth: str, shares: dict[str, float]) -> float:
    """The share of verdicts that contradict the truth."""
    return {"null": shares["holds"] + shares["fails"], "claimed": shares["fails"],
            "other": shares["holds"]}[truth]


def calibrate(draws: int, seeds: list[int], rng_seed: int = 0,
              claims: list[str] | None = None) -> list[dict[str, float | int | str]]:
    """One row per (claim, truth, n): the shares of holds / fails / inconclusive and wrong."""
    rows = []
    for claim in claims or list(SCENARIOS):
        for truth, side in TRUTHS.items():
            for n in seeds:
                rng = np.random.default_rng([rng_seed, len(rows)])
                got = Counter(category(cl_.verdict) for cl_ in
                              (SCENARIOS[claim](rng, n, side) for _ in range(draws)))
                shares = {k: got[k] / draws for k in ("holds", "fails", "inconclusive")}
                rows.append({"claim": claim, "truth": truth, "n": n, **shares,
                             "wrong": wrong(truth, shares), "draws": draws})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per claim and truth, P(holds) / P(does not hold) at each n."""
    ns = sorted({r["n"] for r in rows})
    out = ["| claim | truth | " + " | ".join(f"n={n}" for n in ns) + " |",
           "|---|---|" + "---|" * len(ns)]
    for claim in dict.fromkeys(r["claim"] for r in rows):
        for truth in TRUTHS:
            cells = {r["n"]: r for r in rows if r["claim"] == claim and r["truth"] == truth}
            out.append(f"| {claim} | {truth} | " + " | ".join(
                f"{cells[n]['holds']:.3f} / {cells[n]['fails']:.3f}" for n in ns) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seeds", default="2-8", help="a range, e.g. 2-8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    low, high = (int(v) for v in args.seeds.split("-"))
    rows = calibrate(args.draws, list(range(low, high + 1)))
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(table(rows))
        worst = max(rows, key=lambda r: r["wrong"])
        print(f"\nworst wrong-verdict share: {worst['wrong']:.3f} ({worst['claim']}, "
              f"{worst['truth']}, n={worst['n']}); goal <= 0.05")
    return 0 if max(r["wrong"] for r in rows) <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
