"""Overcooked throughput as a ratio measured in one run: the batched backend (entity encoding,
padding, random actions) against overcooked-ai's own OvercookedEnv loop on as many steps.

`tox -e bench` runs it with timing enabled; in the default test run it runs once, briefly.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from scenarios.overcooked import (
    LAYOUTS,
    OvercookedArgs,
    OvercookedBackend,
    OvercookedComposition,
    _overcooked,
)

MISSING = OvercookedBackend.missing_requirements(OvercookedArgs())
pytestmark = [pytest.mark.benchmark, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

NUM_ENVS = 8
HORIZON = 100
ROUNDS = 3  # batched episodes; the raw loop plays NUM_ENVS * ROUNDS episodes of the same length
LAYOUT = "cramped_room"


def _raw_env() -> object:
    _overcooked()  # the NumPy 2 alias overcooked_env needs at import time
    from overcooked_ai_py.mdp.overcooked_env import OvercookedEnv

    env = OvercookedEnv.from_mdp(_overcooked().OvercookedGridworld.from_layout_name(LAYOUTS[LAYOUT]),
                                 horizon=HORIZON, info_level=0)
    _raw_episode(env, np.random.default_rng(1))  # warm-up: the env builds its motion planner on step 1
    return env


def _raw_episode(env: object, rng: np.random.Generator) -> int:
    actions = _overcooked().Action.INDEX_TO_ACTION
    env.reset()
    done, steps = False, 0
    while not done:
        a, b = rng.integers(0, len(actions), size=2)
        _, _, done, _ = env.step((actions[a], actions[b]))
        steps += 1
    return steps


def _raw_steps_per_second(env: object) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    steps = sum(_raw_episode(env, rng) for _ in range(NUM_ENVS * ROUNDS))
    return steps / (time.perf_counter() - start)


def _backend() -> OvercookedBackend:
    args = OvercookedArgs(horizon=HORIZON)
    env = OvercookedBackend(args, [OvercookedComposition(layout=LAYOUT)], NUM_ENVS, seed=0)
    env.reset()  # builds the games
    return env


def _backend_steps_per_second(env: OvercookedBackend) -> float:
    rng = np.random.default_rng(0)
    start, steps = time.perf_counter(), 0
    for _ in range(ROUNDS):
        step = env.reset()
        while not step.done.all():
            step = env.step(rng.integers(0, env.spec.n_actions, size=(NUM_ENVS, env.spec.max_agents)))
            steps += NUM_ENVS
    return steps / (time.perf_counter() - start)


def test_backend_throughput_ratio(benchmark: pytest.FixtureRequest) -> None:
    """Batched backend env steps/s divided by raw OvercookedEnv steps/s, both measured here."""
    raw_env, env = _raw_env(), _backend()
    raw = _raw_steps_per_second(raw_env)
    batched = benchmark.pedantic(_backend_steps_per_second, args=(env,), rounds=1, iterations=1)
    ratio = batched / raw
    benchmark.extra_info.update({"raw_env_steps_per_s": raw, "backend_env_steps_per_s": batched, "ratio": ratio,
                                 "num_envs": NUM_ENVS, "layout": LAYOUT})
    print(f"\novercooked {LAYOUT}: backend {batched:,.0f} env steps/s ({NUM_ENVS} envs), "
          f"raw OvercookedEnv {raw:,.0f} steps/s, ratio {ratio:.3f}")
    assert ratio > 0.1  # the encoding costs about as much as the game; 10x slower would be a regression
