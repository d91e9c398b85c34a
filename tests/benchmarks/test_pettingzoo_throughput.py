"""PettingZoo backends: batched throughput over the raw library loop, as a ratio measured in one run.

Both sides do the same work: the same env, the same batch, random actions. The raw loop is the
library's ParallelEnvs stepped directly (a dict of sampled actions per step, a reset when the
agents are gone); the backend runs a batch of those envs behind the harness contract (entity
parsing, padding, masks). A ratio near 1 means the harness adds little; MPE's tiny steps make
its parsing show most. mpe_spread's default engine is the harness's own numpy simple_spread,
so its ratio is that engine's speed-up over the library (`mpe_spread@mpe2` is the mpe2 engine
behind the same backend); the last test sets the two engines side by side at 1 and 8 envs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import bench
from harness.api import Loop

pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.filterwarnings(
        "ignore:builtin type (SwigPy|swigvarlink):DeprecationWarning"
    ),  # Box2D's bindings
]


@pytest.mark.parametrize("name", ["mpe_spread", "mpe_spread@mpe2", "mpe_tag", "multiwalker", "pettingzoo"])
def test_backend_over_raw_pettingzoo_ratio(measured: Callable[[str], dict[str, Any]], name: str) -> None:
    measured(f"rollout/{name}")


# ---------------------------------------------------------------------------------------------
# mpe_spread's engines: the numpy re-implementation against mpe2 behind the same backend


def _engine_rates(num_envs: int, seconds: float, rounds: int) -> dict[str, float]:
    """Env steps/s of each engine's backend and of the raw mpe2 loop, interleaved, best of rounds."""
    tasks = {engine: bench.Task("mpe_spread", {"engine": engine}, {"n_agents": 3}, num_envs)
             for engine in ("numpy", "mpe2")}
    loops: dict[str, Loop] = {engine: bench.RandomPolicyLoop(task.build()) for engine, task in tasks.items()}
    _, args, composition = tasks["mpe2"].parsed()
    loops["raw"] = bench.RawLoop("mpe_spread").build(args, composition, num_envs)
    try:
        return bench.interleaved_rates(loops, seconds, rounds)
    finally:
        for loop in loops.values():
            loop.close()


@pytest.mark.parametrize("num_envs", [1, 8])
def test_spread_numpy_engine_over_mpe2(benchmark: Any, effort: dict[str, Any], num_envs: int) -> None:
    if bench.FIGURES["rollout/mpe_spread@mpe2"].missing():
        pytest.skip(bench.FIGURES["rollout/mpe_spread@mpe2"].missing())
    rates = benchmark.pedantic(_engine_rates, args=(num_envs,), kwargs=effort, rounds=1, iterations=1)
    over_engine, over_raw = rates["numpy"] / rates["mpe2"], rates["numpy"] / rates["raw"]
    micros = num_envs / rates["numpy"] * 1e6
    benchmark.extra_info.update(
        {
            **{f"{k}_env_steps_per_s": v for k, v in rates.items()},
            "numpy_over_mpe2_engine": over_engine,
            "numpy_over_raw_mpe2": over_raw,
            "numpy_us_per_batch_step": micros,
            "num_envs": num_envs,
        }
    )
    print(
        f"\nmpe_spread num_envs={num_envs}: numpy engine {rates['numpy']:,.0f} env steps/s "
        f"({micros:.0f} us per batch step, resets included), mpe2 engine {rates['mpe2']:,.0f}, "
        f"raw mpe2 {rates['raw']:,.0f}; numpy/mpe2 engine {over_engine:.1f}, numpy/raw mpe2 {over_raw:.1f}"
    )
    # Measured ~6x (one env) and ~30x (eight); far below that only if the engine lost its point.
    assert over_engine > 2
