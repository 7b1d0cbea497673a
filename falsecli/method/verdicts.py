"""How a claim's comparisons become a verdict (torch-free): exact sign-flip tests, Holm's
step-down over a claim's comparisons, and what an inconclusive result could have detected.

Seeds are few (2–8) and many per-run quantities are integer counts that tie, so a t interval
can be zero-wide or too narrow; a verdict uses the *exact* sign-flip permutation test instead.
Under the null hypothesis that the per-seed values (paired differences, or per-run values
minus the claimed threshold) are symmetric about 0, every one of the 2ⁿ sign patterns of
their magnitudes is equally likely, so the one-sided p-value — the share of patterns whose
mean is at least the observed one — is exact for any distribution, ties included. Its
smallest possible value is 2⁻ⁿ: at fewer than 6 seeds no single comparison can reach the
one-sided 2.5 % a verdict needs, and the report says so instead of guessing.

A claim is a set of comparisons, each with a claimed side. It *holds* when every comparison
is significant on its claimed side at one-sided :data:`ALPHA` (an intersection–union test:
the claim is their conjunction, so no correction is needed); it *does not hold* when Holm's
step-down over the comparisons' other-side p-values rejects at least one at :data:`ALPHA`.
A false verdict in either direction is therefore at most 2.5 % each, 5 % together
(``benchmarks/calibration.py`` measures it). No verdict at fewer than :data:`MIN_SEEDS`
values, nor from a comparison whose values have no spread (a zero-wide interval).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
#: one-sided level of each direction; both directions together: 5 %
ALPHA = 0.025
#: fewer seeds give no verdict, whatever the values
MIN_SEEDS = 3
#: the power the "smallest detectable effect" and "seeds needed" are stated at
POWER = 0.8
#: above this many values the sign patterns are sampled (fixed seed) instead of enumerated
EXACT_UP_TO = 16


def sign_flip_p(values: Sequence[float]) -> float:
    """One-sided exact p-value that the values' mean is > 0 under sign symmetry about 0:
    the share of the 2ⁿ sign patterns of ``|values|`` whose sum is at least the observed."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return 1.0
    sums = _signs(len(x)) @ np.abs(x)
    observed = x.sum()
    # a relative tolerance so that float rounding cannot split equal sums
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, np.abs(x).sum())))


@functools.lru_cache(maxsize=32)
def _signs(n: int) -> np.ndarray:
    """Every sign pattern of n values (a fixed-seed sample of them above EXACT_UP_TO)."""
    if n <= EXACT_UP_TO:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    return np.random.default_rng(0).choice((1.0, -1.0), size=(1 << EXACT_UP_TO, n))


