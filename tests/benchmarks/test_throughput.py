"""Throughput as ratios measured in one run (these machines are noisy; bare times mislead).

`tox -e bench` runs these with timing enabled and saves the JSON under .benchmarks/ so a
later run can be compared (`pytest-benchmark compare`). In the default test run they run
once, as smoke tests.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from harness import registry
from harness.config import build_config
from harness.runner import rollout
from scenarios.matrix import MatrixArgs, MatrixBackend

pytestmark = pytest.mark.benchmark

NUM_ENVS = 32
ROUNDS = 50


def _climbing(episode_length: int = 10) -> tuple[MatrixArgs, list, MatrixBackend]:
    args = MatrixArgs.model_validate({"game": "climbing", "episode_length": episode_length})
    comps = MatrixBackend.default_compositions(args)
    return args, comps, MatrixBackend(args, comps, NUM_ENVS, seed=0)


def _raw_steps_per_second(env: MatrixBackend, rounds: int) -> float:
    rng = np.random.default_rng(0)
    start, steps = time.perf_counter(), 0
    for _ in range(rounds):
        env.reset()
        for _ in range(env.spec.episode_limit):
            env.step(rng.integers(0, env.spec.n_actions, size=(NUM_ENVS, env.spec.max_agents)))
            steps += NUM_ENVS
    return steps / (time.perf_counter() - start)


def _training_steps_per_second(name: str, env: MatrixBackend, rounds: int) -> float:
    cls = registry.get_algorithm(name)
    algorithm = cls(env.spec, build_config(cls, {"batch_size": 32}), 0, torch.device("cpu"))
    start, steps = time.perf_counter(), 0
    for _ in range(rounds):
        out = rollout(env, algorithm, explore=True, seed=None, learn=True)
        algorithm.update()
        steps += int(out["env_steps"])
    return steps / (time.perf_counter() - start)


@pytest.mark.parametrize("name", ["qmix"])
def test_training_throughput_ratio(benchmark: pytest.FixtureRequest, name: str) -> None:
    """Harness training throughput / raw environment throughput, both measured here."""
    _, _, env = _climbing()
    raw = _raw_steps_per_second(env, ROUNDS)
    trained = benchmark.pedantic(_training_steps_per_second, args=(name, env, ROUNDS // 5), rounds=1, iterations=1)
    ratio = trained / raw
    benchmark.extra_info.update({"raw_env_steps_per_s": raw, "train_env_steps_per_s": trained, "ratio": ratio})
    print(f"\n{name}: training {trained:,.0f} env steps/s, raw env {raw:,.0f} steps/s, ratio {ratio:.4f}")
    assert trained > 0 and raw > trained
