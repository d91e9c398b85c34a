"""Statistics for leaderboards: seeds are the unit of replication.

Every function here is pure and works on *score tables*: float arrays ``[runs, strata]`` with one
column per stratum (a task, or a (task, composition) cell) and one row per run (seed). A missing
score is NaN, so strata may hold different numbers of runs; ``score_table`` builds such a table
from ragged per-stratum lists. Intervals always use each stratum's real run count: nothing is
divided by an assumed number of seeds, and with fewer than two runs in some stratum there is no
interval (NaN bounds) rather than an invented one.

The aggregate statistics, the stratified bootstrap, the probability of improvement and the
performance profiles follow the published definitions of Agarwal et al. (2021), "Deep RL at the
edge of the statistical precipice" (the `rliable` package, which we cannot import: its current
release breaks under pandas 3):

* mean: mean over strata of each stratum's mean score (each stratum weighs the same);
* median: median over strata of each stratum's mean score;
* IQM: 25% trimmed mean of all present scores pooled (``scipy.stats.trim_mean`` semantics);
* optimality gap: mean over strata of each stratum's mean of ``max(gamma - x, 0)``.

With equal run counts the mean and the optimality gap equal the plain mean over all scores; with
ragged strata they keep every stratum's weight equal, as the profiles do. The IQM pools scores,
so there a stratum with more runs weighs more (trimming needs one pooled sample).

Point estimates are computed on the real data; intervals come from a stratified bootstrap that
resamples runs with replacement within each stratum. Each column is sorted first, so the order
in which a store returned the runs cannot change any result.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy import stats as sps

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# A statistic maps [..., runs, strata] (NaN = missing score) to [...]: it is vectorised over
# leading axes so that all bootstrap replicates are computed in one call.
Statistic = Callable[[FloatArray], Any]

# "expanded" (the default): the percentile interval widened for small samples (Hesterberg 2015,
# "What teachers should know about the bootstrap", The American Statistician 69(4), section 3.3):
# its tail probability is the normal one matching sqrt(n / (n - 1)) times Student's t quantile
# with n - 1 degrees of freedom, n the smallest stratum's run count. A resample of n runs has
# only (n - 1)/n of the sample's variance and the plain percentile interval ignores that its
# width is estimated; at 5 runs per stratum it covers about 90% for a nominal 95%, the expanded
# one 93-97% (tests/test_stats_coverage.py). "percentile" and "bca" stay available by name.
METHODS = ("expanded", "percentile", "bca")
# Bound on the elements of one jackknife chunk (about 64 MB of float64), so BCa on a large table
# cannot exhaust memory.
_CHUNK_ELEMENTS = 8_000_000


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


@dataclass(frozen=True)
class Estimate:
    """A point estimate on the real data with its confidence interval."""

    value: float
    low: float  # NaN when it cannot be estimated (fewer than two runs in some stratum)
    high: float
    n: int  # number of present scores behind it (runs, for one stratum)

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form; NaN becomes None."""
        return {"value": _clean(self.value), "ci_low": _clean(self.low), "ci_high": _clean(self.high),
                "n": self.n}


@dataclass(frozen=True, eq=False)  # ndarray fields: == would be ambiguous; compare as_dict() instead
class Profile:
    """Performance profile: fraction of runs scoring above each threshold, with its band."""

    taus: FloatArray
    fraction: FloatArray
    low: FloatArray  # NaN when not estimable (fewer than two runs in some stratum)
    high: FloatArray

    def as_dict(self) -> dict[str, list[float | None]]:
        return {k: [_clean(float(v)) for v in getattr(self, k)] for k in ("taus", "fraction", "low", "high")}


@dataclass(frozen=True)
class PairTest:
    """Welch's t-test and Mann-Whitney U between algorithms a and b, Holm-corrected across pairs."""

    a: str
    b: str
    n_a: int
    n_b: int
    mean_difference: float  # mean(a) - mean(b)
    welch_t: float
    welch_p: float
    welch_p_holm: float
    mwu_u: float  # U statistic of sample a
    mwu_p: float
    mwu_p_holm: float
    hedges_g: float
    cliffs_delta: float

    def as_dict(self) -> dict[str, Any]:
        return {k: _clean(v) if isinstance(v, float) else v for k, v in vars(self).items()}


