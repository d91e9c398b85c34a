"""mpe_spread's numpy engine against mpe2 itself: the same Steps for the same seed, whole episodes
long (discrete and continuous moves, mixed team sizes in one batch, every reward setting), the
shared checkpoint format, and the physics' own invariants."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import registry
from harness.api import Backend, Step
from scenarios._mpe_spread_core import DT, SpreadWorlds
from scenarios.mpe import MPE2SpreadBackend, MPESpreadBackend, NumpySpreadBackend, SpreadArgs

FLOAT_FIELDS = ["obs", "state", "reward"]
EXACT_FIELDS = [
    "obs_mask",
    "state_mask",
    "avail_actions",
    "agent_mask",
    "done",
    "terminated",
    "won",
    "composition",
]
PROPS = settings(max_examples=40, deadline=None)


def make(engine: str, args: dict[str, Any], team_sizes: list[int], num_envs: int, seed: int) -> Backend:
    cls = registry.get_env("mpe_spread")
    parsed = cls.Args.model_validate({**args, "engine": engine})
    return cls(parsed, [cls.Composition(n_agents=n) for n in team_sizes], num_envs, seed)


def random_actions(backend: Backend, rng: np.random.Generator) -> np.ndarray:
    spec, b = backend.spec, backend.num_envs  # type: ignore[attr-defined]
    if spec.discrete:
        return rng.integers(0, spec.n_actions, size=(b, spec.max_agents))
    # beyond [-1, 1] too: both engines must clip alike
    return rng.uniform(-1.2, 1.2, size=(b, spec.max_agents, spec.n_actions)).astype(np.float32)


def play(backend: Backend, seed: int, episodes: int = 2) -> list[Step]:
    """Every Step of `episodes` batches under random actions (the first reset seeded)."""
    rng = np.random.default_rng(seed + 100)
    steps = []
    for e in range(episodes):
        step = backend.reset(seed if e == 0 else None)
        steps.append(step)
        while not step.done.all():
            step = backend.step(random_actions(backend, rng))
            steps.append(step)
    return steps


def assert_same_steps(a: list[Step], b: list[Step]) -> None:
    assert len(a) == len(b)
    for t, (sa, sb) in enumerate(zip(a, b, strict=True)):
        for name in FLOAT_FIELDS:
            x, y = getattr(sa, name), getattr(sb, name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-5, err_msg=f"{name} at step {t}")
        for name in EXACT_FIELDS:
            x, y = getattr(sa, name), getattr(sb, name)
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=f"{name} at step {t}")


# ---------------------------------------------------------------------------------------------
# The numpy engine plays mpe2's episodes

CASES = [
    # (args, team sizes, num_envs, seed)
    ({}, [3], 2, 0),
    ({"local_ratio": 0.0, "team_reward": "mean"}, [1], 3, 1),
    ({"local_ratio": 1.0, "max_cycles": 40}, [2], 2, 2),
    ({"local_ratio": 0.3, "cover_radius": 1.0}, [1, 2, 3, 5], 6, 3),
    ({"team_reward": "mean", "cover_radius": 0.6}, [5, 2], 4, 4),
    ({"continuous_actions": True}, [3], 2, 5),
    ({"continuous_actions": True, "local_ratio": 0.8, "team_reward": "mean", "cover_radius": 1.0},
     [1, 2, 3, 5], 6, 6),
    ({"continuous_actions": True, "max_cycles": 10}, [5], 1, 7),
]


@pytest.mark.parametrize(("args", "team_sizes", "num_envs", "seed"), CASES)
def test_numpy_engine_gives_the_mpe2_engines_steps(args, team_sizes, num_envs, seed):
    numpy_steps = play(make("numpy", args, team_sizes, num_envs, seed), seed)
    mpe2_steps = play(make("mpe2", args, team_sizes, num_envs, seed), seed)
    assert_same_steps(numpy_steps, mpe2_steps)


def test_the_comparison_sees_wins_losses_and_collisions():
    """The engines also agree where `won` and the collision penalty are not trivially zero."""
    args = {"local_ratio": 1.0, "cover_radius": 0.7, "max_cycles": 30}
    numpy_steps = play(make("numpy", args, [1, 2, 5], 8, 11), 11, episodes=3)
    assert_same_steps(numpy_steps, play(make("mpe2", args, [1, 2, 5], 8, 11), 11, episodes=3))
    ends = np.concatenate([s.won for s in numpy_steps if s.done.all()])
    assert ends.any() and not ends.all()
    # local_ratio 1: the reward is minus the collisions only
    assert any((s.reward < 0).any() for s in numpy_steps)


# ---------------------------------------------------------------------------------------------
# Determinism and checkpoints


def test_same_seed_same_steps_and_other_seed_other_steps():
    a = play(make("numpy", {}, [2, 4], 3, 5), 5)
    b = play(make("numpy", {}, [2, 4], 3, 5), 5)
    c = play(make("numpy", {}, [2, 4], 3, 6), 6)
    assert_same_steps(a, b)
    assert not np.array_equal(a[0].obs, c[0].obs)


@pytest.mark.parametrize("saved_by", ["numpy", "mpe2"])
def test_rng_state_resumes_on_either_engine(saved_by):
    """A checkpoint's random state, restored into a fresh numpy engine, continues the episodes."""
    args = {"continuous_actions": True}
    original = make(saved_by, args, [1, 3], 4, seed=9)
    original.reset(9)
    state = original.rng_state()
    resumed = make("numpy", args, [1, 3], 4, seed=123)
    resumed.set_rng_state(state)
    assert_same_steps([resumed.reset()], [original.reset()])


