"""The verdicts on the paper's claims from hand-made per-seed results, and the exact tests
behind them: a claim holds when every comparison is significant on the claimed side, fails
when Holm's step-down finds one on the other, and is inconclusive between — saying what its
seeds could detect; no verdict below three seeds or from values without spread."""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import independent
from falsecli.method import claims as cl
from falsecli.method import statistics
from falsecli.method import verdicts as vd


def test_sign_flip_p_is_exact() -> None:
    assert vd.sign_flip_p([1.0, 2.0, 3.0]) == 1 / 8  # only all-plus reaches the sum 6
    assert vd.sign_flip_p([1.0, -1.0, 2.0]) == 3 / 8  # sums 4, 2, 2 of ±1 ±1 ±2 reach 2
    assert vd.sign_flip_p([1.0, 1.0, 1.0]) == 1 / 8  # ties do not split
    x = np.random.default_rng(4).normal(0.4, 1.0, 7)
    want = sps.permutation_test((x,), np.mean, permutation_type="samples",
                                alternative="greater", n_resamples=np.inf).pvalue
    assert vd.sign_flip_p(x) == pytest.approx(want)


def test_holm_steps_down() -> None:
    assert vd.holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]
    assert vd.holm([0.02, 0.02, 0.03], 0.05) == [False, False, False]  # 0.02 > 0.05 / 3
    assert vd.holm([0.02, 0.001, 0.2], 0.05) == [True, True, False]


def _c3(transfer: list[float], flip: list[float]) -> cl.Claim:
    """C3 on region counts (area 10× the count) against a baseline and flip."""
    base = [9, 10, 9, 10, 9, 10, 9, 10][:len(transfer)]
    out = {}
    for method, counts in (("baseline", base), ("flip", flip), ("transfer", transfer)):
        out[method] = [cl.Result(s, {"tracked/high_density_regions": c,
                                     "tracked/high_density_area": 10 * c})
                       for s, c in enumerate(counts)]
    return cl.c3_regions(out)


def test_claim_c3_needs_every_comparison_and_holm_for_failure() -> None:
    assert _c3([1, 2, 1, 2, 1, 3], [7, 8, 9, 8, 9, 8]).verdict == cl.HOLDS
    # more regions than flip in each of 8 seeds: p = 1/256 <= 2.5 % / 4
    assert _c3([9, 11, 10, 12, 9, 11, 10, 12], [2, 3, 2, 3, 2, 3, 2, 3]).verdict == cl.FAILS
    # more than flip in each of 6 seeds (p = 1/64 = 1.6 %) while the baseline is matched:
    # significant alone, not after Holm over the claim's four comparisons
    one = _c3([10, 9, 11, 9, 10, 11], [9, 7, 10, 6, 9, 9])
    assert one.verdict == "inconclusive at 6 seeds"
    assert "regions vs flip: -1.67 toward the claim (sd 0.816)" in one.note
    assert "no effect on the claimed side to detect" in one.note
    assert cl.c3_regions({"baseline": []}).verdict == "not measured"


def test_few_seeds_give_no_verdict_and_say_what_is_needed() -> None:
    few = _c3([1, 2], [8, 9])
    assert few.verdict == "inconclusive: too few seeds: n = 2, need 3"
    four = _c3([1, 3, 1, 2], [8, 9, 8, 9])  # far apart, but 2⁻⁴ > 2.5 %
    assert four.verdict == "inconclusive at 4 seeds"
    assert four.note.startswith("no exact test decides anything below 6 seeds; ")
    assert "6 seeds would detect it" in four.note  # the effect is huge against its spread


