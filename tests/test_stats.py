"""harness.stats: hand-computed cases, properties and cross-checks against scipy.

Seeds are the unit of replication: tables are [runs, strata] with NaN for a missing run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from harness import stats
from harness.stats import Estimate, bootstrap_mean

FAST = {"reps": 200}  # property tests need many examples, not precise intervals


def normal(n: int, seed: int = 0, loc: float = 1.5, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=n)


def width(e: Estimate) -> float:
    return e.high - e.low


def same(a: Estimate, b: Estimate) -> bool:
    """Exact equality that treats NaN bounds as equal."""
    return a.as_dict() == b.as_dict()


# --- hypothesis strategies --------------------------------------------------------------------

# Quarter-integers: ties are common and sums are exact, which is where ranking and trimming break.
quarters = st.integers(-40, 40).map(lambda v: v / 4)


@st.composite
def tables(draw: st.DrawFn, min_present: int = 2, max_runs: int = 6, max_strata: int = 4) -> np.ndarray:
    """Ragged [runs, strata] tables (NaN-padded), each stratum with at least min_present runs."""
    strata = draw(st.integers(1, max_strata))
    cols = [draw(st.lists(quarters, min_size=min_present, max_size=max_runs)) for _ in range(strata)]
    return stats.score_table(cols)


def shuffle_columns(x: np.ndarray, seed: int) -> np.ndarray:
    """Permute each column independently (runs, and where the NaN padding sits)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.permutation(x[:, j]) for j in range(x.shape[1])])


# =============================================================================================
# Score tables


def test_score_table_pads_ragged_strata_with_nan():
    x = stats.score_table([[1.0, 2.0, 3.0], [4.0]])
    assert x.shape == (3, 2)
    np.testing.assert_array_equal(x[:, 0], [1, 2, 3])
    assert x[0, 1] == 4.0 and np.isnan(x[1:, 1]).all()
    np.testing.assert_array_equal(stats.runs_per_stratum(x), [3, 1])


def test_runs_per_stratum_counts_nan_anywhere():
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [3.0, np.nan]])
    np.testing.assert_array_equal(stats.runs_per_stratum(x), [2, 1])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: stats.score_table([]), "at least one stratum"),
    (lambda: stats.score_table([[1.0], []]), r"stratum \[1\] has no runs"),
    (lambda: stats.score_table([[[1.0]]]), "1-D"),
    (lambda: stats.runs_per_stratum([1.0, 2.0]), "2-D"),
])
def test_table_construction_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# =============================================================================================
# Aggregates: hand-computed


def test_iqm_of_eight_values():
    # sorted 0 1 2 4 7 11 16 100: trim int(0.25 * 8) = 2 each side -> mean(2, 4, 7, 11) = 6
    x = np.array([[100, 16], [0, 4], [7, 1], [2, 11]], dtype=float)
    assert stats.iqm(x) == 6.0


def test_iqm_of_ten_values_trims_two_each_side():
    # int(0.25 * 10) = 2 -> the middle six of 1..10: mean(3..8) = 5.5; the outlier is trimmed
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000], dtype=float).reshape(5, 2)
    assert stats.iqm(x) == 5.5


def test_iqm_pools_ragged_strata():
    # present scores 1 2 3 4 5 | 50: six values, trim 1 each side -> mean(2, 3, 4, 5) = 3.5
    x = stats.score_table([[1, 2, 3, 4, 5], [50]])
    assert stats.iqm(x) == 3.5


def test_mean_weighs_strata_equally():
    # stratum means 2 and 10 -> 6 (the pooled mean over runs would be 4)
    assert stats.mean(stats.score_table([[1, 2, 3], [10]])) == 6.0


def test_median_is_median_of_stratum_means():
    # stratum means 2, 5, 50 -> 5 (rliable: median of per-task mean scores)
    assert stats.median(stats.score_table([[1, 3], [5], [100, 0]])) == 5.0
    # even number of strata: midpoint of the two middle stratum means (1, 2, 4, 8) -> 3
    assert stats.median(np.array([[1.0, 2.0, 4.0, 8.0]])) == 3.0


def test_optimality_gap_hand_computed():
    # stratum 1: mean(max(1 - 0.5, 0), max(1 - 1.2, 0)) = 0.25; stratum 2: 0.1 -> 0.175
    x = stats.score_table([[0.5, 1.2], [0.9]])
    assert stats.optimality_gap(x) == pytest.approx(0.175, abs=1e-15)
    # gamma = 2: (1.5 + 0.8) / 2 = 1.15 and 1.1 -> 1.125
    assert stats.optimality_gap(x, gamma=2.0) == pytest.approx(1.125, abs=1e-15)


