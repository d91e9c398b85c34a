"""Throughput as ratios measured in one run (these machines are noisy; bare times mislead).

The matrix backend against the bare numpy payoff lookup, and one algorithm of each family
acting (`act/`) and training (`train/`) on mpe_spread against the raw mpe2 loop of the same
task (`harness.bench` says what each side runs). `tox -e bench` saves the JSON under
.benchmarks/ so a later run can be compared (`pytest-benchmark compare`); in the default test
run they run once, briefly, as smoke tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import bench

pytestmark = pytest.mark.benchmark

Measured = Callable[[str], dict[str, Any]]


def test_matrix_backend_over_numpy_payoff_loop(measured: Measured) -> None:
    figure = measured("rollout/matrix")
    assert figure["ratio"] < 1  # Step arrays cost more than a bare table lookup, or nothing was built


@pytest.mark.parametrize("name", list(bench.FAMILIES))
def test_acting_throughput_ratio(measured: Measured, name: str) -> None:
    """runner.rollout with the algorithm acting (explore, no learning) / the raw env loop."""
    measured(f"act/{name}")


@pytest.mark.parametrize("name", list(bench.FAMILIES))
def test_training_throughput_ratio(measured: Measured, name: str) -> None:
    """Harness training throughput (rollouts and updates) / raw env throughput, both measured here."""
    measured(f"train/{name}")
