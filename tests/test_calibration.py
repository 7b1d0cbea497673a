"""The verdicts' calibration, fast and with a fixed seed (benchmarks/calibration.py measures
it at 1000 draws and 2–8 seeds): under no difference, and under planted effects on either
side, the report's claim functions give a wrong verdict at most 5 % of the time, no verdict
at 2 seeds, and the power the docs state."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "calibration", Path(__file__).parents[1] / "benchmarks" / "calibration.py")
calibration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibration)


def test_wrong_verdicts_stay_under_5_percent_and_power_shows() -> None:
    rows = calibration.calibrate(200, [2, 8], rng_seed=1, claims=["C2", "C3"])
    assert len(rows) == 2 * 3 * 2
    for r in rows:
        assert r["wrong"] <= 0.05, r
        if r["n"] == 2:
            assert r["inconclusive"] == 1.0, r
    power = {(r["claim"], r["truth"]): r for r in rows if r["n"] == 8}
    assert power["C2", "claimed"]["holds"] >= 0.8 and power["C2", "other"]["fails"] >= 0.8
    # C3 at 8 seeds: 8 comparisons, each with a null share near 2.5 %: without Holm the
    # null's "does not hold" would be several times the goal
    assert power["C3", "null"]["fails"] <= 0.02
