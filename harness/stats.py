"""Statistics for reports: seeds are the unit of replication.

Intervals use the real number of runs; with fewer than two runs there is no interval and
the report says so instead of inventing one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float  # NaN when it cannot be estimated (fewer than two runs)
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {"mean": clean(self.mean), "ci_low": clean(self.low), "ci_high": clean(self.high), "n": self.n}


def bootstrap_mean(values: np.ndarray | list[float], confidence: float = 0.95, reps: int = 2000,
                   seed: int = 0) -> Estimate:
    """Mean with a percentile bootstrap interval over runs (scipy.stats.bootstrap)."""
    # Sorted so the interval cannot depend on the order the store returned the runs in.
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"), n)
    if np.all(x == x[0]):  # every run agrees: the resampled means are all equal
        return Estimate(mean, mean, mean, n)
    res = sps.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=reps, method="percentile",
                        rng=np.random.default_rng(seed), vectorized=True)
    return Estimate(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), n)