def holm(p: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected at familywise level ``alpha``."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for step, i in enumerate(order):
        if p[i] > alpha / (len(p) - step):
            break
        rejected[i] = True
    return rejected


@dataclass(frozen=True)
class Test:
    """One comparison of a claim: the per-seed values whose mean the claim says is > 0
    (already signed and shifted by the claimed threshold), and a name for the report."""

    name: str
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def spread(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else float("nan")

    def judged(self) -> bool:
        """Enough values with some spread to be tested at all (a spread within float
        rounding of the values is none: differences of equal-step values are not exact)."""
        return self.n >= MIN_SEEDS and self.spread > 1e-9 * max(1.0, *map(abs, self.values))

    def p_claimed(self) -> float:
        return sign_flip_p(self.values) if self.judged() else 1.0

    def p_other(self) -> float:
        return sign_flip_p([-v for v in self.values]) if self.judged() else 1.0


def seeds_for_exact(k: int = 1, alpha: float = ALPHA) -> int:
    """The fewest values at which an exact sign-flip test can reject at ``alpha / k``."""
    return max(MIN_SEEDS, math.ceil(math.log2(k / alpha)))


def detectable(spread: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean effect a one-sided test at ``alpha`` detects with ``power`` at ``n``
    values of standard deviation ``spread`` (t approximation; infinite when an exact test
    cannot reject at this n)."""
    if n < seeds_for_exact(1, alpha) or not spread > 0:
        return math.inf
    return (_quantile(1 - alpha, n - 1) + _quantile(power, n - 1)) * spread / math.sqrt(n)


@functools.lru_cache(maxsize=1024)
def _quantile(q: float, df: int | None) -> float:
    """Student's t quantile (the normal's for ``df`` None), cached: a report and the
    calibration ask for the same few over and over."""
    from scipy import stats

    return float(stats.norm.ppf(q) if df is None else stats.t.ppf(q, df))


def seeds_needed(effect: float, spread: float, alpha: float = ALPHA, power: float = POWER,
                 most: int = 10_000) -> int | None:
    """The fewest values at which an effect of size ``|effect|`` is detected with ``power``
    (None: no effect, or more than ``most``)."""
    if not (spread > 0 and abs(effect) > 0):
        return None
    # the normal approximation is a lower bound (t quantiles exceed z's): start there
    z = _quantile(1 - alpha, None) + _quantile(power, None)
    n = max(seeds_for_exact(1, alpha), math.ceil((z * spread / abs(effect)) ** 2))
    while n <= most:
        if detectable(spread, n, alpha, power) <= abs(effect):
            return n
        n += 1
    return None



def judge(tests: Sequence[Test], can_fail: Sequence[bool] | None = None,
          unit: str = "seed") -> tuple[str, str]:
    """A claim's verdict from its comparisons (each claimed > 0), and for an inconclusive
    one what this n could detect: holds when every test is significant on its claimed side,
    does not hold when Holm's step-down finds one significantly on the other side among the
    tests that ``can_fail`` the claim (all by default; C4's upper equivalence bound cannot:
    a class that rises beyond the margin does the claim no harm)."""
    verdict = decide(tests, can_fail, unit)
    if not verdict.startswith(f"{UNSURE} at"):
        return verdict, ""
    open_ = [t for t in tests if t.p_claimed() > ALPHA]
    n, exact = min(t.n for t in tests), seeds_for_exact()
    lead = (f"no exact test decides anything below {exact} {unit}s; " if n < exact else "")
    return verdict, lead + "; ".join(power_note(t, unit) for t in open_)


def decide(tests: Sequence[Test], can_fail: Sequence[bool] | None = None,
           unit: str = "seed") -> str:
    """The verdict alone (see :func:`judge`)."""
    n = min(t.n for t in tests)
    if n < MIN_SEEDS:
        return f"{UNSURE}: too few {unit}s: n = {n}, need {MIN_SEEDS}"
    if all(t.p_claimed() <= ALPHA for t in tests):
        return HOLDS
    can_fail = [True] * len(tests) if can_fail is None else can_fail
    if any(holm([t.p_other() for t, f in zip(tests, can_fail) if f])):
        return FAILS
    return f"{UNSURE} at {n} {unit}{'s' * (n != 1)}"


def power_note(test: Test, unit: str = "seed") -> str:
    """What an undecided comparison could detect at its n, and the n its effect needs."""
    mean, spread = float(np.mean(test.values)), test.spread
    if not test.judged():
        return (f"{test.name}: {mean:+.3g} in every {unit}, no spread: a zero-wide interval "
                "decides nothing")
    mde = detectable(spread, test.n)
    could = "" if math.isinf(mde) else f"smallest detectable {mde:.3g}; "
    needed = seeds_needed(mean, spread) if mean > 0 else None
    wants = (f"{needed} {unit}s would detect it" if needed
             else "no effect on the claimed side to detect")
    return f"{test.name}: {mean:+.3g} toward the claim (sd {spread:.3g}); {could}{wants}"


def paired(name: str, a: dict[int, float], b: dict[int, float], sign: int = 1,
           shift: float = 0.0) -> Test:
    """``sign · (a − b) + shift`` over the seeds both have: the values a paired comparison
    tests (a seed one method lacks cannot be paired and is left out)."""
    return Test(name, tuple(sign * (a[s] - b[s]) + shift for s in sorted(set(a) & set(b))))