def test_aggregates_vectorise_over_leading_axes():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 2, 5, 4))
    for name, fn in stats.AGGREGATES.items():
        out = fn(batch)
        assert isinstance(out, np.ndarray) and out.shape == (3, 2), name
        assert out[1, 0] == pytest.approx(fn(batch[1, 0]), abs=1e-12), name


def test_aggregates_reject_bad_input():
    with pytest.raises(ValueError, match="at least 2-D"):
        stats.mean(np.ones(4))
    with pytest.raises(ValueError, match="no runs"):
        stats.iqm(np.array([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(ValueError, match="infinite"):
        stats.median(np.array([[1.0, np.inf]]))


@given(tables(min_present=1, max_runs=8, max_strata=5))
@settings(max_examples=60, deadline=None)
def test_iqm_matches_scipy_trim_mean(x):
    present = x[~np.isnan(x)]
    assert stats.iqm(x) == pytest.approx(sps.trim_mean(present, 0.25), abs=1e-12)


@given(tables(min_present=1))
@settings(max_examples=40, deadline=None)
def test_mean_and_gap_agree_with_their_definitions(x):
    means = [np.mean(c[~np.isnan(c)]) for c in x.T]
    assert stats.mean(x) == pytest.approx(np.mean(means), abs=1e-12)
    assert stats.median(x) == pytest.approx(np.median(means), abs=1e-12)
    # gap(gamma) = gamma - mean(min(x, gamma)), stratum by stratum
    assert stats.optimality_gap(x, 0.5) == pytest.approx(0.5 - stats.mean(np.minimum(x, 0.5)), abs=1e-12)


# =============================================================================================
# Stratified bootstrap


def test_estimate_as_dict():
    assert Estimate(1.5, 1.0, 2.0, 7).as_dict() == {"value": 1.5, "ci_low": 1.0, "ci_high": 2.0, "n": 7}
    assert Estimate(1.5, math.nan, math.nan, 1).as_dict() == {"value": 1.5, "ci_low": None, "ci_high": None, "n": 1}


def test_ragged_table_counts_present_scores_and_needs_two_runs_everywhere():
    x = stats.score_table([[0.1, 0.5, 0.9], [0.2, 0.4]])
    e = stats.stratified_bootstrap(x, "iqm")
    assert e.n == 5 and e.low <= e.value <= e.high
    one = stats.score_table([[0.1, 0.5, 0.9], [0.2]])
    e1 = stats.stratified_bootstrap(one, "mean")
    assert e1.n == 4 and e1.value == pytest.approx((0.5 + 0.2) / 2)
    assert math.isnan(e1.low) and math.isnan(e1.high)


def test_padding_rows_do_not_count_as_runs():
    """Five runs padded to twelve rows must bootstrap like five runs (the interval of scipy's
    one-sample bootstrap), not like twelve: the real count drives the width."""
    x = np.array([0.0, 1.3, 2.1, 4.4, 7.9])
    padded = np.concatenate([x, np.full(7, np.nan)])[:, None]
    ours = stats.stratified_bootstrap(padded, reps=40_000, seed=1, method="percentile")
    ref = sps.bootstrap((x,), np.mean, n_resamples=40_000, method="percentile", rng=np.random.default_rng(2))
    tol = 0.03 * (ref.confidence_interval.high - ref.confidence_interval.low)
    assert ours.n == 5
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=tol)


def test_strata_are_resampled_separately():
    """Stratum means stay fixed under within-stratum resampling, so with constant strata the
    mean has no sampling variability at all; pooled resampling would give a wide interval."""
    x = np.column_stack([np.zeros(6), np.full(6, 10.0)])
    e = stats.stratified_bootstrap(x, "mean", method="bca")
    assert (e.value, e.low, e.high) == (5.0, 5.0, 5.0)


@pytest.mark.parametrize("method", stats.METHODS)
@pytest.mark.parametrize("statistic", list(stats.AGGREGATES))
def test_all_equal_data_gives_degenerate_interval(method, statistic):
    e = stats.stratified_bootstrap(np.full((4, 3), 0.3), statistic, method=method)
    assert e.low == e.value == e.high and e.n == 12


def test_aggregate_intervals_share_resamples_with_stratified_bootstrap():
    rng = np.random.default_rng(3)
    scores = {"a": rng.normal(size=(6, 4)), "b": stats.score_table([rng.normal(size=k) for k in (3, 5, 4, 6)])}
    for method in stats.METHODS:
        out = stats.aggregate_intervals(scores, method=method, reps=300, seed=7)
        assert set(out) == {"a", "b"} and set(out["a"]) == set(stats.AGGREGATES)
        for algo, x in scores.items():
            for name in stats.AGGREGATES:
                assert same(out[algo][name], stats.stratified_bootstrap(x, name, reps=300, seed=7, method=method))
    # an algorithm's intervals do not depend on the others
    alone = stats.aggregate_intervals({"b": scores["b"]}, reps=300, seed=7)
    assert alone["b"] == stats.aggregate_intervals(scores, reps=300, seed=7)["b"]


def test_seed_reproducible_and_matters():
    x = np.random.default_rng(0).normal(size=(5, 3))
    a, b = stats.stratified_bootstrap(x, "iqm", seed=4), stats.stratified_bootstrap(x, "iqm", seed=4)
    c = stats.stratified_bootstrap(x, "iqm", seed=5)
    assert a == b and a.value == c.value and (a.low, a.high) != (c.low, c.high)


def test_expanded_interval_is_the_percentile_interval_at_the_widened_level():
    """Hesterberg's expansion by hand: at 5 runs in one stratum, sqrt(5/4) t_4(0.975) = 3.104, so
    the tails hold 2 P(Z > 3.104) = 0.19% instead of 5%: the expanded interval is the percentile
    interval at 99.81% on the same resamples. Over S alike strata the t has S (n - 1) degrees of
    freedom (Welch-Satterthwaite)."""
    assert stats.expanded_alpha(0.05, 5) == pytest.approx(2 * sps.norm.sf(np.sqrt(5 / 4) * 2.7764451), rel=1e-5)
    assert stats.expanded_alpha(0.05, 5) == pytest.approx(0.001908, abs=1e-6)
    x = normal(5, seed=3)
    expanded = stats.stratified_bootstrap(x[:, None], "mean", reps=5000, seed=0)
    wide = stats.stratified_bootstrap(x[:, None], "mean", reps=5000, seed=0, method="percentile",
                                      confidence=1 - stats.expanded_alpha(0.05, 5))
    assert (expanded.low, expanded.high) == (wide.low, wide.high)
    narrow = stats.stratified_bootstrap(x[:, None], "mean", reps=5000, seed=0, method="percentile")
    assert expanded.low < narrow.low and expanded.high > narrow.high
    alike = np.column_stack([x, x + 1.0, x - 2.0])  # three strata, the same spread
    assert stats.effective_df(np.sort(alike, axis=0)) == pytest.approx(3 * 4)
    assert stats.effective_df(np.sort(np.ones((4, 2)), axis=0)) == np.inf  # nothing varies


def test_wilson_interval_for_per_run_yes_no_outcomes():
    """1 success in 20 runs: Wilson [0.0089, 0.236] (by hand: centre (k + z^2/2) / (n + z^2),
    half-width z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)), where the bootstrap of 0/1 values
    gives [0, 0.15]; strata are pooled; anything but 0 and 1 is refused."""
    outcomes = np.r_[1.0, np.zeros(19)]
    e = stats.wilson_mean(outcomes)
    z = sps.norm.ppf(0.975)
    centre, half = (1 + z**2 / 2) / (20 + z**2), z * np.sqrt(1 * 19 / 20 + z**2 / 4) / (20 + z**2)
    assert (e.value, e.n) == (0.05, 20)
    assert (e.low, e.high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert stats.wilson_mean(outcomes.reshape(10, 2)).as_dict() == e.as_dict()
    assert stats.is_binary(outcomes) and not stats.is_binary([0.0, 0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        stats.wilson_mean([0.0, 0.5])


def test_percentile_matches_scipy_on_one_stratum():
    x = normal(12, seed=11)
    ours = stats.stratified_bootstrap(x[:, None], "mean", reps=40_000, seed=0, method="percentile")
    ref = sps.bootstrap((x,), np.mean, n_resamples=40_000, method="percentile", rng=np.random.default_rng(1))
    tol = 0.03 * (ref.confidence_interval.high - ref.confidence_interval.low)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=tol)


@pytest.mark.parametrize(("statistic", "scipy_stat"), [
    ("mean", np.mean),
    ("iqm", lambda a, axis: sps.trim_mean(a, 0.25, axis=axis)),
])
def test_bca_matches_scipy_on_one_stratum(statistic, scipy_stat):
    """BCa on skewed data, one stratum: same bias correction and jackknife acceleration as
    scipy.stats.bootstrap(method="BCa"); the endpoints differ only by Monte Carlo noise
    (with 40,000 resamples about 1% of the width)."""
    x = np.random.default_rng(5).lognormal(0.0, 1.0, size=16)
    ours = stats.stratified_bootstrap(x[:, None], statistic, reps=40_000, method="bca", seed=0)
    ref = sps.bootstrap((x,), scipy_stat, n_resamples=40_000, method="BCa", rng=np.random.default_rng(1))
    pct = stats.stratified_bootstrap(x[:, None], statistic, reps=40_000, method="percentile", seed=0)
    lo, hi = ref.confidence_interval
    tol = 0.04 * (hi - lo)
    assert ours.low == pytest.approx(lo, abs=tol)
    assert ours.high == pytest.approx(hi, abs=tol)
    # and BCa really moved the interval away from the percentile one (by more than the noise)
    assert max(abs(ours.low - pct.low), abs(ours.high - pct.high)) > tol


def test_bca_falls_back_to_percentile_when_jackknife_is_flat():
    # the pooled maximum: with the top score twice, no single left-out score moves it
    def pooled_max(t: np.ndarray) -> np.ndarray:
        return np.nanmax(t, axis=(-2, -1))

    x = np.array([0.0, 1.0, 2.0, 5.0, 5.0])[:, None]
    bca = stats.stratified_bootstrap(x, pooled_max, method="bca", reps=500)
    pct = stats.stratified_bootstrap(x, pooled_max, method="percentile", reps=500)
    assert bca == pct and bca.low < bca.high == 5.0


def test_callable_statistic_must_reduce_to_one_value_per_replicate():
    def per_stratum(t: np.ndarray) -> np.ndarray:
        return np.nanmean(t, axis=-2)

    def first_replicate(t: np.ndarray) -> np.ndarray:
        return np.nanmean(t.reshape(-1, *t.shape[-2:])[0])

    x = np.arange(6.0).reshape(3, 2)
    with pytest.raises(ValueError, match=r"'per_stratum' must reduce \[runs, strata\] to one value"):
        stats.stratified_bootstrap(x, per_stratum)
    with pytest.raises(ValueError, match=r"'first_replicate' must reduce \[reps, runs, strata\] to \[reps\]"):
        stats.stratified_bootstrap(x, first_replicate)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"x": np.ones(5)}, "2-D"),
    ({"x": np.ones((2, 2, 2))}, "2-D"),
    ({"x": np.ones((3, 0))}, "no strata"),
    ({"x": np.array([[1.0, np.nan], [2.0, np.nan]])}, r"stratum \[1\] has no runs"),
    ({"x": np.array([[1.0], [np.inf]])}, "infinite"),
    ({"statistic": "mode"}, "unknown statistic"),
    ({"method": "basic"}, "method must be one of"),
    ({"reps": 0}, "reps must be a positive integer"),
    ({"confidence": 1.0}, "confidence"),
])
def test_stratified_bootstrap_rejects_bad_input(kwargs, message):
    args = {"x": np.ones((3, 2))} | kwargs
    x = args.pop("x")
    with pytest.raises(ValueError, match=message):
        stats.stratified_bootstrap(x, **args)


