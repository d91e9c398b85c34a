"""Next-step auto-reset in the backends (what `rollout: continuous` plays on): after a done row,
the env's next row is its new episode's first observation with zero reward, episodes are
the same for the same seed, and a batch saved mid-episode goes on exactly as before."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from countdown_env import Countdown, SynchronousCountdown

from harness import registry
from harness.api import Backend, Step
from harness.bench import random_actions

FIELDS = [f.name for f in dataclasses.fields(Step)]
NUM_ENVS = 6


def _backend(name: str, args: dict[str, Any], compositions: list[dict[str, Any]]) -> Callable[[int], Backend]:
    def make(seed: int) -> Backend:
        cls = registry.get_env(name) if name != "countdown" else Countdown
        parsed = cls.Args.model_validate(args)
        return cls(parsed, [cls.Composition.model_validate(c) for c in compositions], NUM_ENVS, seed)

    return make


# Backends whose envs all end (and so restart) together, and those whose envs end apart.
LOCKSTEP = {
    "matrix": _backend("matrix", {"game": "two_type", "episode_length": 3}, [{"types": ["A", "B"]}, {"types": ["B", "A"]}]),
    "mpe_spread": _backend("mpe_spread", {"max_cycles": 4}, [{"n_agents": 2}, {"n_agents": 3}]),
    "mpe_spread@mpe2": _backend("mpe_spread", {"max_cycles": 4, "engine": "mpe2"}, [{"n_agents": 2}, {"n_agents": 3}]),
}
APART = {
    "countdown": _backend("countdown", {"episode_limit": 5}, [{"agents": 2}, {"agents": 3}]),
    # 2v2 and 3v3 marines in SMAX's clumps: battles of a few dozen steps, ending apart.
    "smax": _backend("smax", {"race": "terran", "start_positions": "smax", "episode_limit": 40},
                     [{"allies": 2, "units": {"marine": 2}}, {"allies": 3, "units": {"marine": 3}}]),
}
SAVES_STATE = ["matrix", "mpe_spread", "smax"]


def _needs(name: str) -> None:
    if name == "smax":
        pytest.importorskip("jaxmarl")
    if name == "mpe_spread@mpe2":
        pytest.importorskip("mpe2")


def _enabled(env: Backend) -> Backend:
    env.enable_autoreset()
    return env


def play(env: Backend, steps: int, rng_seed: int = 0) -> list[Step]:
    """Auto-reset on, `steps` steps of uniformly random available actions."""
    rng = np.random.default_rng(rng_seed)
    trace = [env.reset()]
    for _ in range(steps):
        trace.append(env.step(random_actions(env.spec, trace[-1], rng)))
    return trace


def stacked(trace: list[Step], name: str) -> np.ndarray:
    return np.stack([getattr(s, name) for s in trace])


def same(a: list[Step], b: list[Step]) -> bool:
    return all(np.array_equal(getattr(x, f), getattr(y, f)) for x, y in zip(a, b, strict=True) for f in FIELDS)


@pytest.mark.parametrize("name", [*LOCKSTEP, *APART])
def test_a_done_env_starts_its_next_episode_at_the_next_step(name: str) -> None:
    _needs(name)
    make = {**LOCKSTEP, **APART}[name]
    trace = play(_enabled(make(3)), 60)
    done = stacked(trace, "done")
    ended = done[:-1]  # rows whose next row is a reset
    assert ended.sum() >= NUM_ENVS, "too few episodes ended to check anything"
    for field in ("reward", "done", "terminated", "won"):
        assert not stacked(trace, field)[1:][ended].any(), f"{field} of a first observation"
    # Envs that were not done went on with their episodes (they earned rewards meanwhile).
    assert (stacked(trace, "reward")[1:][~ended] != 0).any()
    assert same(trace, play(_enabled(make(3)), 60)), "same seed, other episodes"
    assert not same(trace, play(_enabled(make(4)), 60))


@pytest.mark.parametrize("name", list(APART))
def test_envs_restart_one_by_one_with_a_fresh_team(name: str) -> None:
    _needs(name)
    env = _enabled(APART[name](5))
    trace = play(env, 60)
    done = stacked(trace, "done")
    # Envs end apart: some steps restart a few envs while the others play on.
    assert any(0 < row.sum() < NUM_ENVS for row in done)
    agent_mask, composition = stacked(trace, "agent_mask"), stacked(trace, "composition")
    team = {0: 2, 1: 3}
    for t, b in zip(*np.nonzero(done[:-1]), strict=True):
        fresh = t + 1
        assert agent_mask[fresh, b].sum() == team[int(composition[fresh, b])], "a new episode starts with its whole team"
        if name == "countdown":
            assert trace[fresh].obs[b, 0, 0, 0] == 0  # its step counter starts again


@pytest.mark.parametrize("name", list(LOCKSTEP))
def test_lockstep_backends_restart_exactly_as_reset_would(name: str) -> None:
    """Envs that all end together restart together: the auto-reset row is `reset()`'s."""
    _needs(name)
    auto, manual = _enabled(LOCKSTEP[name](7)), LOCKSTEP[name](7)
    rng = np.random.default_rng(1)
    a, m = auto.reset(), manual.reset()
    restarts = 0
    for _ in range(12):
        actions = random_actions(auto.spec, a, rng)
        was_done = a.done.all()
        a = auto.step(actions)
        m = manual.reset() if was_done else manual.step(actions)
        restarts += int(was_done)
        assert same([a], [m])
    assert restarts >= 2