def test_steps_after_the_end_repeat_the_last_frame_with_zero_reward():
    env = make("numpy", {"max_cycles": 2}, [2], 2, 0)
    env.reset()
    env.step(np.zeros((2, 2), np.int64))
    last = env.step(np.zeros((2, 2), np.int64))
    after = env.step(np.ones((2, 2), np.int64))
    assert last.done.all() and after.done.all() and not after.reward.any()
    np.testing.assert_array_equal(after.obs, last.obs)


def test_step_before_reset_is_refused():
    env = make("numpy", {}, [2], 1, 0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((1, 2), np.int64))


# ---------------------------------------------------------------------------------------------
# The registered name, its classmethods and requirements


@pytest.mark.parametrize(("engine", "cls"), [("numpy", NumpySpreadBackend), ("mpe2", MPE2SpreadBackend)])
def test_registered_name_builds_the_chosen_engine(engine, cls):
    backend = registry.get_env("mpe_spread")
    assert backend is MPESpreadBackend
    env = make(engine, {}, [2], 1, 0)
    assert type(env) is cls and isinstance(env, MPESpreadBackend)
    args = SpreadArgs(engine=engine)
    assert cls.describe(args, [backend.Composition(n_agents=2)]) == env.spec
    (default,) = backend.default_compositions(args)
    assert cls.composition_name(args, default) == backend.composition_name(args, default) == "3 agents"
    assert cls.Args is SpreadArgs and cls.name == "mpe_spread"