def test_aggregate_intervals_rejects_bad_statistics():
    with pytest.raises(ValueError, match="distinct"):
        stats.aggregate_intervals({"a": np.ones((3, 2))}, ("mean", "mean"))
    with pytest.raises(ValueError, match="unknown statistic"):
        stats.aggregate_intervals({"a": np.ones((3, 2))}, ("mean", "max"))
    with pytest.raises(ValueError, match=r"scores\['b'\]"):
        stats.aggregate_intervals({"a": np.ones((3, 2)), "b": np.ones(3)})


# --- properties -------------------------------------------------------------------------------


@given(tables(min_present=1), st.integers(0, 2**16), st.sampled_from(stats.METHODS))
@settings(max_examples=40, deadline=None)
def test_permuting_runs_within_strata_changes_nothing(x, perm_seed, method):
    y = shuffle_columns(x, perm_seed)
    a = stats.aggregate_intervals({"a": x}, method=method, **FAST)["a"]
    b = stats.aggregate_intervals({"a": y}, method=method, **FAST)["a"]
    assert all(same(a[k], b[k]) for k in a)


SHIFT_SCALE_STATS = ("mean", "median", "iqm")


@given(tables(), st.floats(-1000, 1000), st.sampled_from(stats.METHODS))
@settings(max_examples=40, deadline=None)
def test_adding_a_constant_shifts_value_and_bounds(x, c, method):
    a = stats.aggregate_intervals({"a": x}, SHIFT_SCALE_STATS, method=method, **FAST)["a"]
    b = stats.aggregate_intervals({"a": x + c}, SHIFT_SCALE_STATS, method=method, **FAST)["a"]
    tol = 1e-9 * (1 + abs(c))
    for k in SHIFT_SCALE_STATS:
        assert b[k].value == pytest.approx(a[k].value + c, abs=tol)
        assert b[k].low == pytest.approx(a[k].low + c, abs=tol)
        assert b[k].high == pytest.approx(a[k].high + c, abs=tol)