def test_without_autoreset_a_done_env_stays_done() -> None:
    env = APART["countdown"](3)
    trace = play(env, 6)
    done = stacked(trace, "done")
    assert (done[1:] >= done[:-1]).all() and done[-1].all()
    assert not stacked(trace, "reward")[1:][done[:-1]].any()


@pytest.mark.parametrize("name", SAVES_STATE)
def test_a_batch_saved_mid_episode_goes_on_identically(name: str) -> None:
    _needs(name)
    make = {**LOCKSTEP, **APART}[name]
    env = _enabled(make(2))
    rng = np.random.default_rng(3)
    step = env.reset()
    for _ in range(7):  # into the second episodes of the lockstep backends
        step = env.step(random_actions(env.spec, step, rng))
    saved, rng_state = {k: np.array(v) for k, v in env.env_state().items()}, env.rng_state()
    twin = _enabled(make(99))
    twin.set_rng_state(rng_state)
    twin.load_env_state(saved)
    for _ in range(30):
        actions = random_actions(env.spec, step, rng)
        step, other = env.step(actions), twin.step(actions)
        assert same([step], [other])


def test_python_backends_cannot_save_their_envs() -> None:
    env = APART["countdown"](1)
    env.reset()
    assert env.env_state() is None
    with pytest.raises(NotImplementedError, match="cannot restore"):
        env.load_env_state({})


def test_enabling_autoreset_on_a_backend_without_it_is_refused() -> None:
    env = SynchronousCountdown(Countdown.Args(), [Countdown.Composition()], 2, 0)
    with pytest.raises(ValueError, match="cannot reset finished environments itself"):
        env.enable_autoreset()


def _smax_core() -> Any:
    pytest.importorskip("jaxmarl")
    env = APART["smax"](0)
    env.reset()
    return env


def test_smax_restarts_draw_each_envs_battle_from_its_own_key_chunk_by_chunk() -> None:
    """More envs restart than one chunk holds: every one gets the battle its own key draws
    (as if drawn for the whole batch at once), and the others are left as they were."""
    import jax

    from scenarios._smax_core import RESTART_CHUNK

    env = _smax_core()
    core, state = env.core, env.state
    restart = np.zeros(env.padded, bool)
    restart[[0, 1, 4, 5, 7, 9, 12, 13, 15][: 2 * RESTART_CHUNK + 1]] = True
    out = jax.jit(core._restart)(state, restart, env.table)
    battle_keys = jax.vmap(jax.random.split)(state["key"])[:, 1]
    draw = jax.vmap(core._new_battle, in_axes=(0, None, None))
    battles, comps = jax.jit(draw)(battle_keys, env.table, np.int32(-1))
    for drawn, before, after in zip(jax.tree.leaves(battles), jax.tree.leaves(state["env"]),
                                    jax.tree.leaves(out["env"]), strict=True):
        after = np.asarray(after)
        assert np.array_equal(after[restart], np.asarray(drawn)[restart])
        assert np.array_equal(after[~restart], np.asarray(before)[~restart])
    assert np.array_equal(np.asarray(out["comp"])[restart], np.asarray(comps)[restart])
    assert not np.asarray(out["done"])[restart].any()


def test_smax_reset_sets_every_field_it_does_not_draw_the_same_for_every_key() -> None:
    """What `_new_battle` keeps from one SMAX reset (the rest it draws itself)."""
    import jax

    core = _smax_core().core
    drawn = {"unit_positions", "unit_types", "unit_health", "unit_alive"}
    one, other = (core.env.reset(jax.random.PRNGKey(k))[1] for k in (1, 2))
    for name in ("state", "enemy_policy_state"):
        for field_name, a in vars(getattr(one, name)).items():
            if field_name not in drawn:
                assert np.array_equal(np.asarray(a), np.asarray(getattr(getattr(other, name), field_name))), field_name