def test_values_without_spread_give_no_verdict() -> None:
    classes, pixels = ["big", "thin", "thinner"], {"big": 100, "thin": 10, "thinner": 5}
    base = [cl.Result(s, {"tracked/density/big": 0.1, "tracked/density/thin": 0.5,
                          "tracked/density/thinner": 0.5}) for s in range(8)]
    flat = cl.c2_thin_classes(base, classes, pixels)  # margin 0.4 in every seed, sd 0
    assert flat.verdict == "inconclusive at 8 seeds" and "no spread" in flat.note
    rounded = [0.4 + s / 10 - s / 10 for s in range(8)]  # 0.4 up to float rounding
    assert max(rounded) > min(rounded) and not vd.Test("d", tuple(rounded)).judged()
    for s, r in enumerate(base):
        r.values["tracked/density/thin"] += s / 100
        r.values["tracked/density/thinner"] += s / 100
    assert cl.c2_thin_classes(base, classes, pixels).verdict == cl.HOLDS


def test_power_note_matches_the_t_approximation() -> None:
    t = vd.Test("d", (0.1, 0.3, -0.1, 0.2, 0.0, 0.1, 0.2))
    sd, n = float(np.std(t.values, ddof=1)), 7
    want = (sps.t.ppf(0.975, 6) + sps.t.ppf(0.8, 6)) * sd / np.sqrt(n)
    assert vd.detectable(sd, n) == pytest.approx(want)
    needed = vd.seeds_needed(0.05, sd)
    assert vd.detectable(sd, needed) <= 0.05 < vd.detectable(sd, needed - 1)
    assert vd.detectable(sd, 5) == np.inf and vd.seeds_needed(0.0, sd) is None


def test_claim_c2_takes_the_two_smallest_classes() -> None:
    classes = ["big", "mid", "thin", "thinner"]
    pixels = {"big": 1000, "mid": 500, "thin": 30, "thinner": 10}
    dens = [{"big": 0.1, "mid": 0.2, "thin": 0.9, "thinner": 0.8 + s / 10} for s in range(6)]
    base = [cl.Result(s, {f"tracked/density/{c}": v for c, v in d.items()})
            for s, d in enumerate(dens)]
    claim = cl.c2_thin_classes(base, classes, pixels)
    assert claim.numbers["thin"] == ["thinner", "thin"] and claim.verdict == cl.HOLDS
    assert "never classified right" not in claim.measured  # nothing measured, nothing said
    for r, share in zip(base, (0.9, 0.95, 1.0, 0.9, 0.95, 1.0)):
        r.values["tracked/never_learned/thinner"] = share
    said = cl.c2_thin_classes(base, classes, pixels)
    assert said.numbers["never_learned"] == {"thinner": pytest.approx(0.95)}
    assert "never forgotten: thinner 95% of its pixels" in said.measured
    for r in base:
        r.values["tracked/density/mid"] = 2.0 + r.seed / 10
    assert cl.c2_thin_classes(base, classes, pixels).verdict == cl.FAILS


def _c4(other_transfer: float, wobble: float = 0.001, seeds: int = 8) -> cl.Claim:
    runs = {"baseline": [cl.Result(s, {"test1/class_acc/scruff": 0.3 + s / 100,
                                       "test1/class_acc/a": 0.9 + (s % 3) / 1000})
                         for s in range(seeds)],
            "transfer": [cl.Result(s, {"test1/class_acc/scruff": 0.5 + s / 100 + (s % 2) / 50,
                                       "test1/class_acc/a": other_transfer + (s % 2 * 2 - 1) * wobble})
                         for s in range(seeds)]}
    return cl.c4_accuracy(runs, ["a", "scruff"], "scruff", "test1", 0.05)


def test_claim_c4_is_an_equivalence_test() -> None:
    assert _c4(0.9).verdict == cl.HOLDS
    assert _c4(0.5).verdict == cl.FAILS  # a dropped by 0.4, beyond the margin, every seed
    assert _c4(0.86).verdict == cl.HOLDS  # a drop of 0.04 every seed: within 0.05
    # a drop by less than the margin, too noisy to be shown within it, leaves the claim open
    near = _c4(0.86, wobble=0.03)
    assert near.verdict == "inconclusive at 8 seeds" and "a above −0.05" in near.note
    assert "smallest detectable" in near.note and not near.note.startswith("no exact")
    assert _c4(0.99).verdict.startswith("inconclusive")  # rising beyond is no failure