@given(tables(), st.floats(0.01, 100))
@settings(max_examples=40, deadline=None)
def test_scaling_by_positive_constant_scales_value_and_bounds(x, k):
    a = stats.aggregate_intervals({"a": x}, SHIFT_SCALE_STATS, **FAST)["a"]
    b = stats.aggregate_intervals({"a": x * k}, SHIFT_SCALE_STATS, **FAST)["a"]
    for name in SHIFT_SCALE_STATS:
        for field in ("value", "low", "high"):
            assert getattr(b[name], field) == pytest.approx(k * getattr(a[name], field), abs=1e-9 * (1 + k))


@given(tables())
@settings(max_examples=30, deadline=None)
def test_interval_contains_estimate_and_lies_within_data(x):
    for name, e in stats.aggregate_intervals({"a": x}, ("mean", "iqm"), **FAST)["a"].items():
        lo, hi = np.nanmin(x), np.nanmax(x)
        assert lo <= e.low <= e.high <= hi, name
    e = stats.stratified_bootstrap(x, "mean", **FAST)
    assert e.n == int(np.sum(~np.isnan(x)))


# =============================================================================================
# bootstrap_mean (one stratum, percentile): the interval reports used before harness.stats grew


def test_empty():
    e = bootstrap_mean([])
    assert e.n == 0
    assert math.isnan(e.value) and math.isnan(e.low) and math.isnan(e.high)
    assert e.as_dict() == {"value": None, "ci_low": None, "ci_high": None, "n": 0}


