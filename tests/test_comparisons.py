"""The claims' tests: each p-value by hand and against scipy, effects and their intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as sps
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import comparisons as cmp


def test_fisher_by_hand() -> None:
    # 3 of 4 against 0 of 4: P(all 3 successes in x's 4 of 8 draws) = C(5,1) / C(8,4) = 5/70.
    assert cmp.fisher([1, 1, 1, 0], [0, 0, 0, 0]) == pytest.approx(5 / 70)
    assert cmp.fisher([0, 0, 0, 0], [1, 1, 1, 0]) == pytest.approx(1.0)


def test_binomial_counts_only_the_seeds_that_differ() -> None:
    # Three seeds where x succeeds and y fails, two ties: 0.5^3.
    assert cmp.binomial([1, 1, 1, 1, 0], [0, 0, 0, 1, 0]) == pytest.approx(0.125)
    assert cmp.binomial([1, 0], [1, 0]) == 1.0
    with pytest.raises(ValueError, match="paired"):
        cmp.binomial([1, 0, 1], [1, 0])


def test_rank_tests_by_hand() -> None:
    # Complete separation: 1 / C(6, 3) orderings for Mann-Whitney, 1 / 2^4 sign patterns for Wilcoxon.
    assert cmp.mann_whitney([3, 4, 5], [0, 1, 2]) == pytest.approx(1 / 20)
    assert cmp.wilcoxon([2, 3, 4, 5], [1, 1, 1, 1]) == pytest.approx(1 / 16)
    assert cmp.mann_whitney([1, 1], [1, 1]) == 1.0
    assert cmp.wilcoxon([1, 2], [1, 2]) == 1.0


def test_bootstrap_p_is_never_zero_and_large_without_an_effect() -> None:
    assert cmp.bootstrap([5, 6, 7], [0, 1, 2]) == pytest.approx(1 / (cmp.BOOTSTRAP_REPS + 1))
    assert cmp.bootstrap([0, 1, 2], [5, 6, 7]) == pytest.approx(1.0)


scores = st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=12)
outcomes = st.lists(st.integers(0, 1), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(outcomes, outcomes)
def test_fisher_matches_scipy(x: list[int], y: list[int]) -> None:
    table = [[sum(x), len(x) - sum(x)], [sum(y), len(y) - sum(y)]]
    assert cmp.fisher(x, y) == pytest.approx(sps.fisher_exact(table, alternative="greater").pvalue)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_mann_whitney_matches_scipy(x: list[float], y: list[float]) -> None:
    if np.ptp(x + y) == 0:
        return
    assert cmp.mann_whitney(x, y) == pytest.approx(sps.mannwhitneyu(x, y, alternative="greater").pvalue)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100, allow_nan=False), st.floats(-100, 100, allow_nan=False)),
                min_size=2, max_size=12))
def test_wilcoxon_matches_scipy(pairs: list[tuple[float, float]]) -> None:
    x, y = np.array(pairs).T
    if not np.any(x - y != 0):
        return
    expected = sps.wilcoxon(x - y, alternative="greater", zero_method="wilcox").pvalue
    assert cmp.wilcoxon(x, y) == pytest.approx(expected)


def test_binary_tests_refuse_scores() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        cmp.fisher([0.5, 1], [0, 1])


@pytest.mark.parametrize(("test", "n", "expected"), [
    ("fisher", 3, 1 / 20), ("fisher", 4, 1 / 70), ("mann_whitney", 5, 1 / 252),
    ("binomial", 5, 1 / 32), ("wilcoxon", 6, 1 / 64),
])
def test_smallest_p(test: str, n: int, expected: float) -> None:
    assert cmp.smallest_p(test, n) == pytest.approx(expected)


def test_fewest_seeds() -> None:
    assert cmp.fewest_seeds("fisher", 0.025) == 4  # 1/20 > 0.025 >= 1/70
    assert cmp.fewest_seeds("fisher", 0.05) == 3
    assert cmp.fewest_seeds("binomial", 0.05) == 5  # 1/16 > 0.05 >= 1/32
    assert cmp.fewest_seeds("wilcoxon", 0.05 / 3) == 6


def test_newcombe_against_his_worked_example() -> None:
    # Newcombe (1998), method 10, 56/70 against 48/80: difference 0.2, interval 0.0524 to 0.3339.
    x, y = [1] * 56 + [0] * 14, [1] * 48 + [0] * 32
    e = cmp.newcombe(x, y)
    assert e.value == pytest.approx(0.2)
    assert (e.low, e.high) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))


def test_newcombe_stays_inside_minus_one_one_at_extremes() -> None:
    e = cmp.newcombe([1] * 10, [0] * 10)
    assert e.value == 1.0 and -1 <= e.low < 1 and e.high == pytest.approx(1.0)


def test_bootstrap_difference_pairs_seeds() -> None:
    # The same offset on every seed: the paired interval is that offset exactly; unpaired it is wide.
    x = np.array([0.0, 10.0, 20.0, 30.0])
    paired = cmp.bootstrap_difference(x + 1, x, paired=True)
    assert (paired.value, paired.low, paired.high) == (1.0, 1.0, 1.0)
    unpaired = cmp.bootstrap_difference(x + 1, x)
    assert unpaired.low < 0 < 1 < unpaired.high
    assert math.isclose(cmp.effect("wilcoxon", x + 1, x).low, 1.0)