# ---------------------------------------------------------------------------------------------
# Input validation and score tables


def _finite_or_nan(a: FloatArray, name: str) -> None:
    if np.isinf(a).any():
        raise ValueError(f"{name} contains infinite scores; scores must be finite (NaN marks a missing run)")


def _table(x: Any, name: str = "x") -> FloatArray:
    """Validated [runs, strata] float table: 2-D, finite or NaN, every stratum with a run."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [runs, strata] score table; got shape {a.shape} "
                         "(use x[:, None] for a single stratum)")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no strata (shape {a.shape})")
    _finite_or_nan(a, name)
    empty = np.flatnonzero(np.isnan(a).all(axis=0))
    if empty.size:
        raise ValueError(f"{name}: stratum {empty.tolist()} has no runs (every score is NaN)")
    return a


def _counts(a: FloatArray) -> IntArray:
    """Present scores per stratum, along the runs axis (-2)."""
    return np.sum(~np.isnan(a), axis=-2)


def score_table(columns: Sequence[Sequence[float]]) -> FloatArray:
    """Stack per-stratum lists of run scores into a [runs, strata] table, padding with NaN."""
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if not cols:
        raise ValueError("score_table needs at least one stratum")
    for j, c in enumerate(cols):
        if c.ndim != 1:
            raise ValueError(f"stratum {j} must be a 1-D sequence of run scores; got shape {c.shape}")
    out = np.full((max(c.size for c in cols), len(cols)), np.nan)
    for j, c in enumerate(cols):
        out[: c.size, j] = c
    return _table(out, "columns")


def runs_per_stratum(x: Any) -> IntArray:
    """Number of present (non-NaN) scores in each column of a [runs, strata] table."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x must be a 2-D [runs, strata] score table; got shape {a.shape}")
    return _counts(a).astype(np.int64)