def test_one_value_has_mean_but_no_interval():
    e = bootstrap_mean([3.25])
    assert e.n == 1 and e.value == 3.25
    assert math.isnan(e.low) and math.isnan(e.high)
    assert e.as_dict() == {"value": 3.25, "ci_low": None, "ci_high": None, "n": 1}


def test_missing_runs_are_dropped():
    assert bootstrap_mean([1.0, np.nan, 3.0]) == bootstrap_mean([1.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_mean([[1.0, 2.0]])


@pytest.mark.parametrize("n", [2, 5, 30])
def test_all_equal_values_give_degenerate_interval(n):
    e = bootstrap_mean(np.full(n, -0.75))
    assert e == Estimate(-0.75, -0.75, -0.75, n)


@pytest.mark.parametrize("n", [2, 3, 10, 50])
def test_interval_contains_sample_mean(n):
    x = normal(n, seed=n)
    e = bootstrap_mean(x)
    assert e.n == n
    assert e.value == pytest.approx(float(np.mean(x)), abs=1e-12)
    assert e.low < e.value < e.high
    assert x.min() <= e.low and e.high <= x.max()  # a mean of resamples lies within the data


def test_accepts_list_and_array_alike():
    x = normal(8)
    assert bootstrap_mean(list(x)) == bootstrap_mean(x)


def test_bootstrap_mean_seed_reproducible_and_seed_matters():
    x = normal(12)
    assert bootstrap_mean(x, seed=4) == bootstrap_mean(x, seed=4)
    a, b = bootstrap_mean(x, seed=4), bootstrap_mean(x, seed=5)
    assert a.value == b.value
    assert (a.low, a.high) != (b.low, b.high)


def test_interval_shrinks_with_more_runs():
    small = bootstrap_mean(normal(5, seed=1), seed=0)
    large = bootstrap_mean(normal(200, seed=1), seed=0)
    assert width(large) < 0.5 * width(small)


def test_higher_confidence_gives_wider_interval():
    x = normal(20)
    assert width(bootstrap_mean(x, confidence=0.5)) < width(bootstrap_mean(x, confidence=0.95))


@pytest.mark.parametrize("c", [-7.0, 3.7, 100.0])
def test_shift_equivariance(c):
    x = normal(15, seed=2)
    a, b = bootstrap_mean(x), bootstrap_mean(x + c)
    assert b.n == a.n
    assert b.value == pytest.approx(a.value + c, abs=1e-9)
    assert b.low == pytest.approx(a.low + c, abs=1e-9)
    assert b.high == pytest.approx(a.high + c, abs=1e-9)


def test_permuting_values_keeps_everything():
    x = normal(10, seed=3)
    assert bootstrap_mean(x) == bootstrap_mean(x[::-1]) == bootstrap_mean(np.random.default_rng(9).permutation(x))


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


# =============================================================================================
# Probability of improvement


def test_probability_of_improvement_hand_computed_with_ties():
    # stratum 1: x = 1 2 3 3 against y = 2 3: wins 0 + 0.5 + 1.5 + 1.5 = 3.5 of 8 pairs -> 0.4375
    # stratum 2: x = 5 against y = 1 9: 1 of 2 -> 0.5; mean over strata 0.46875
    x = stats.score_table([[1, 2, 3, 3], [5]])
    y = stats.score_table([[2, 3], [1, 9]])
    e = stats.probability_of_improvement(x, y)
    assert e.value == 0.46875 and e.n == 9
    assert math.isnan(e.low) and math.isnan(e.high)  # x has one run in stratum 2


def test_probability_of_improvement_is_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(8)
    x, y = rng.integers(0, 5, size=7).astype(float), rng.integers(0, 5, size=9).astype(float)
    u = sps.mannwhitneyu(x, y).statistic
    assert stats.probability_of_improvement(x[:, None], y[:, None]).value == pytest.approx(u / 63, abs=1e-15)


def test_probability_of_improvement_interval_is_the_bootstrap_of_the_definition():
    """The fast replicate formula (multiplicities x wins) equals recomputing P(X > Y) from the
    definition on every resampled pair of tables drawn with the same generators."""
    rng = np.random.default_rng(4)
    x = stats.score_table([rng.integers(0, 4, size=k).astype(float) for k in (4, 3, 5)])
    y = stats.score_table([rng.integers(0, 4, size=k).astype(float) for k in (3, 6, 2)])
    reps = 300
    e = stats.probability_of_improvement(x, y, reps=reps, seed=11)
    gx, gy = stats._streams(11)
    xs, ys = np.sort(x, axis=0), np.sort(y, axis=0)
    xb = stats._resample(xs, stats.runs_per_stratum(xs), reps, gx)
    yb = stats._resample(ys, stats.runs_per_stratum(ys), reps, gy)
    direct = []
    for i in range(reps):  # the slow way, one replicate at a time, straight from the definition
        per_stratum = []
        for s in range(x.shape[1]):
            a, b = xb[i, :, s], yb[i, :, s]
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            per_stratum.append(np.mean((a[:, None] > b) + 0.5 * (a[:, None] == b)))
        direct.append(np.mean(per_stratum))
    alpha = stats.expanded_alpha(0.05, 2)  # the smallest stratum has 2 runs
    assert e.low == pytest.approx(np.quantile(direct, alpha / 2), abs=1e-12)
    assert e.high == pytest.approx(np.quantile(direct, 1 - alpha / 2), abs=1e-12)


@given(tables(), tables(), st.integers(0, 100))
@settings(max_examples=40, deadline=None)
def test_probability_of_improvement_complements(x, y, seed):
    y = y[:, np.arange(x.shape[1]) % y.shape[1]]  # same strata count: reuse y's columns cyclically
    xy = stats.probability_of_improvement(x, y, seed=seed, **FAST)
    yx = stats.probability_of_improvement(y, x, seed=seed, **FAST)
    assert xy.value + yx.value == pytest.approx(1.0, abs=1e-12)
    assert 0.0 <= xy.low <= xy.high <= 1.0
    assert stats.probability_of_improvement(x, x, **FAST).value == pytest.approx(0.5, abs=1e-12)
    assert same(xy, stats.probability_of_improvement(shuffle_columns(x, seed), y, seed=seed, **FAST))


def test_probability_of_improvement_clear_winner():
    rng = np.random.default_rng(0)
    e = stats.probability_of_improvement(rng.normal(5, 1, (10, 3)), rng.normal(0, 1, (10, 3)))
    assert e == Estimate(1.0, 1.0, 1.0, 60)


def test_pairwise_probability_of_improvement_equals_single_calls():
    rng = np.random.default_rng(2)
    scores = {"a": rng.normal(size=(5, 3)), "b": rng.normal(0.3, size=(4, 3)),
              "c": stats.score_table([rng.normal(size=k) for k in (2, 6, 3)])}
    out = stats.pairwise_probability_of_improvement(scores, reps=300, seed=3)
    assert set(out) == {(a, b) for a in scores for b in scores if a != b}
    for (a, b), e in out.items():
        assert same(e, stats.probability_of_improvement(scores[a], scores[b], reps=300, seed=3))


def test_probability_of_improvement_rejects_mismatched_strata():
    with pytest.raises(ValueError, match="x has 2 strata but y has 3"):
        stats.probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"scores\['a'\] has 2 strata but scores\['b'\] has 3"):
        stats.pairwise_probability_of_improvement({"a": np.ones((3, 2)), "b": np.ones((3, 3))})


# =============================================================================================
# Performance profiles


def test_performance_profile_hand_computed():
    # stratum 1: 0.1 0.5 0.9; stratum 2: 0.2 0.6. Above 0.4: 2/3 and 1/2 -> 7/12
    x = stats.score_table([[0.1, 0.5, 0.9], [0.2, 0.6]])
    p = stats.performance_profile(x, [0.0, 0.4, 0.6, 1.0], reps=500)
    np.testing.assert_allclose(p.fraction, [1.0, 7 / 12, 1 / 6, 0.0])
    assert p.low[0] == p.high[0] == 1.0 and p.low[-1] == p.high[-1] == 0.0
    assert p.as_dict()["fraction"][1] == pytest.approx(7 / 12)


def test_performance_profile_without_interval_for_single_run():
    p = stats.performance_profile(stats.score_table([[0.1, 0.5], [0.2]]), [0.3])
    assert p.fraction[0] == pytest.approx(0.25) and np.isnan(p.low).all() and np.isnan(p.high).all()
    assert p.as_dict()["low"] == [None]


def test_performance_profile_rejects_bad_taus():
    with pytest.raises(ValueError, match="taus"):
        stats.performance_profile(np.ones((3, 2)), [[0.1]])
    with pytest.raises(ValueError, match="taus"):
        stats.performance_profile(np.ones((3, 2)), [np.nan])


@given(tables(), st.lists(quarters, min_size=1, max_size=12))
@settings(max_examples=40, deadline=None)
def test_performance_profile_is_a_non_increasing_fraction(x, taus):
    t = np.sort(np.asarray(taus))
    p = stats.performance_profile(x, t, **FAST)
    for curve in (p.fraction, p.low, p.high):
        assert np.all((curve >= 0) & (curve <= 1))
        assert np.all(np.diff(curve) <= 1e-12)
    assert np.all(p.low <= p.high)
    assert same_profile(p, stats.performance_profile(shuffle_columns(x, 1), t, **FAST))


def same_profile(a: stats.Profile, b: stats.Profile) -> bool:
    return a.as_dict() == b.as_dict()


# =============================================================================================
# Tests, corrections and effect sizes


def test_holm_known_vector():
    # sorted 0.005 0.01 0.03 0.04 scaled by 4 3 2 1: 0.02 0.03 0.06 0.04 -> running max 0.02 0.03 0.06 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_array_equal(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    out = stats.holm([np.nan, 0.02, 0.04])  # NaN stays NaN and does not count in m
    assert np.isnan(out[0]) and np.allclose(out[1:], [0.04, 0.04])
    assert stats.holm([]).size == 0


def test_holm_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.2, 1.5])
    with pytest.raises(ValueError, match="1-D"):
        stats.holm([[0.2]])


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_properties(p):
    raw = np.asarray(p)
    adj = stats.holm(raw)
    assert np.all(adj >= raw) and np.all(adj <= 1)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(adj[order]) >= 0)  # the adjustment keeps the order of the raw p-values
    assert np.all(adj <= np.minimum(raw * raw.size, 1.0) + 1e-15)  # never above Bonferroni