def test_claim_c5_needs_a_local_change() -> None:
    local = cl.c5_locality([5.0, 6.0, 5.5, 5.2, 6.1, 5.8], [0.02, 0.03, 0.025, 0.01, 0.02,
                                                           0.04], 0.1)
    assert local.verdict == cl.HOLDS
    whole = cl.c5_locality([1.2, 1.3, 1.25, 1.1, 1.2, 1.3, 1.4, 1.2],
                           [0.9, 0.95, 0.92, 0.8, 0.9, 0.85, 0.9, 0.93], 0.1)
    assert whole.verdict == cl.FAILS


def _class_only_run(folder: Path, seed: int, boundary_effect: float) -> dict[str, float]:
    """A tracked section of a thick class, a 3-sample-thin class and another thick class;
    each pixel's prediction is wrong in an epoch with a probability set by its class (the
    thin class flips most), plus ``boundary_effect`` within 2 px of another class."""
    rng = np.random.default_rng(seed)
    depth, width = 30, 12
    rows = np.repeat([0] * 13 + [1] * 3 + [2] * 14, width).astype(np.uint8)
    section = independent.section_entries([("inline_0000", "inline", 0, (depth, width))])
    near = statistics.boundary(rows.reshape(depth, width), 255).ravel()
    wrong = np.array([0.05, 0.5, 0.05])[rows] + boundary_effect * near
    preds = np.where(rng.random((8, rows.size)) < wrong, (rows + 1) % 3, rows).astype(np.uint8)
    independent.write_from_predictions(folder / "tracking", section, rows, preds,
                                       ["a", "thin", "b"])
    stats, _ = statistics.forgetting_stats(folder, 0, 8, region_events=3, min_region=5)
    return stats


def test_claim_c1_is_measured_within_classes(tmp_path: Path) -> None:
    """Forgetting set by the class alone makes the thin class look like 'boundary': across
    classes the ratio is far above 1, within classes it is 1 and C1 must not hold; a real
    boundary effect inside the thick classes makes it hold."""
    def claim(effect: float) -> cl.Claim:
        runs = [_class_only_run(tmp_path / f"{effect}-{s}", s, effect) for s in range(8)]
        pixels = {c: int(runs[0][f"pixels/{c}"]) for c in ("a", "thin", "b")}
        return cl.c1_boundaries([cl.Result(s, {f"tracked/{k}": v for k, v in r.items()})
                                 for s, r in enumerate(runs)], pixels)

    class_only = claim(0.0)
    assert class_only.numbers["across"] > 2  # the old measure would call it a boundary effect
    assert 0.7 < class_only.numbers["ratio"] < 1.3 and class_only.verdict != cl.HOLDS
    assert "thin" not in class_only.numbers["within"]  # all boundary: no interior
    assert claim(0.3).verdict == cl.HOLDS


def test_claim_c3_is_judged_off_the_style_sources() -> None:
    """Transfer that only clears the sections it learned the look of does not pass C3; the
    sources' numbers are shown beside, labelled, and the all-class claim reads its own keys."""
    def values(on: float, off: float, seed: int) -> dict[str, float]:
        out = {}
        for scope, v in (("sources", on), ("off_sources", off)):
            for cls in ("", "all_classes/"):
                out[f"tracked/{scope}/{cls}high_density_regions"] = v + seed % 3
                out[f"tracked/{scope}/{cls}high_density_area"] = 10 * v + seed
        return out

    runs = {m: [cl.Result(s, values(on + (s % 2) * (m == "transfer"), 9.0, s))
                for s in range(8)]
            for m, on in (("baseline", 9.0), ("flip", 9.0), ("transfer", 1.0))}
    got = cl.c3_regions(runs, "tracked/off_sources", ["inline_0000", "inline_0005"])
    assert got.verdict.startswith("inconclusive")
    assert "On the 2 style sources (inline_0000, inline_0005; not judged): regions vs " \
           "baseline -7.5" in got.measured
    assert cl.c3_regions(runs, "tracked/sources").verdict == cl.HOLDS  # where it did clear
    every = cl.c3_regions(runs, "tracked/off_sources/all_classes", ["inline_0000"])
    assert every.claim == "C3-all" and every.verdict.startswith("inconclusive")