def test_numpy_engine_runs_without_mpe2(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpe2", None)  # makes `import mpe2` fail
    monkeypatch.setitem(sys.modules, "mpe2.simple_spread_v3", None)
    assert MPESpreadBackend.missing_requirements(SpreadArgs()) is None
    message = MPESpreadBackend.missing_requirements(SpreadArgs(engine="mpe2"))
    assert message is not None and "mpe_spread needs the mpe2 package" in message
    env = make("numpy", {}, [3], 2, 0)
    env.reset()
    env.step(np.zeros((2, 3), np.int64)).validate(env.spec)


def test_default_engine_is_left_out_of_the_dumped_args():
    """Run ids hash the dumped args: runs recorded before the engine field keep their ids."""
    assert "engine" not in SpreadArgs().model_dump()
    assert SpreadArgs.model_validate(SpreadArgs().model_dump()).engine == "numpy"
    dumped = SpreadArgs(engine="mpe2").model_dump()
    assert dumped["engine"] == "mpe2" and SpreadArgs.model_validate(dumped).engine == "mpe2"


def test_numpy_engine_won_when_every_landmark_is_covered():
    env = make("numpy", {"max_cycles": 1}, [3], 2, 0)
    env.reset()
    worlds: SpreadWorlds = env.worlds  # type: ignore[attr-defined]
    spots = np.array([[-0.6, 0.0], [0.0, 0.6], [0.6, 0.0]])  # far apart: no collision moves an agent
    agents = np.stack([spots, spots + [[0.3, 0.3], [0, 0], [0, 0]]])  # world 1: agent 0 is off its spot
    worlds.set_positions(agents, np.stack([spots, spots]))
    step = env.step(np.zeros((2, 3), np.int64))  # agents at rest stay put under the no-op
    assert step.done.all() and not step.terminated.any()
    assert step.won.tolist() == [True, False]


# ---------------------------------------------------------------------------------------------
# Physics invariants

positions = st.integers(0, 10_000).map(lambda s: np.random.default_rng(s))


@PROPS
@given(rng=positions, n=st.integers(2, 6), num_worlds=st.integers(1, 3))
def test_contact_forces_are_equal_and_opposite(rng, n, num_worlds):
    """From rest with no control, only contact pushes move the agents: they cancel in sum, and
    two agents get exactly opposite velocities."""
    worlds = SpreadWorlds(num_worlds, n)
    worlds.reset(np.full(num_worlds, n), rng.integers(0, 2**31 - 1, size=num_worlds))
    # a small arena: many agents overlap
    worlds.set_positions(rng.uniform(-0.3, 0.3, size=(num_worlds, n, 2)), worlds.landmarks.copy())
    worlds.step(np.zeros((num_worlds, n, 2)))
    np.testing.assert_allclose(worlds.velocity.sum(axis=1), 0.0, atol=1e-9)
    if n == 2:
        np.testing.assert_array_equal(worlds.velocity[:, 0], -worlds.velocity[:, 1])


@PROPS
@given(rng=positions, n=st.integers(1, 4), pad=st.integers(1, 3), local_ratio=st.floats(0, 1))
def test_padding_agents_change_nothing(rng, n, pad, local_ratio):
    """A world padded with absent agents moves and rewards its real agents exactly as an unpadded
    one does, whatever the padding agents are told to do."""
    seeds = rng.integers(0, 2**31 - 1, size=2)
    exact, padded = SpreadWorlds(2, n), SpreadWorlds(2, n + pad)
    exact.reset(np.full(2, n), seeds)
    padded.reset(np.full(2, n), seeds)
    for _ in range(5):
        control = rng.uniform(-5, 5, size=(2, n + pad, 2))
        exact.step(control[:, :n])
        padded.step(control)
        np.testing.assert_array_equal(padded.agents[:, :n], exact.agents)
        np.testing.assert_array_equal(padded.velocity[:, :n], exact.velocity)
        assert not padded.velocity[:, n:].any()
        np.testing.assert_array_equal(padded.rewards(local_ratio)[:, :n], exact.rewards(local_ratio))
        assert not padded.rewards(local_ratio)[:, n:].any()
        np.testing.assert_array_equal(padded.covered(0.5), exact.covered(0.5))


def test_velocity_integrates_before_forces_act():
    """mpe2's order: position moves with the old velocity, then damping and force update it."""
    worlds = SpreadWorlds(1, 1)
    worlds.reset(np.array([1]), np.array([0]))
    start = worlds.agents.copy()
    worlds.step(np.array([[[5.0, 0.0]]]))
    np.testing.assert_array_equal(worlds.agents, start)  # at rest: the first step only accelerates
    np.testing.assert_allclose(worlds.velocity, [[[5.0 * DT, 0.0]]])
    worlds.step(np.zeros((1, 1, 2)))
    np.testing.assert_allclose(worlds.agents - start, [[[5.0 * DT * DT, 0.0]]])
    np.testing.assert_allclose(worlds.velocity, [[[5.0 * DT * 0.75, 0.0]]])