def test_hedges_g_hand_computed():
    # means 2 and 5, both variances 1 -> d = -3; df = 4: J = Γ(2) / (sqrt(2) Γ(1.5)) = 0.7978845608
    assert stats.hedges_g([1, 2, 3], [4, 5, 6]) == pytest.approx(-3 * 0.7978845608, rel=1e-9)
    # close to the common approximation J = 1 - 3 / (4 df - 1)
    rng = np.random.default_rng(1)
    x, y = rng.normal(1, 1, 12), rng.normal(0, 1, 15)
    d = (x.mean() - y.mean()) / math.sqrt((11 * x.var(ddof=1) + 14 * y.var(ddof=1)) / 25)
    assert stats.hedges_g(x, y) == pytest.approx(d * (1 - 3 / (4 * 25 - 1)), rel=1e-3)


def test_hedges_g_edge_cases():
    assert math.isnan(stats.hedges_g([1.0], [2.0, 3.0]))
    assert stats.hedges_g([2.0, 2.0], [2.0, 2.0]) == 0.0
    assert math.isnan(stats.hedges_g([1.0, 1.0], [2.0, 2.0]))


def test_cliffs_delta_hand_computed():
    # x = 1 2 3 against y = 2 2 5: x greater in 2 pairs, smaller in 5 -> (2 - 5) / 9
    assert stats.cliffs_delta([1, 2, 3], [2, 2, 5]) == pytest.approx(-1 / 3, abs=1e-15)
    assert stats.cliffs_delta([3, 4], [1, 2]) == 1.0
    assert math.isnan(stats.cliffs_delta([], [1.0]))


