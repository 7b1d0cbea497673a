"""The verdicts on the paper's claims (C2–C5) from hand-made per-seed results: a claim holds
when its interval lies on the claimed side, fails on the other, and is inconclusive between."""

import pytest

from falsecli.method import claims as cl


def test_claim_c3_needs_fewer_regions_than_every_control() -> None:
    key = "tracked/high_density_regions"
    area = "tracked/high_density_area"

    def runs(transfer: list[float]) -> dict[str, list[cl.Result]]:
        out = {}
        for method, counts in (("baseline", [8, 9, 10, 9]), ("flip", [7, 8, 9, 8]),
                               ("transfer", transfer)):
            out[method] = [cl.Result(s, {key: c, area: 10 * c}) for s, c in enumerate(counts)]
        return out

    assert cl.c3_regions(runs([1, 2, 1, 2])).verdict == cl.HOLDS
    assert cl.c3_regions(runs([12, 13, 14, 13])).verdict == cl.FAILS
    assert cl.c3_regions(runs([1, 20, 2, 15])).verdict == "inconclusive at 4 seeds"
    assert cl.c3_regions({"baseline": runs([1])["baseline"]}).verdict == "not measured"


def test_claim_c2_takes_the_two_smallest_classes() -> None:
    classes = ["big", "mid", "thin", "thinner"]
    pixels = {"big": 1000, "mid": 500, "thin": 30, "thinner": 10}
    dens = [{"big": 0.1, "mid": 0.2, "thin": 0.9, "thinner": 0.8 + s / 10} for s in range(3)]
    base = [cl.Result(s, {f"tracked/density/{c}": v for c, v in d.items()})
            for s, d in enumerate(dens)]
    claim = cl.c2_thin_classes(base, classes, pixels)
    assert claim.numbers["thin"] == ["thinner", "thin"] and claim.verdict == cl.HOLDS
    assert "never classified right" not in claim.measured  # nothing measured, nothing said
    for r, share in zip(base, (0.9, 0.95, 1.0)):
        r.values["tracked/never_learned/thinner"] = share
    said = cl.c2_thin_classes(base, classes, pixels)
    assert said.numbers["never_learned"] == {"thinner": pytest.approx(0.95)}
    assert "never forgotten: thinner 95% of its pixels" in said.measured
    for r in base:
        r.values["tracked/density/mid"] = 2.0
    assert cl.c2_thin_classes(base, classes, pixels).verdict == cl.FAILS


def test_claim_c4_fails_when_another_class_drops_beyond_the_spread() -> None:
    classes = ["a", "scruff"]

    def runs(a_transfer: float) -> dict[str, list[cl.Result]]:
        return {"baseline": [cl.Result(s, {"val/class_acc/scruff": 0.3 + s / 100,
                                           "val/class_acc/a": 0.9 + s / 1000})
                             for s in range(4)],
                "transfer": [cl.Result(s, {"val/class_acc/scruff": 0.5 + s / 100 + (s % 2) / 50,
                                           "val/class_acc/a": a_transfer + s / 1000})
                             for s in range(4)]}

    assert cl.c4_accuracy(runs(0.9005), classes, "scruff", "val").verdict == cl.HOLDS
    dropped = cl.c4_accuracy(runs(0.5), classes, "scruff", "val")
    assert dropped.verdict == cl.FAILS and "spread (transfer − baseline): a -0.400" in dropped.measured
    # a class that rises beyond the spread is named with its sign, and is no failure
    rose = cl.c4_accuracy(runs(0.99), classes, "scruff", "val")
    assert rose.verdict.startswith("inconclusive") and "a +0.090" in rose.measured


def test_claim_c5_needs_a_local_change() -> None:
    local = cl.c5_locality([5.0, 6.0, 5.5], [0.02, 0.03, 0.025], 0.1)
    assert local.verdict == cl.HOLDS
    whole = cl.c5_locality([1.2, 1.3, 1.25], [0.9, 0.95, 0.92], 0.1)
    assert whole.verdict == cl.FAILS
