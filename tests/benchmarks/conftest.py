"""What the benchmark tests share: a figure of `harness.bench` measured per test, its numbers
recorded in `benchmark.extra_info` so `--benchmark-autosave` keeps them in the saved JSON.

In the default test run (`--benchmark-disable`) each figure is measured briefly, as a smoke
test; `tox -e bench` measures at `harness bench`'s defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import bench

SMOKE = {"seconds": 0.3, "rounds": 1}


@pytest.fixture
def effort(benchmark: Any) -> dict[str, Any]:
    """Keyword arguments of `bench.measure` / `bench.interleaved_rates`: measuring time and rounds."""
    return dict(SMOKE) if benchmark.disabled else {"seconds": bench.SECONDS, "rounds": bench.ROUNDS}


@pytest.fixture
def measured(benchmark: Any, effort: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """Measure one figure by name (the test is skipped if a package it needs is missing)."""

    def measure(name: str) -> dict[str, Any]:
        problem = bench.FIGURES[name].missing()
        if problem is not None:
            pytest.skip(problem)
        figure = benchmark.pedantic(bench.measure, args=(name,), kwargs=effort, rounds=1, iterations=1)
        benchmark.extra_info.update(figure)
        print(f"\n{name} ({figure['task']}, {figure['batch']} envs): harness {figure['harness_steps_per_s']:,.0f} "
              f"env steps/s, {figure['raw_loop']} {figure['raw_steps_per_s']:,.0f}, ratio {figure['ratio']:.3f}")
        assert figure["harness_steps_per_s"] > 0 and figure["raw_steps_per_s"] > 0
        assert figure["ratio"] == pytest.approx(figure["harness_steps_per_s"] / figure["raw_steps_per_s"])
        return figure

    return measure