@given(st.lists(quarters, min_size=1, max_size=10), st.lists(quarters, min_size=1, max_size=10))
def test_cliffs_delta_is_twice_probability_of_improvement_minus_one(x, y):
    p = stats.probability_of_improvement(np.array(x)[:, None], np.array(y)[:, None], reps=1).value
    assert stats.cliffs_delta(x, y) == pytest.approx(2 * p - 1, abs=1e-12)
    assert stats.cliffs_delta(y, x) == pytest.approx(-stats.cliffs_delta(x, y), abs=1e-12)


def test_pairwise_tests_match_scipy_and_holm():
    rng = np.random.default_rng(6)
    samples = {"a": rng.normal(0, 1, 8).tolist(), "b": rng.normal(1.5, 2, 6).tolist(),
               "c": rng.normal(0.2, 1, 10).tolist(), "d": [0.4]}
    out = stats.pairwise_tests(samples)
    assert [(t.a, t.b) for t in out] == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    for t in out:
        x, y = np.array(samples[t.a]), np.array(samples[t.b])
        assert (t.n_a, t.n_b) == (x.size, y.size)
        assert t.mean_difference == pytest.approx(x.mean() - y.mean())
        assert t.cliffs_delta == stats.cliffs_delta(x, y)
        if t.b == "d":  # one run: no test, shown as NaN
            assert math.isnan(t.welch_p) and math.isnan(t.mwu_p) and math.isnan(t.welch_p_holm)
            assert math.isnan(t.hedges_g)
            continue
        welch, mwu = sps.ttest_ind(x, y, equal_var=False), sps.mannwhitneyu(x, y, alternative="two-sided")
        assert (t.welch_t, t.welch_p) == pytest.approx((welch.statistic, welch.pvalue))
        assert (t.mwu_u, t.mwu_p) == pytest.approx((mwu.statistic, mwu.pvalue))
        assert t.hedges_g == stats.hedges_g(x, y)
    tested = [t for t in out if t.b != "d"]
    np.testing.assert_allclose([t.welch_p_holm for t in tested], stats.holm([t.welch_p for t in tested]))
    np.testing.assert_allclose([t.mwu_p_holm for t in tested], stats.holm([t.mwu_p for t in tested]))
    assert out[0].as_dict()["a"] == "a" and out[2].as_dict()["welch_p"] is None


