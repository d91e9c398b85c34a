"""SMAX backend throughput vs raw jitted-and-vmapped SMAX stepping, at the same batch size.

Raw: JaxMARL's `HeuristicEnemySMAX.step_env` (the transition alone: no auto-reset, whose
reset-every-step would slow the raw side down) vmapped over the batch and jitted, random
actions drawn inside the compiled function, nothing copied to the host.
Backend: `SmaxBackend.step` as the runner calls it, with random available actions chosen in
numpy and every Step array copied to numpy. Only env steps of running episodes count for the
backend (an env whose battle ended waits for the batch's next reset), so the ratio is the
share of raw speed a learner actually gets.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

from scenarios.smax import SmaxArgs, SmaxBackend, SmaxComposition  # noqa: E402

pytestmark = pytest.mark.benchmark

NUM_ENVS = 32
UNITS = 5


def _raw_steps_per_second(calls: int) -> float:
    import jax
    from jaxmarl.environments.smax.heuristic_enemy_smax_env import HeuristicEnemySMAX

    env = HeuristicEnemySMAX(num_allies=UNITS, num_enemies=UNITS, smacv2_position_generation=True,
                             smacv2_unit_type_generation=True)
    n_actions = env.action_space(env.agents[0]).n

    def one(key, state):  # type: ignore[no-untyped-def]
        key, k_act, k_step = jax.random.split(key, 3)
        acts = jax.random.randint(k_act, (UNITS,), 0, n_actions)
        obs, state, reward, done, _ = env.step_env(k_step, state, {a: acts[i] for i, a in enumerate(env.agents)})
        return key, state, obs, reward

    step = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(0), NUM_ENVS)
    _, states = jax.vmap(env.reset)(keys)
    keys, states, obs, _ = step(keys, states)  # compile
    jax.block_until_ready(obs)
    start = time.perf_counter()
    for _ in range(calls):
        keys, states, obs, _ = step(keys, states)
    jax.block_until_ready(obs)
    return calls * NUM_ENVS / (time.perf_counter() - start)


def _backend_steps_per_second(episodes: int) -> float:
    env = SmaxBackend(SmaxArgs(race="protoss"), [SmaxComposition(allies=UNITS)], NUM_ENVS, seed=0)
    rng = np.random.default_rng(0)

    def play() -> int:
        step, steps = env.reset(), 0
        while not step.done.all():
            noise = rng.random(step.avail_actions.shape)
            active = int((~step.done).sum())
            step = env.step(np.where(step.avail_actions, noise, -1.0).argmax(-1))
            steps += active
        return steps

    play()  # compile
    start, steps = time.perf_counter(), 0
    for _ in range(episodes):
        steps += play()
    return steps / (time.perf_counter() - start)


def test_smax_backend_vs_raw_jitted_smax(benchmark: pytest.FixtureRequest) -> None:
    raw = _raw_steps_per_second(calls=300)
    ours = benchmark.pedantic(_backend_steps_per_second, args=(3,), rounds=1, iterations=1)
    ratio = ours / raw
    benchmark.extra_info.update({"raw_env_steps_per_s": raw, "backend_env_steps_per_s": ours, "ratio": ratio,
                                 "num_envs": NUM_ENVS, "units": f"{UNITS}v{UNITS}"})
    print(f"\nsmax {UNITS}v{UNITS}, {NUM_ENVS} envs: backend {ours:,.0f} env steps/s, raw jitted SMAX "
          f"{raw:,.0f}, ratio {ratio:.2f}")
    assert ours > 0 and raw > 0