def test_claim_c3_tells_vanished_from_weakened_regions() -> None:
    fate = {"transfer": (0.75, 0.25, 0.0), "flip": (0.0, 0.5, 0.5)}
    runs = {m: [cl.Result(s, {"tracked/high_density_regions": 5.0 + s % 2,
                              "tracked/high_density_area": 50.0 + s,
                              **{f"tracked/regions_{k}": v + s / 100
                                 for k, v in zip(("vanished", "weakened", "kept"), shares)}})
                for s in range(3)] for m, shares in fate.items()}
    got = cl.c3_regions(runs)
    assert "transfer 0.76/0.26/0.01; flip 0.01/0.51/0.51" in got.measured
    assert got.numbers["fate"]["flip"]["weakened"] == pytest.approx(0.51)
    assert "vanished" not in cl.c3_regions(runs, "tracked/all_classes").measured


def test_claim_c1_shows_the_final_margin_beside() -> None:
    pixels = {"a": 10}
    base = [cl.Result(s, {"tracked/boundary_density/a": 2.0 + s / 10,
                          "tracked/interior_density/a": 1.0,
                          "tracked/boundary_density": 2.0, "tracked/interior_density": 1.0,
                          "tracked/margin_spearman": -0.5 + s / 100,
                          "tracked/margin_forgotten": 0.1, "tracked/margin_not_forgotten": 0.7})
            for s in range(3)]
    got = cl.c1_boundaries(base, pixels)
    assert "Spearman ρ -0.49 [" in got.measured and "forgotten at least once +0.10" in got.measured
    assert got.numbers["margin_spearman"] == pytest.approx(-0.49)
    for r in base:
        del r.values["tracked/margin_spearman"]
    assert "Spearman" not in cl.c1_boundaries(base, pixels).measured


def test_no_c4_from_val_which_holds_the_style_sources() -> None:
    from falsecli.method import comparison

    def results(test: bool) -> dict[str, list[cl.Result]]:
        split = "test1" if test else "val"
        return {m: [cl.Result(s, {"val/miou": 0.5, f"{split}/miou": 0.5,
                                  f"{split}/class_acc/scruff": 0.3 + s / 10
                                  + (m == "transfer") * (1 + s % 2 / 10)})
                    for s in range(6)] for m in ("baseline", "transfer")}

    rep = {"equivalence_margin": 0.05, "surroundings_tolerance": 0.1}
    for test, want in ((False, "not measured"), (True, cl.HOLDS)):
        m = comparison.Measured([], results(test), {}, {}, {})
        c4 = next(c for c in comparison.claims(m, ["a", "scruff"], 1, rep, [], [])
                  if c.claim == "C4")
        assert c4.verdict == want, c4.measured
        assert ("val holds the style sources" in c4.measured) == (not test)


def test_c3_leaves_out_every_run_with_the_choosing_seed() -> None:
    """train/'s seed chose the sections and shares its initial weights with every method's
    run of that seed: C3 compares the other seeds only."""
    from falsecli.method import comparison

    results = {m: [cl.Result(s, {"tracked/high_density_regions": 5.0 + s % 2 + (m == "flip"),
                                 "tracked/high_density_area": 50.0 + s})
                   for s in range(6)] for m in ("baseline", "flip", "transfer")}
    m = comparison.Measured([], results, {}, {}, {}, chooser=0)
    rep = {"equivalence_margin": 0.05, "surroundings_tolerance": 0.1}
    c3 = next(c for c in comparison.claims(m, ["a"], 0, rep, [], []) if c.claim == "C3")
    assert {v["n"] for v in c3.numbers.values()} == {5}
    assert c3.verdict == "inconclusive at 5 seeds"
