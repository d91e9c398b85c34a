"""Coverage of the stratified bootstrap intervals, by simulation.

Runs are drawn from known distributions, one per stratum: normals with different means and
spreads (scores normalised to roughly [0, 1]) plus a skewed Beta(2, 5) stratum. The true mean is
the mean of the stratum means; the true IQM is the interquartile mean of the equal-weight mixture
of the strata, computed by root-finding and integration, not by simulating the estimator.

What we found (printed by `pytest -s -m slow tests/test_stats_coverage.py`): the percentile
bootstrap undercovers with few runs per stratum (about 90% for a nominal 95% at 5 runs, 92-93%
at 10), because a resample of n runs has only (n - 1)/n of the sample's variance and the
interval ignores that its width is estimated; BCa does not fix this. The expanded percentile
interval (Hesterberg 2015; `harness.stats.METHODS`), the default, widens it by sqrt(n / (n - 1))
and Student's t with the Welch-Satterthwaite degrees of freedom of the strata: 93-97% at 5, 10
and 30 runs per stratum, which the slow tests assert. Per-run yes/no outcomes get the Wilson
interval, whose coverage is printed too.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from harness import stats

NORMALS = [sps.norm(0.1, 0.05), sps.norm(0.4, 0.15), sps.norm(0.7, 0.1), sps.norm(0.9, 0.2)]
FIVE_STRATA = [*NORMALS, sps.beta(2, 5)]
# Twenty strata, the shape of a leaderboard aggregate (tasks x compositions): sixteen normals and
# four skewed ones, two of them heavy-tailed.
TWENTY_STRATA = [sps.norm(m, s) for m, s in zip(np.linspace(0.1, 0.9, 16), np.tile([0.05, 0.1, 0.15, 0.2], 4),
                                                 strict=True)] + [
    sps.beta(2, 5), sps.beta(5, 2), sps.lognorm(s=0.5, scale=0.3), sps.lognorm(s=0.75, scale=np.exp(-1.0))]


def true_mean(dists: list) -> float:
    return float(np.mean([d.mean() for d in dists]))


def true_iqm(dists: list) -> float:
    """IQM of the equal-weight mixture: 2 * integral of x dF between its quartiles."""
    def cdf(v: float) -> float:
        return float(np.mean([d.cdf(v) for d in dists]))

    lo, hi = (optimize.brentq(lambda v, p=p: cdf(v) - p, -10.0, 10.0, xtol=1e-14) for p in (0.25, 0.75))
    inner = np.mean([d.expect(lambda v: v, lb=lo, ub=hi) for d in dists])
    return float(inner / 0.5)


def coverage(dists: list, runs: int, repetitions: int, methods: tuple[str, ...] = ("expanded",),
             seed: int = 0) -> dict[tuple[str, str], float]:
    """(method, statistic) -> fraction of repetitions whose 95% interval covers the true value."""
    rng = np.random.default_rng(seed)
    truth = {"mean": true_mean(dists), "iqm": true_iqm(dists)}
    hits = dict.fromkeys([(m, s) for m in methods for s in truth], 0)
    for r in range(repetitions):
        x = np.column_stack([d.rvs(size=runs, random_state=rng) for d in dists])
        for method in methods:
            est = stats.aggregate_intervals({"x": x}, tuple(truth), method=method, seed=r)["x"]
            for s, value in truth.items():
                hits[(method, s)] += est[s].low <= value <= est[s].high
    return {k: v / repetitions for k, v in hits.items()}


def report(label: str, cov: dict[tuple[str, str], float]) -> None:
    print(f"\n{label}: " + ", ".join(f"{m} {s} {v:.1%}" for (m, s), v in cov.items()))


def test_true_iqm_of_a_symmetric_mixture_is_its_centre():
    # two normals mirrored about 0.5: the mixture is symmetric, so its IQM is 0.5
    assert true_iqm([sps.norm(0.2, 0.1), sps.norm(0.8, 0.1)]) == pytest.approx(0.5, abs=1e-9)
    # one standard normal: 2 * (phi(q1) - phi(q3)) = 0 at the centre; shifted by 3 it is 3
    assert true_iqm([sps.norm(3.0, 1.0)]) == pytest.approx(3.0, abs=1e-9)


def test_coverage_quick():
    """200 repetitions at 10 runs x 5 strata, the default interval: a band wide enough for 200
    draws (binomial standard error about 1.5 points)."""
    cov = coverage(FIVE_STRATA, runs=10, repetitions=200)
    report("10 runs x 5 strata, 200 repetitions", cov)
    for s in ("mean", "iqm"):
        assert 0.90 <= cov[("expanded", s)] <= 0.99, s


@pytest.mark.slow
@pytest.mark.parametrize("runs", [5, 10, 30])
def test_default_interval_in_band(runs):
    """1,000 repetitions, 5 strata: the default (expanded percentile) interval covers the true
    mean and IQM 93-97% of the time at 5, 10 and 30 runs per stratum; the plain percentile and
    BCa intervals are printed beside it."""
    cov = coverage(FIVE_STRATA, runs=runs, repetitions=1000, methods=stats.METHODS)
    report(f"{runs} runs x 5 strata, 1000 repetitions", cov)
    for s in ("mean", "iqm"):
        assert 0.93 <= cov[("expanded", s)] <= 0.97, s


@pytest.mark.slow
def test_coverage_over_twenty_strata():
    """The shape of a cross-task aggregate (20 strata, some heavy-tailed) at 10 runs: printed,
    and guarded against gross errors only (pooled instead of stratified resampling would
    overcover; a wrong run count would undercover badly)."""
    cov = coverage(TWENTY_STRATA, runs=10, repetitions=1000, methods=stats.METHODS)
    report("10 runs x 20 strata, 1000 repetitions", cov)
    for key, value in cov.items():
        assert 0.85 <= value <= 0.99, key


@pytest.mark.slow
def test_wilson_coverage_on_per_run_binary_outcomes():
    """Per-run 0/1 outcomes (did the run reach the optimum?) at 5, 10 and 20 runs and success
    rates from 0.05 to 0.5: the Wilson interval's coverage, averaged over the rates, is printed
    and stays near nominal, where the bootstrap of 0/1 values collapses at low rates."""
    rng = np.random.default_rng(0)
    for runs in (5, 10, 20):
        hits, boot_hits, cases = 0, 0, 0
        for p in (0.05, 0.1, 0.2, 0.3, 0.5):
            for r in range(400):
                x = (rng.random(runs) < p).astype(np.float64)[:, None]
                est = stats.wilson_mean(x)
                hits += est.low <= p <= est.high
                boot = stats.stratified_bootstrap(x, "mean", reps=500, seed=r)
                boot_hits += (boot.low <= p <= boot.high) if np.isfinite(boot.low) else 0
                cases += 1
        print(f"\nbinary outcomes, {runs} runs: Wilson {hits / cases:.1%}, expanded bootstrap {boot_hits / cases:.1%}")
        assert hits / cases >= 0.92