def _sample(x: Any, name: str) -> FloatArray:
    """1-D per-run sample with missing (NaN) runs dropped."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-run scores; got shape {a.shape}")
    _finite_or_nan(a, name)
    return a[~np.isnan(a)]


def _check_options(reps: int, confidence: float, method: str = "expanded") -> None:
    if isinstance(reps, bool) or not isinstance(reps, int | np.integer) or reps < 1:
        raise ValueError(f"reps must be a positive integer; got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")


# ---------------------------------------------------------------------------------------------
# Aggregate statistics over the last two axes [..., runs, strata], NaN = missing.
# The underscored versions skip validation: the bootstrap calls them on its own resamples.


def _stratum_means(x: FloatArray) -> FloatArray:
    present = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, x, 0.0).sum(axis=-2) / present.sum(axis=-2)


def _mean(x: FloatArray) -> FloatArray:
    return _stratum_means(x).mean(axis=-1)


def _median(x: FloatArray) -> FloatArray:
    return np.median(_stratum_means(x), axis=-1)


def _optimality_gap(x: FloatArray, gamma: float = 1.0) -> FloatArray:
    return _mean(np.maximum(gamma - x, 0.0))  # NaN stays NaN through np.maximum


def _iqm(x: FloatArray) -> FloatArray:
    pooled = np.sort(x.reshape(*x.shape[:-2], -1), axis=-1)  # NaN sorts last
    n = np.sum(~np.isnan(pooled), axis=-1)
    lo = n // 4  # int(0.25 * n), as scipy.stats.trim_mean cuts
    hi = n - lo
    if n.size and n.min() == n.max():  # the bootstrap case: same count everywhere, one slice
        k_lo, k_hi = int(lo.flat[0]), int(hi.flat[0])
        if k_hi > k_lo:
            return pooled[..., k_lo:k_hi].mean(axis=-1)
    k = np.arange(pooled.shape[-1])
    keep = (k >= lo[..., None]) & (k < hi[..., None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep, pooled, 0.0).sum(axis=-1) / (hi - lo)


def _aggregate_input(x: Any) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"x must be at least 2-D [..., runs, strata]; got shape {a.shape}")
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        raise ValueError(f"x has no runs or no strata (shape {a.shape})")
    _finite_or_nan(a, "x")
    if np.isnan(a).all(axis=-2).any():
        raise ValueError("x has a stratum with no runs (every score is NaN)")
    return a


def _out(v: FloatArray) -> float | FloatArray:
    return float(v) if np.ndim(v) == 0 else np.asarray(v)


def mean(x: Any) -> float | FloatArray:
    """Mean over strata of per-stratum mean scores."""
    return _out(_mean(_aggregate_input(x)))


def median(x: Any) -> float | FloatArray:
    """Median over strata of per-stratum mean scores (rliable's definition)."""
    return _out(_median(_aggregate_input(x)))


def iqm(x: Any) -> float | FloatArray:
    """Interquartile mean: 25% trimmed mean of all present scores pooled across runs and strata."""
    return _out(_iqm(_aggregate_input(x)))


def optimality_gap(x: Any, gamma: float = 1.0) -> float | FloatArray:
    """How far scores fall short of `gamma`: mean over strata of the mean of max(gamma - x, 0)."""
    return _out(_optimality_gap(_aggregate_input(x), gamma))


AGGREGATES: dict[str, Callable[[Any], float | FloatArray]] = {
    "mean": mean, "median": median, "iqm": iqm, "optimality_gap": optimality_gap,
}
_FAST: dict[str, Statistic] = {
    "mean": _mean, "median": _median, "iqm": _iqm, "optimality_gap": _optimality_gap,
}


def _statistic(statistic: str | Statistic) -> Statistic:
    if callable(statistic):
        return statistic
    if statistic not in _FAST:
        raise ValueError(f"unknown statistic {statistic!r}; use one of {sorted(_FAST)} or a callable")
    return _FAST[statistic]


# ---------------------------------------------------------------------------------------------
# Stratified bootstrap


def _draw(counts: IntArray, runs: int, reps: int, rng: np.random.Generator) -> IntArray:
    """[reps, runs, strata] run indices drawn with replacement within each stratum (present scores
    sit first in each sorted column, so index < count picks a present one). Rows at or beyond a
    stratum's count are drawn too, for a rectangular array, and ignored by the callers."""
    return rng.integers(0, counts, size=(reps, runs, counts.size))


def _gather(sorted_: FloatArray, counts: IntArray, idx: IntArray) -> FloatArray:
    """Resampled tables [reps, runs, strata]; rows beyond a stratum's count are NaN so every
    replicate keeps the real run counts."""
    runs, strata = sorted_.shape
    out = sorted_[idx, np.arange(strata)]
    out[:, np.arange(runs)[:, None] >= counts] = np.nan
    return out


def _resample(sorted_: FloatArray, counts: IntArray, reps: int, rng: np.random.Generator) -> FloatArray:
    return _gather(sorted_, counts, _draw(counts, sorted_.shape[0], reps, rng))


def _multiplicities(idx: IntArray, counts: IntArray) -> FloatArray:
    """[strata, reps, runs]: how many times each run was drawn into each replicate."""
    reps, runs, strata = idx.shape
    valid = np.arange(runs)[:, None] < counts
    key = (np.arange(strata) * reps + np.arange(reps)[:, None, None]) * runs + idx
    found = np.bincount(key[:, valid].ravel(), minlength=strata * reps * runs)
    return found.reshape(strata, reps, runs).astype(np.float64)


def _jackknife(sorted_: FloatArray, fn: Statistic) -> FloatArray:
    """The statistic with each present score left out in turn (across all strata)."""
    rows, cols = np.nonzero(~np.isnan(sorted_))
    chunk = max(1, _CHUNK_ELEMENTS // sorted_.size)
    values = []
    for start in range(0, rows.size, chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        tables = np.repeat(sorted_[None], r.size, axis=0)
        tables[np.arange(r.size), r, c] = np.nan
        values.append(np.asarray(fn(np.sort(tables, axis=1)), dtype=np.float64).reshape(r.size))
    return np.concatenate(values)


def _bca_levels(value: float, replicates: FloatArray, jackknife: FloatArray,
                levels: FloatArray) -> FloatArray | None:
    """BCa-adjusted quantile levels (Efron 1987), or None where BCa is undefined.

    Undefined cases fall back to the percentile interval: every replicate on one side of the
    estimate (infinite bias correction), or a jackknife that does not move (no acceleration)."""
    # Replicates equal to the estimate up to rounding count as ties: otherwise shifting the data
    # by a constant could turn exact ties into ulp-sized differences and move the interval.
    tie = np.abs(replicates - value) <= 1e-10 * max(abs(value), float(np.max(np.abs(replicates))))
    below = np.mean((replicates < value) & ~tie) + 0.5 * np.mean(tie)
    if not 0.0 < below < 1.0:
        return None
    z0 = special.ndtri(below)
    d = jackknife.mean() - jackknife
    if not np.all(np.isfinite(d)) or np.ptp(jackknife) <= 1e-12 * max(1.0, abs(value)):
        return None
    accel = np.sum(d**3) / (6.0 * np.sum(d**2) ** 1.5)
    z = special.ndtri(levels)
    denom = 1.0 - accel * (z0 + z)
    if np.any(denom <= 0):
        return None
    return special.ndtr(z0 + (z0 + z) / denom)


def expanded_alpha(alpha: float, n: int, df: float | None = None) -> float:
    """The expanded percentile interval's tail probability (both tails) for a nominal `alpha`,
    n runs per stratum and `df` degrees of freedom behind the interval's width (default n - 1,
    one stratum): 2 P(Z > sqrt(n / (n - 1)) t_{df, 1 - alpha/2})."""
    if n < 2:
        raise ValueError(f"the expanded percentile interval needs at least 2 runs; got {n}")
    t = sps.t.ppf(1.0 - alpha / 2.0, n - 1 if df is None else df)
    return float(2.0 * sps.norm.sf(math.sqrt(n / (n - 1)) * t))


def effective_df(sorted_: FloatArray) -> float:
    """Welch-Satterthwaite degrees of freedom of the mean of stratum means of a [runs, strata]
    table: (sum_j v_j)^2 / sum_j v_j^2 / (n_j - 1), v_j = s_j^2 / n_j. One stratum: n - 1; S
    alike strata: about S (n - 1), since every stratum's spread is estimated. Infinite when no
    stratum varies."""
    counts = _counts(sorted_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = np.nanvar(sorted_, axis=0, ddof=1) / counts
    v = np.where(np.isfinite(v), v, 0.0)
    denominator = np.sum(v**2 / np.maximum(counts - 1, 1))
    return math.inf if denominator == 0 else float(v.sum() ** 2 / denominator)


def _interval(value: float, replicates: FloatArray, confidence: float, method: str,
              jackknife: FloatArray | None, runs: int, df: float | None = None) -> tuple[float, float]:
    """The interval's bounds from the bootstrap replicates; `runs` is the smallest stratum's run
    count and `df` the degrees of freedom behind the width (what the expanded interval widens
    for; see `expanded_alpha`)."""
    alpha = 1.0 - confidence
    if method == "expanded":
        alpha = expanded_alpha(alpha, runs, df)
    levels = np.array([alpha / 2, 1 - alpha / 2])
    if method == "bca" and jackknife is not None:
        adjusted = _bca_levels(value, replicates, jackknife, levels)
        if adjusted is not None:
            levels = adjusted
    low, high = np.quantile(replicates, levels)
    return float(low), float(high)


def _point(v: Any, name: str) -> float:
    a = np.asarray(v, dtype=np.float64)
    if a.size != 1:
        raise ValueError(f"statistic {name!r} must reduce [runs, strata] to one value; got shape {a.shape}")
    return float(a.reshape(()))


def _bootstrap(table: FloatArray, statistics: Mapping[str, Statistic], reps: int, confidence: float,
               method: str, seed: int) -> dict[str, Estimate]:
    """Estimates of several statistics of one table, all from one set of resample indices."""
    sorted_ = np.sort(table, axis=0)
    counts = _counts(sorted_)
    n = int(counts.sum())
    values = {k: _point(fn(sorted_), k) for k, fn in statistics.items()}
    if counts.min() < 2:
        return {k: Estimate(v, math.nan, math.nan, n) for k, v in values.items()}
    present = sorted_[~np.isnan(sorted_)]
    if np.all(present == present[0]):  # every resample is the data itself
        return {k: Estimate(v, v, v, n) for k, v in values.items()}
    resamples = _resample(sorted_, counts, reps, np.random.default_rng(seed))
    df = effective_df(sorted_)
    out = {}
    for k, fn in statistics.items():
        replicates = np.asarray(fn(resamples), dtype=np.float64)
        if replicates.shape != (reps,):
            raise ValueError(f"statistic {k!r} must reduce [reps, runs, strata] to [reps]; "
                             f"got shape {replicates.shape}")
        jack = _jackknife(sorted_, fn) if method == "bca" else None
        bounds = _interval(values[k], replicates, confidence, method, jack, int(counts.min()), df)
        out[k] = Estimate(values[k], *bounds, n)
    return out


def stratified_bootstrap(x: Any, statistic: str | Statistic = "mean", *, reps: int = 2000,
                         confidence: float = 0.95, method: str = "expanded", seed: int = 0) -> Estimate:
    """Point estimate of `statistic` on a [runs, strata] table with a stratified bootstrap interval.

    Runs are resampled with replacement independently within each stratum, with that stratum's
    real count. `statistic` is a name from AGGREGATES or a callable mapping [..., runs, strata]
    (NaN = missing; each column's present scores come first, sorted) to [...].
    `method` is "expanded" (the percentile interval widened for small samples, see METHODS),
    "percentile", or "bca" (bias-corrected and accelerated; acceleration from the jackknife
    over single scores; falls back to percentile where BCa is undefined)."""
    _check_options(reps, confidence, method)
    fn = _statistic(statistic)
    name = statistic if isinstance(statistic, str) else getattr(statistic, "__name__", "statistic")
    return _bootstrap(_table(x), {name: fn}, reps, confidence, method, seed)[name]


def aggregate_intervals(scores: Mapping[str, Any],
                        statistics: Sequence[str] = ("mean", "median", "iqm", "optimality_gap"), *,
                        reps: int = 2000, confidence: float = 0.95, method: str = "expanded",
                        seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """algorithm -> statistic -> Estimate, for [runs, strata] tables per algorithm.

    Within an algorithm every statistic uses the same resamples. Each algorithm draws from a
    fresh generator seeded with `seed`, so its intervals do not depend on which other algorithms
    are in `scores`, and equal stratified_bootstrap(table, name, seed=seed) exactly."""
    _check_options(reps, confidence, method)
    if not statistics or len(set(statistics)) != len(statistics):
        raise ValueError(f"statistics must be a non-empty list of distinct names; got {statistics!r}")
    fns = {name: _statistic(name) for name in statistics}
    return {algo: _bootstrap(_table(x, f"scores[{algo!r}]"), fns, reps, confidence, method, seed)
            for algo, x in scores.items()}


def is_binary(x: Any) -> bool:
    """Whether every present score of x is exactly 0 or 1: per-run yes/no outcomes (did the run's
    greedy joint action reach the optimum?), for which `wilson_mean` is the interval to use."""
    a = np.asarray(x, dtype=np.float64)
    present = a[~np.isnan(a)]
    return bool(present.size) and bool(np.all((present == 0.0) | (present == 1.0)))


def wilson_mean(x: Any, confidence: float = 0.95) -> Estimate:
    """The fraction of successes among per-run 0/1 outcomes (a [runs, strata] table or 1-D, NaN
    = missing run), with the Wilson score interval (Wilson 1927; scipy's binomtest), which keeps
    its coverage near nominal at a handful of runs where a bootstrap of 0/1 values collapses
    (1 success in 20 runs: bootstrap [0, 0.15], Wilson [0.01, 0.24]). Strata are pooled: the
    fraction is over all present outcomes, every one an independent trial."""
    a = np.asarray(x, dtype=np.float64)
    _finite_or_nan(a, "x")
    present = a[~np.isnan(a)]
    if not is_binary(present):
        raise ValueError("wilson_mean needs per-run outcomes that are all 0 or 1")
    successes, n = int(present.sum()), int(present.size)
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), n)


def bootstrap_mean(values: Any, confidence: float = 0.95, reps: int = 2000, seed: int = 0) -> Estimate:
    """Mean of one stratum's runs with an expanded percentile bootstrap interval (NaN runs are dropped).

    No interval with fewer than two runs; a degenerate one when all runs agree."""
    v = _sample(values, "values")
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    return stratified_bootstrap(v[:, None], "mean", reps=reps, confidence=confidence, seed=seed)


def generalization_gap(train: Any, test: Any, **bootstrap_kw: Any) -> Estimate:
    """Mean of (train - test) per run, paired by run, with a stratified bootstrap interval.

    `train` and `test` have the same shape: [runs, strata] or 1-D per run. A run missing either
    score is missing from the gap. Keyword arguments go to stratified_bootstrap."""
    tr, te = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if tr.shape != te.shape:
        raise ValueError(f"train and test must have the same shape (paired by run); got {tr.shape} and {te.shape}")
    if tr.ndim == 1:
        tr, te = tr[:, None], te[:, None]
    _finite_or_nan(tr, "train")
    _finite_or_nan(te, "test")
    gap = _table(tr - te, "train - test")
    return stratified_bootstrap(gap, **bootstrap_kw)


# ---------------------------------------------------------------------------------------------
# Probability of improvement and performance profiles


def _pair_wins(x: FloatArray, y: FloatArray) -> FloatArray:
    """[strata, runs_x, runs_y]: [x_i > y_j] + 0.5 [x_i == y_j] (0 where either is missing)."""
    xs, ys = x.T[:, :, None], y.T[:, None, :]
    return (xs > ys) + 0.5 * (xs == ys)


def _probability_of_improvement(x: FloatArray, y: FloatArray) -> float:
    """P(X > Y) for [runs_x, S] and [runs_y, S]: per stratum the mean over run pairs of
    [x > y] + 0.5 [x == y], then the mean over strata."""
    per_stratum = _pair_wins(x, y).sum(axis=(1, 2)) / (_counts(x) * _counts(y))
    return float(per_stratum.mean())


def _replicated_improvement(x: FloatArray, y: FloatArray, mx: FloatArray, my: FloatArray) -> FloatArray:
    """P(X > Y) of every replicate, [reps], from the draw multiplicities of x and y.

    A replicate's sum over resampled pairs equals m_x^T W m_y, where W holds the wins between
    original runs and m_x, m_y count how often each run was drawn: one small batched matrix
    product per stratum instead of comparing reps x runs_x x runs_y pairs again. The result is
    the same (integers and halves add exactly in float64)."""
    wins = np.einsum("sbi,sij,sbj->sb", mx, _pair_wins(x, y), my, optimize=True)
    return (wins / (_counts(x) * _counts(y))[:, None]).mean(axis=0)


@dataclass(frozen=True)
class _Side:
    """One algorithm's sorted table, run counts and (lazily) its draw multiplicities."""

    table: FloatArray
    counts: IntArray
    mult: FloatArray | None

    @staticmethod
    def make(x: Any, name: str, reps: int, rng: np.random.Generator) -> _Side:
        table = np.sort(_table(x, name), axis=0)
        counts = _counts(table)
        if counts.min() < 2:
            return _Side(table, counts, None)
        return _Side(table, counts, _multiplicities(_draw(counts, table.shape[0], reps, rng), counts))


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the X and the Y side. Separate streams make a table's draws
    independent of the other table's shape, so pairwise comparisons can reuse them."""
    sx, sy = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(sx), np.random.default_rng(sy)


def _improvement(x: _Side, y: _Side, confidence: float, names: tuple[str, str] = ("x", "y")) -> Estimate:
    if x.table.shape[1] != y.table.shape[1]:
        raise ValueError(f"{names[0]} has {x.table.shape[1]} strata but {names[1]} has {y.table.shape[1]}; "
                         "P(X > Y) compares the same strata")
    value = _probability_of_improvement(x.table, y.table)
    n = int(x.counts.sum() + y.counts.sum())
    if x.mult is None or y.mult is None:
        return Estimate(value, math.nan, math.nan, n)
    replicates = _replicated_improvement(x.table, y.table, x.mult, y.mult)
    runs = int(min(x.counts.min(), y.counts.min()))
    return Estimate(value, *_interval(value, replicates, confidence, "expanded", None, runs), n)


def probability_of_improvement(x: Any, y: Any, *, reps: int = 2000, confidence: float = 0.95,
                               seed: int = 0) -> Estimate:
    """P(X > Y) between two algorithms' [runs, strata] tables over the same strata, with an
    expanded percentile interval (see METHODS) from resampling x and y independently within each
    stratum.

    `n` counts the present scores of x and y together."""
    _check_options(reps, confidence)
    rx, ry = _streams(seed)
    return _improvement(_Side.make(x, "x", reps, rx), _Side.make(y, "y", reps, ry), confidence)


def pairwise_probability_of_improvement(scores: Mapping[str, Any], *, reps: int = 2000,
                                        confidence: float = 0.95, seed: int = 0
                                        ) -> dict[tuple[str, str], Estimate]:
    """(a, b) -> P(a > b) for every ordered pair of distinct algorithms; each entry equals
    probability_of_improvement(scores[a], scores[b]) with the same keywords, but every
    algorithm's resampling is drawn once, not once per pair."""
    _check_options(reps, confidence)
    as_x = {k: _Side.make(v, f"scores[{k!r}]", reps, _streams(seed)[0]) for k, v in scores.items()}
    as_y = {k: _Side.make(v, f"scores[{k!r}]", reps, _streams(seed)[1]) for k, v in scores.items()}
    return {(a, b): _improvement(as_x[a], as_y[b], confidence, (f"scores[{a!r}]", f"scores[{b!r}]"))
            for a, b in itertools.permutations(scores, 2)}


def _profile(x: FloatArray, counts: IntArray, taus: FloatArray) -> FloatArray:
    """[..., T]: per threshold, the fraction of runs scoring above it, averaged over strata."""
    out = np.empty((*x.shape[:-2], taus.size))
    for j, tau in enumerate(taus):  # a loop over thresholds; replicates stay vectorised
        out[..., j] = ((x > tau).sum(axis=-2) / counts).mean(axis=-1)
    return out


def performance_profile(x: Any, taus: Any, *, reps: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> Profile:
    """Fraction of runs with score > tau for each tau (each stratum weighs the same), with
    pointwise expanded percentile bands (see METHODS) from the stratified bootstrap."""
    _check_options(reps, confidence)
    table = _table(x)
    t = np.asarray(taus, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.isnan(t).any():
        raise ValueError(f"taus must be a non-empty 1-D array of thresholds without NaN; got shape {t.shape}")
    sorted_ = np.sort(table, axis=0)
    counts = _counts(sorted_)
    fraction = _profile(sorted_, counts, t)
    if counts.min() < 2:
        nan = np.full_like(fraction, np.nan)
        return Profile(t, fraction, nan, nan.copy())
    curves = _profile(_resample(sorted_, counts, reps, np.random.default_rng(seed)), counts, t)
    alpha = expanded_alpha(1.0 - confidence, int(counts.min()))
    low, high = np.quantile(curves, [alpha / 2, 1 - alpha / 2], axis=0)
    return Profile(t, fraction, low, high)


# ---------------------------------------------------------------------------------------------
# Hypothesis tests and effect sizes on 1-D per-run samples


def holm(pvalues: Any) -> FloatArray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Step-down: the i-th smallest of m p-values is scaled by (m - i + 1), made monotone by a
    running maximum and capped at 1. NaN p-values (tests that could not run) stay NaN and do
    not count in m. Written here because scipy has no Holm and statsmodels is a heavy dependency."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D; got shape {p.shape}")
    ok = ~np.isnan(p)
    q = p[ok]
    if np.any((q < 0) | (q > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(q, kind="stable")
    scaled = (q.size - np.arange(q.size)) * q[order]
    adjusted = np.empty_like(q)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.full_like(p, np.nan)
    out[ok] = adjusted
    return out


def hedges_g(x: Any, y: Any) -> float:
    """Standardised mean difference (mean(x) - mean(y)) / pooled SD, bias-corrected.

    Uses the exact small-sample correction J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2)) (Hedges
    1981), not its 1 - 3/(4 df - 1) approximation. NaN with fewer than two runs on a side, or when
    both samples are constant but differ; 0 when both are the same constant."""
    a, b = _sample(x, "x"), _sample(y, "y")
    if a.size < 2 or b.size < 2:
        return math.nan
    df = a.size + b.size - 2
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / df)
    diff = float(a.mean() - b.mean())
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.nan
    correction = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return correction * diff / pooled


def cliffs_delta(x: Any, y: Any) -> float:
    """Cliff's delta: P(X > Y) - P(X < Y) over all run pairs, in [-1, 1]; NaN if a side is empty."""
    a, b = _sample(x, "x"), np.sort(_sample(y, "y"))
    if a.size == 0 or b.size == 0:
        return math.nan
    below = np.searchsorted(b, a, side="left")  # per x: how many y are smaller
    above = b.size - np.searchsorted(b, a, side="right")  # per x: how many y are larger
    return float((below.sum() - above.sum()) / (a.size * b.size))


def _tests(a: FloatArray, b: FloatArray) -> tuple[float, float, float, float]:
    if a.size < 2 or b.size < 2:
        return (math.nan,) * 4
    # Constant samples make scipy divide by zero; it returns NaN or inf, which we keep as is.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        welch = sps.ttest_ind(a, b, equal_var=False)
        mwu = sps.mannwhitneyu(a, b, alternative="two-sided")
    return float(welch.statistic), float(welch.pvalue), float(mwu.statistic), float(mwu.pvalue)


def pairwise_tests(samples: Mapping[str, Sequence[float]]) -> list[PairTest]:
    """Welch's t-test and two-sided Mann-Whitney U for every unordered pair of algorithms.

    `samples` maps an algorithm to its per-run scores (NaN = missing run). p-values are
    Holm-adjusted across all pairs, separately for each test. A pair with fewer than two runs on
    a side gets NaN test statistics (so a report can show it) and is left out of the correction."""
    data = {k: _sample(v, f"samples[{k!r}]") for k, v in samples.items()}
    pairs = list(itertools.combinations(data, 2))
    raw = [_tests(data[a], data[b]) for a, b in pairs]
    welch_holm = holm([r[1] for r in raw])
    mwu_holm = holm([r[3] for r in raw])
    out = []
    for i, ((a, b), (t, tp, u, up)) in enumerate(zip(pairs, raw, strict=True)):
        xa, xb = data[a], data[b]
        diff = float(xa.mean() - xb.mean()) if xa.size and xb.size else math.nan
        out.append(PairTest(a, b, int(xa.size), int(xb.size), diff, t, tp, float(welch_holm[i]), u, up,
                            float(mwu_holm[i]), hedges_g(xa, xb), cliffs_delta(xa, xb)))
    return out


# ---------------------------------------------------------------------------------------------
# Normalisation


def normalise(x: Any, random: Any, best: Any) -> FloatArray:
    """(x - random) / (best - random) per stratum: 0 is random play, 1 the best known score.

    `random` and `best` are scalars or one value per stratum (the last axis of x). NaN scores
    stay NaN."""
    a = np.asarray(x, dtype=np.float64)
    r, b = np.asarray(random, dtype=np.float64), np.asarray(best, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("x must be an array of scores, not a scalar")
    for name, ref in (("random", r), ("best", b)):
        if ref.ndim > 1 or (ref.ndim == 1 and ref.size != a.shape[-1]):
            raise ValueError(f"{name} must be a scalar or one value per stratum ({a.shape[-1]}); got shape {ref.shape}")
        if not np.all(np.isfinite(ref)):
            raise ValueError(f"{name} reference scores must be finite")
    span = np.broadcast_to(b - r, a.shape[-1:])
    same = np.flatnonzero(span == 0)
    if same.size:
        raise ValueError(f"best equals random for stratum {same.tolist()}: scores cannot be normalised")
    return (a - r) / (b - r)