# =============================================================================================
# Generalization gap and normalisation


def test_generalization_gap_hand_computed():
    # per run: 0.5, 1, 1, 0 -> 0.625
    e = stats.generalization_gap([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.0, 4.0], reps=500)
    assert e.value == 0.625 and e.n == 4 and 0.0 <= e.low <= e.value <= e.high <= 1.0


def test_generalization_gap_is_paired_by_run():
    """A shared run effect cancels in the paired gap: train = test + 1 on every run, however much
    runs vary, so the gap is exactly 1 with no interval width."""
    test = np.random.default_rng(0).normal(0, 10, size=(8, 3))
    e = stats.generalization_gap(test + 1.0, test, method="bca")
    assert e.value == pytest.approx(1.0) and e.high - e.low < 1e-12


def test_generalization_gap_drops_unpaired_runs_and_checks_shapes():
    train = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]])
    test = np.array([[0.0, 1.0], [np.nan, 1.0], [4.0, 4.0]])
    e = stats.generalization_gap(train, test, reps=100)
    assert e.n == 4 and e.value == pytest.approx((1.0 + 1.5) / 2)
    with pytest.raises(ValueError, match="same shape"):
        stats.generalization_gap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"train - test: stratum \[0\] has no runs"):
        stats.generalization_gap(np.array([1.0, np.nan]), np.array([np.nan, 1.0]))


def test_normalise_hand_computed():
    x = np.array([[0.0, 5.0], [10.0, 15.0], [np.nan, 25.0]])
    out = stats.normalise(x, [0.0, 5.0], [10.0, 25.0])
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0, 0.5], [np.nan, 1.0]])
    np.testing.assert_allclose(stats.normalise([2.0, 4.0], 2.0, 6.0), [0.0, 0.5])
    # lower-is-better references work too: random = 10, best = 0
    np.testing.assert_allclose(stats.normalise([10.0, 0.0, 5.0], 10.0, 0.0), [0.0, 1.0, 0.5])


@pytest.mark.parametrize(("random", "best", "message"), [
    ([0.0, 1.0], [1.0, 1.0], r"best equals random for stratum \[1\]"),
    (0.0, [1.0, 2.0, 3.0], "one value per stratum"),
    (np.nan, 1.0, "finite"),
])
def test_normalise_rejects_bad_references(random, best, message):
    with pytest.raises(ValueError, match=message):
        stats.normalise(np.ones((3, 2)), random, best)
