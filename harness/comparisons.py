"""Two-sample comparisons for claims: "x beats y" over per-seed scores, one-sided.

Pure functions over arrays, as in `harness.stats`: each test returns the one-sided p-value of
"x is larger than y", and `compare` adds the effect (x minus y: a difference of success rates
or of means) with its interval. Paired tests pair the i-th entries of x and y (the same seed,
hence the same initialisation where the algorithms share networks). Holm's correction across a
claim's comparisons is `stats.holm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.stats as sps

from harness import stats

TestName = Literal["fisher", "binomial", "mann_whitney", "wilcoxon", "bootstrap"]
TESTS: tuple[str, ...] = ("fisher", "binomial", "mann_whitney", "wilcoxon", "bootstrap")
BINARY_TESTS = ("fisher", "binomial")  # per-seed yes/no outcomes
PAIRED_TESTS = ("binomial", "wilcoxon")  # the i-th seed of one side against the i-th of the other
BOOTSTRAP_REPS = 10_000


def _outcomes(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0 or not np.all((a == 0.0) | (a == 1.0)):
        raise ValueError(f"{name}: expected per-seed outcomes of 0 or 1")
    return a


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"{name}: expected a non-empty array of finite scores")
    return a


def _paired(x: np.ndarray, y: np.ndarray) -> None:
    if x.size != y.size:
        raise ValueError(f"a paired test needs as many scores on each side; got {x.size} and {y.size}")


def fisher(x: Any, y: Any) -> float:
    """Fisher's exact test on the 2x2 table of successes and failures, one-sided (x succeeds
    more often)."""
    a, b = _outcomes(x, "x"), _outcomes(y, "y")
    table = [[a.sum(), a.size - a.sum()], [b.sum(), b.size - b.sum()]]
    return float(sps.fisher_exact(table, alternative="greater").pvalue)


def binomial(x: Any, y: Any) -> float:
    """Exact binomial (McNemar) test on paired outcomes: among the seeds where the two sides
    differ, does x win more than half? 1 when they never differ."""
    a, b = _outcomes(x, "x"), _outcomes(y, "y")
    _paired(a, b)
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    if wins + losses == 0:
        return 1.0
    return float(sps.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def mann_whitney(x: Any, y: Any) -> float:
    """Mann-Whitney U, one-sided; scipy's exact distribution at small samples without ties."""
    a, b = _scores(x, "x"), _scores(y, "y")
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0  # all scores equal: no evidence either way (scipy returns NaN here)
    return float(sps.mannwhitneyu(a, b, alternative="greater").pvalue)


def wilcoxon(x: Any, y: Any) -> float:
    """Wilcoxon signed-rank test on the paired differences x - y, one-sided (zero differences
    dropped, Wilcoxon's convention); 1 when every difference is zero."""
    a, b = _scores(x, "x"), _scores(y, "y")
    _paired(a, b)
    d = a - b
    if not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(d, alternative="greater", zero_method="wilcox").pvalue)


def _resampled_differences(a: np.ndarray, b: np.ndarray, paired: bool, reps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        return d[rng.integers(0, d.size, (reps, d.size))].mean(axis=1)
    return (a[rng.integers(0, a.size, (reps, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, (reps, b.size))].mean(axis=1))


def bootstrap(x: Any, y: Any, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> float:
    """Bootstrap test of mean(x) > mean(y): the share of resampled differences of means at or
    below zero, counted with the observed one ((k + 1) / (reps + 1), so never exactly 0)."""
    a, b = _scores(x, "x"), _scores(y, "y")
    diffs = _resampled_differences(a, b, False, reps, seed)
    return float((np.count_nonzero(diffs <= 0) + 1) / (reps + 1))


P_VALUE = {"fisher": fisher, "binomial": binomial, "mann_whitney": mann_whitney, "wilcoxon": wilcoxon,
           "bootstrap": bootstrap}


def smallest_p(test: str, n: int) -> float:
    """The smallest p-value `test` can give with n seeds per side (every seed of x above every
    seed of y): below the level a claim needs, no data could support it."""
    if test in ("fisher", "mann_whitney"):
        return 1.0 / math.comb(2 * n, n)
    if test in ("binomial", "wilcoxon"):
        return 0.5**n
    if test == "bootstrap":
        return 1.0 / (BOOTSTRAP_REPS + 1) if n >= 2 else 1.0  # one seed a side: nothing to resample
    raise ValueError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")


def fewest_seeds(test: str, level: float, limit: int = 1000) -> int | None:
    """The fewest seeds per side at which `test` can reach p <= level (None beyond `limit`)."""
    return next((n for n in range(1, limit + 1) if smallest_p(test, n) <= level), None)


@dataclass(frozen=True)
class Effect:
    """x minus y (success rates or means) with its 95% interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def newcombe(x: Any, y: Any, confidence: float = 0.95) -> Effect:
    """Difference of two independent success rates with Newcombe's hybrid score interval
    (his method 10: each rate's Wilson interval, combined), which keeps its coverage at the
    handful of seeds and extreme rates where the Wald interval collapses."""
    a, b = _outcomes(x, "x"), _outcomes(y, "y")
    p1, p2 = a.mean(), b.mean()
    w1, w2 = stats.wilson_mean(a, confidence), stats.wilson_mean(b, confidence)
    l1, u1, l2, u2 = w1.low, w1.high, w2.low, w2.high
    d = p1 - p2
    return Effect(float(d), float(d - math.hypot(p1 - l1, u2 - p2)), float(d + math.hypot(u1 - p1, p2 - l2)))


def bootstrap_difference(x: Any, y: Any, paired: bool = False, confidence: float = 0.95,
                         reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Effect:
    """Difference of means with a percentile bootstrap interval (seeds resampled jointly when paired)."""
    a, b = _scores(x, "x"), _scores(y, "y")
    if paired:
        _paired(a, b)
    diffs = _resampled_differences(a, b, paired, reps, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Effect(float(a.mean() - b.mean()), float(low), float(high))


def effect(test: str, x: Any, y: Any, confidence: float = 0.95) -> Effect:
    """The effect a test's verdict is about, with its interval."""
    if test == "fisher":
        return newcombe(x, y, confidence)
    return bootstrap_difference(x, y, paired=test in PAIRED_TESTS, confidence=confidence)
