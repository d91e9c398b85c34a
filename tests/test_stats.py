"""bootstrap_mean: the percentile bootstrap interval used by reports (seeds are replications)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.stats import Estimate, bootstrap_mean


def normal(n: int, seed: int = 0, loc: float = 1.5, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=n)


def width(e: Estimate) -> float:
    return e.high - e.low


def test_empty():
    e = bootstrap_mean([])
    assert e.n == 0
    assert math.isnan(e.mean) and math.isnan(e.low) and math.isnan(e.high)
    assert e.as_dict() == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}


def test_one_value_has_mean_but_no_interval():
    e = bootstrap_mean([3.25])
    assert e.n == 1 and e.mean == 3.25
    assert math.isnan(e.low) and math.isnan(e.high)
    assert e.as_dict() == {"mean": 3.25, "ci_low": None, "ci_high": None, "n": 1}


@pytest.mark.parametrize("n", [2, 5, 30])
def test_all_equal_values_give_degenerate_interval(n):
    e = bootstrap_mean(np.full(n, -0.75))
    assert e == Estimate(-0.75, -0.75, -0.75, n)


@pytest.mark.parametrize("n", [2, 3, 10, 50])
def test_interval_contains_sample_mean(n):
    x = normal(n, seed=n)
    e = bootstrap_mean(x)
    assert e.n == n
    assert e.mean == pytest.approx(float(np.mean(x)), abs=1e-12)
    assert e.low < e.mean < e.high
    assert x.min() <= e.low and e.high <= x.max()  # a mean of resamples lies within the data


def test_accepts_list_and_array_alike():
    x = normal(8)
    assert bootstrap_mean(list(x)) == bootstrap_mean(x)


def test_seed_reproducible_and_seed_matters():
    x = normal(12)
    assert bootstrap_mean(x, seed=4) == bootstrap_mean(x, seed=4)
    a, b = bootstrap_mean(x, seed=4), bootstrap_mean(x, seed=5)
    assert a.mean == b.mean
    assert (a.low, a.high) != (b.low, b.high)


def test_interval_shrinks_with_more_runs():
    small = bootstrap_mean(normal(5, seed=1), seed=0)
    large = bootstrap_mean(normal(200, seed=1), seed=0)
    assert width(large) < width(small)
    assert width(large) < 0.5 * width(small)


def test_higher_confidence_gives_wider_interval():
    x = normal(20)
    assert width(bootstrap_mean(x, confidence=0.5)) < width(bootstrap_mean(x, confidence=0.95))


@pytest.mark.parametrize("c", [-7.0, 3.7, 100.0])
def test_shift_equivariance(c):
    x = normal(15, seed=2)
    a, b = bootstrap_mean(x), bootstrap_mean(x + c)
    assert b.n == a.n
    assert b.mean == pytest.approx(a.mean + c, abs=1e-9)
    assert b.low == pytest.approx(a.low + c, abs=1e-9)
    assert b.high == pytest.approx(a.high + c, abs=1e-9)


def test_permuting_values_keeps_mean_and_n():
    x = normal(10, seed=3)
    perm = np.random.default_rng(9).permutation(x)
    a, b = bootstrap_mean(x), bootstrap_mean(perm)
    assert b.n == a.n
    assert b.mean == pytest.approx(a.mean, abs=1e-12)


def test_permuting_values_keeps_interval():
    x = normal(10, seed=3)
    a, b = bootstrap_mean(x), bootstrap_mean(x[::-1])
    assert b.low == pytest.approx(a.low, abs=1e-12)
    assert b.high == pytest.approx(a.high, abs=1e-12)


def test_rough_coverage_at_n10():
    """Percentile bootstrap at n=10 undercovers a little: expect ~88-93% for a nominal 95%."""
    rng = np.random.default_rng(2024)
    true_mean, reps = 1.5, 200
    covered = 0
    for r in range(reps):
        x = rng.normal(true_mean, 2.0, size=10)
        e = bootstrap_mean(x, seed=r)
        covered += e.low <= true_mean <= e.high
    assert 0.85 * reps <= covered <= 0.99 * reps
