"""PettingZoo backends: batched throughput over the raw library loop, as a ratio measured in one run.

Both sides do the same work: the same env, the same number of env steps, random actions.
The raw loop is the library's ParallelEnv stepped directly (a dict of sampled actions per
step, a reset when the agents are gone); the backend runs a batch of those envs behind the
harness contract (entity parsing, padding, masks). A ratio near 1 means the harness adds
little; MPE's tiny steps make its parsing show most. In the default test run (benchmarks
disabled) each side runs a few hundred steps as a smoke test; `tox -e bench` runs more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from harness import registry
from harness.api import Backend

pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.filterwarnings(
        "ignore:builtin type (SwigPy|swigvarlink):DeprecationWarning"
    ),  # Box2D's bindings
]

NUM_ENVS = 8


def _spread() -> Any:
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3)


def _tag() -> Any:
    from mpe2 import simple_tag_v3

    return simple_tag_v3.parallel_env(num_good=1, num_adversaries=3, num_obstacles=2)


def _walkers() -> Any:
    from pettingzoo.sisl.multiwalker.multiwalker import parallel_env

    return parallel_env(n_walkers=3)


# backend name -> (args, composition, the same env built straight from the library)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], Callable[[], Any]]] = {
    "mpe_spread": ({}, {"n_agents": 3}, _spread),
    "mpe_tag": ({"prey_policy": "random"}, {}, _tag),
    "multiwalker": ({}, {"n_walkers": 3}, _walkers),
    "pettingzoo": ({"env": "mpe2.simple_spread_v3", "kwargs": {"N": 3}}, {}, _spread),
}


def _raw_steps_per_second(make: Callable[[], Any], steps: int) -> float:
    env = make()
    for agent in env.possible_agents:
        env.action_space(agent).seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step({a: env.action_space(a).sample() for a in env.agents})
        if not env.agents:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def _random_actions(env: Backend, step: Any, rng: np.random.Generator) -> np.ndarray:
    if not env.spec.discrete:
        return rng.uniform(-1, 1, size=(*step.agent_mask.shape, env.spec.n_actions)).astype(np.float32)
    return np.where(step.avail_actions, rng.random(step.avail_actions.shape), -1).argmax(-1)


def _backend(name: str) -> Backend:
    args, comp, _ = CASES[name]
    cls = registry.get_env(name)
    parsed = cls.Args.model_validate(args)
    return cls(parsed, [cls.Composition.model_validate(comp)], NUM_ENVS, seed=0)


def _backend_steps_per_second(env: Backend, steps: int) -> float:
    """Env steps (summed over the batch, finished envs not counted) per second."""
    rng = np.random.default_rng(0)
    env.reset()  # builds the envs outside the timing, as the raw loop builds its one env
    start, done = time.perf_counter(), 0
    while done < steps:
        step = env.reset()
        while not step.done.all() and done < steps:
            active = int((~step.done).sum())
            step = env.step(_random_actions(env, step, rng))
            done += active
    return done / (time.perf_counter() - start)


@pytest.mark.parametrize("name", list(CASES))
def test_backend_over_raw_pettingzoo_ratio(benchmark: Any, name: str) -> None:
    steps = 400 if benchmark.disabled else 5000
    env = _backend(name)
    raw = _raw_steps_per_second(CASES[name][2], steps)
    batched = benchmark.pedantic(_backend_steps_per_second, args=(env, steps), rounds=1, iterations=1)
    env.close()
    ratio = batched / raw
    benchmark.extra_info.update(
        {
            "raw_env_steps_per_s": raw,
            "backend_env_steps_per_s": batched,
            "ratio": ratio,
            "num_envs": NUM_ENVS,
            "env_steps": steps,
        }
    )
    print(
        f"\n{name}: backend {batched:,.0f} env steps/s, raw PettingZoo {raw:,.0f} steps/s, ratio {ratio:.3f}"
    )
    assert batched > 0 and raw > 0
