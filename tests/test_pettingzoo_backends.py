"""PettingZoo backends on the real libraries: mpe_spread, mpe_tag, multiwalker and the generic
`pettingzoo` adapter (layouts, masks, rewards, determinism, bad input, PettingZoo API, and
a network running on a team size it was not built for)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import ValidationError

from algorithms.common.networks import RecurrentAgent
from harness import registry
from harness.api import Backend, Step
from harness.config import build_config, load_suite
from harness.errors import ConfigError
from scenarios.mpe import MOVES, MPESpreadBackend, MPETagBackend, SpreadArgs, TagArgs
from scenarios.multiwalker import (
    FEATURES,
    MultiwalkerArgs,
    MultiwalkerBackend,
    MultiwalkerComposition,
)
from scenarios.parallel_env import BackendParallelEnv
from scenarios.pettingzoo_generic import PettingZooArgs, PettingZooBackend, PettingZooComposition

pytestmark = [
    # the module paths users write (pettingzoo.sisl.multiwalker_v9) warn that PettingZoo prefers its registry
    pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:builtin type (SwigPy|swigvarlink):DeprecationWarning"
    ),  # Box2D's bindings
    # a padded agent slot of a smaller team is never present, which the API test remarks on
    pytest.mark.filterwarnings("ignore:No agents present but not all possible_agents:UserWarning"),
]
STEP_FIELDS = [
    "obs",
    "obs_mask",
    "state",
    "state_mask",
    "avail_actions",
    "agent_mask",
    "reward",
    "done",
    "terminated",
    "won",
    "composition",
]
SPREAD_KINDS, TAG_KINDS = 3, 4  # one-hot widths at the front of the observation rows
REL, DIST, POS, VEL = slice(0, 2), 2, slice(3, 5), slice(5, 7)  # after the kind one-hot


def make(
    name: str,
    args: dict[str, Any] | None = None,
    comps: list[dict[str, Any]] | None = None,
    num_envs: int = 4,
    seed: int = 0,
) -> Backend:
    cls = registry.get_env(name)
    parsed = cls.Args.model_validate(args or {})
    compositions = (
        [cls.Composition.model_validate(c) for c in comps] if comps else cls.default_compositions(parsed)
    )
    return cls(parsed, compositions, num_envs, seed)


def random_actions(step: Step, backend: Backend, rng: np.random.Generator) -> np.ndarray:
    spec = backend.spec
    if not spec.discrete:
        return rng.uniform(-1, 1, size=(*step.agent_mask.shape, spec.n_actions)).astype(np.float32)
    return np.where(step.avail_actions, rng.random(step.avail_actions.shape), -1).argmax(-1)


def play(backend: Backend, seed: int, episodes: int = 1, max_steps: int = 1000) -> list[Step]:
    """Every Step of `episodes` batches of episodes under a seeded random policy."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(episodes):
        step = backend.reset(seed if e == 0 else None)
        out.append(step)
        for _ in range(max_steps):
            if step.done.all():
                break
            step = backend.step(random_actions(step, backend, rng))
            step.validate(backend.spec)
            out.append(step)
    return out


def assert_same(a: list[Step], b: list[Step]) -> None:
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)


def api_test(env: BackendParallelEnv, num_cycles: int) -> None:
    # imported here: importing pettingzoo.test imports PettingZoo's classic envs, which warn
    from pettingzoo.test import parallel_api_test

    parallel_api_test(env, num_cycles=num_cycles)


def slot_env(backend: Backend, b: int) -> Any:
    """The PettingZoo env behind batch slot b (to check the parse against the library's own state)."""
    return backend._env(b).env  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Shared: determinism, PettingZoo API, cross-size networks, requirements

CHEAP = {
    "mpe_spread": ({}, [{"n_agents": 2}, {"n_agents": 4}]),
    "mpe_tag": ({"prey_policy": "random"}, [{"n_predators": 2, "n_prey": 2, "n_obstacles": 1}, {}]),
    "multiwalker": ({"max_cycles": 40}, [{"n_walkers": 2}, {"n_walkers": 3}]),
    "pettingzoo": ({"env": "mpe2.simple_spread_v3", "kwargs": {"max_cycles": 10}}, [{}]),
}


@pytest.mark.parametrize("name", list(CHEAP))
def test_same_seed_same_steps(name):
    args, comps = CHEAP[name]

    def run(seed: int) -> list[Step]:
        return play(make(name, args, comps, num_envs=3, seed=seed), seed, episodes=2)

    a, b, c = run(5), run(5), run(6)
    assert_same(a, b)
    assert any(not np.array_equal(sa.obs, sc.obs) for sa, sc in zip(a, c, strict=False))


@pytest.mark.parametrize("name", list(CHEAP))
def test_parallel_api(name):
    args, comps = CHEAP[name]
    cls = registry.get_env(name)
    parsed = cls.Args.model_validate(args)
    env = BackendParallelEnv(cls, parsed, [cls.Composition.model_validate(c) for c in comps])
    api_test(env, num_cycles=60)
    expected = spaces.Discrete if env.env.spec.discrete else spaces.Box
    assert isinstance(env.action_space(env.possible_agents[0]), expected)


@pytest.mark.parametrize("name", ["mpe_spread", "mpe_tag", "multiwalker"])
def test_spec_features_do_not_depend_on_team_size(name):
    cls = registry.get_env(name)
    args = cls.Args()
    small, large = {
        "mpe_spread": ({"n_agents": 2}, {"n_agents": 6}),
        "mpe_tag": ({"n_predators": 2}, {"n_predators": 5, "n_prey": 3, "n_obstacles": 4}),
        "multiwalker": ({"n_walkers": 2}, {"n_walkers": 5}),
    }[name]
    a = cls.describe(args, [cls.Composition.model_validate(small)])
    b = cls.describe(args, [cls.Composition.model_validate(large)])
    both = cls.describe(args, [cls.Composition.model_validate(c) for c in (small, large)])
    assert (a.obs_features, a.state_features, a.n_actions) == (b.obs_features, b.state_features, b.n_actions)
    assert both.max_agents == b.max_agents > a.max_agents
    assert both.max_entities == max(a.max_entities, b.max_entities)


def test_qmix_built_for_three_spread_agents_acts_for_five():
    qmix = registry.get_algorithm("qmix")
    small = MPESpreadBackend.describe(SpreadArgs(), [MPESpreadBackend.Composition(n_agents=3)])
    algo = qmix(small, build_config(qmix, {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 16}), 0, "cpu")
    env = make("mpe_spread", comps=[{"n_agents": 5}], num_envs=2)
    assert (env.spec.max_agents, env.spec.max_entities) == (5, 10) != (small.max_agents, small.max_entities)
    step, memory = env.reset(), None
    for _ in range(3):
        actions, memory = algo.act(step, memory, explore=True)
        assert actions.shape == (2, 5) and actions.min() >= 0 and actions.max() < 5
        step = env.step(actions)
    assert memory.shape[:2] == (2, 5)


def test_agent_network_built_for_three_walkers_runs_four_and_two():
    spec3 = MultiwalkerBackend.describe(MultiwalkerArgs(), [MultiwalkerComposition(n_walkers=3)])
    net = RecurrentAgent(spec3.obs_features, spec3.n_actions, embed=16, heads=2, hidden=16)
    env = make("multiwalker", comps=[{"n_walkers": 4}, {"n_walkers": 2}], num_envs=4, seed=3)
    step = env.reset()
    assert set(step.composition.tolist()) == {0, 1}
    h = net.initial_state(4, env.spec.max_agents)
    with torch.no_grad():
        out, h = net(
            torch.as_tensor(step.obs), torch.as_tensor(step.obs_mask), torch.as_tensor(step.agent_mask), h
        )
    assert out.shape == (4, 4, 4)
    assert (out[torch.as_tensor(~step.agent_mask)] == 0).all()  # the padded walkers of the 2-walker teams
    step = env.step(np.tanh(out.numpy()))
    step.validate(env.spec)


def test_requirements_present_here_and_reported_when_missing(monkeypatch):
    assert MPESpreadBackend.missing_requirements(SpreadArgs()) is None
    assert MultiwalkerBackend.missing_requirements(MultiwalkerArgs()) is None
    assert (
        PettingZooBackend.missing_requirements(PettingZooArgs(env="pettingzoo.sisl.multiwalker_v9")) is None
    )
    monkeypatch.setitem(sys.modules, "mpe2", None)  # makes `import mpe2` fail
    message = MPETagBackend.missing_requirements(TagArgs())
    assert message is not None and "mpe_tag needs the mpe2 package" in message
    assert "pip install -e '.[pettingzoo]' -c constraints.txt" in message
    missing = PettingZooBackend.missing_requirements(PettingZooArgs(env="surely_not_installed_pkg.envs"))
    assert missing is not None and "not installed" in missing


def test_step_rejects_bad_actions():
    env = make("mpe_spread", num_envs=2)
    env.reset()
    for bad in (np.zeros((2, 4), np.int64), np.full((2, 3), 5), np.full((2, 3), -1)):
        with pytest.raises(ValueError):
            env.step(bad)
    walkers = make("multiwalker", num_envs=2)
    walkers.reset()
    with pytest.raises(ValueError):
        walkers.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        walkers.step(np.full((2, 3, 4), np.nan, np.float32))


# ---------------------------------------------------------------------------------------------
# mpe_spread: these read mpe2's own worlds, so they run the mpe2 engine (tests/test_mpe_engine.py
# holds the numpy engine to it step for step)
MPE2 = {"engine": "mpe2"}


def test_spread_layout_masks_and_state_match_the_world():
    env = make("mpe_spread", MPE2, comps=[{"n_agents": 3}, {"n_agents": 5}], num_envs=8, seed=1)
    spec = env.spec
    assert (spec.obs_features, spec.state_features, spec.n_actions) == (10, 6, 5)
    assert (spec.max_agents, spec.max_entities, spec.max_state_entities) == (5, 10, 10)
    rng = np.random.default_rng(0)
    step = env.reset()
    assert set(step.composition.tolist()) == {0, 1}
    for _ in range(3):
        for b in range(8):
            check_spread_frame(step, b, slot_env(env, b).unwrapped.world)
        step = env.step(random_actions(step, env, rng))


def check_spread_frame(step: Step, b: int, world: Any) -> None:
    n = len(world.agents)
    obs, state = step.obs[b], step.state[b]
    assert step.agent_mask[b].tolist() == [True] * n + [False] * (5 - n)
    assert step.obs_mask[b, :n].tolist() == [[True] * (2 * n) + [False] * (10 - 2 * n)] * n
    assert not step.obs_mask[b, n:].any() and not obs[n:].any() and not obs[:, 2 * n :].any()
    assert step.state_mask[b].tolist() == [True] * (2 * n) + [False] * (10 - 2 * n)
    agents = np.array([a.state.p_pos for a in world.agents])
    landmarks = np.array([lm.state.p_pos for lm in world.landmarks])
    np.testing.assert_allclose(state[:n, 2:4], agents, atol=1e-5)
    np.testing.assert_allclose(state[n : 2 * n, 2:4], landmarks, atol=1e-5)
    np.testing.assert_allclose(state[:n, 4:6], [a.state.p_vel for a in world.agents], atol=1e-5)
    np.testing.assert_array_equal(state[: 2 * n, :2], np.repeat(np.eye(2), n, axis=0))
    kinds = [0] + [1] * (n - 1) + [2] * n
    feats = obs[:n, : 2 * n, SPREAD_KINDS:]
    for i in range(n):
        np.testing.assert_array_equal(obs[i, : 2 * n, :SPREAD_KINDS], np.eye(3)[kinds])
        others = [j for j in range(n) if j != i]  # own row first, then the others in slot order
        positions = np.concatenate([agents[[i] + others], landmarks])
        np.testing.assert_allclose(feats[i, :, POS], positions, atol=1e-5)
        np.testing.assert_allclose(feats[i, :, REL], positions - agents[i], atol=1e-5)
        np.testing.assert_allclose(
            feats[i, :, DIST], np.linalg.norm(positions - agents[i], axis=1), atol=1e-5
        )
        np.testing.assert_allclose(feats[i, 0, VEL], world.agents[i].state.p_vel, atol=1e-5)
        assert not feats[i, 1:, VEL].any()  # other agents' velocities are not observed


def test_spread_reward_sums_mpe_agent_rewards():
    for mode, scale in (("sum", 1.0), ("mean", 1 / 4)):
        env = make(
            "mpe_spread", {**MPE2, "team_reward": mode, "local_ratio": 0.3}, [{"n_agents": 4}], num_envs=2, seed=2
        )
        rng = np.random.default_rng(1)
        step = env.reset()
        for _ in range(6):
            step = env.step(random_actions(step, env, rng))
            for b in range(2):
                world = slot_env(env, b).unwrapped.world
                assert step.reward[b] == pytest.approx(scale * spread_team_reward(world, 0.3), rel=1e-5)


def spread_team_reward(world: Any, local_ratio: float) -> float:
    """mpe2's rewards summed over agents, recomputed from the world."""
    pos = np.array([a.state.p_pos for a in world.agents])
    landmarks = np.array([lm.state.p_pos for lm in world.landmarks])
    cover = -np.linalg.norm(pos[:, None] - landmarks[None], axis=-1).min(axis=0).sum()
    gap = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    collisions = ((gap < 0.3) & ~np.eye(len(pos), dtype=bool)).sum(axis=1)  # agent radius 0.15
    return float(np.sum((1 - local_ratio) * cover - local_ratio * collisions))


@pytest.mark.parametrize("covered", [True, False])
def test_spread_won_when_every_landmark_is_covered(covered):
    env = make("mpe_spread", {**MPE2, "max_cycles": 1}, [{"n_agents": 3}], num_envs=1)
    env.reset()
    world = slot_env(env, 0).unwrapped.world
    spots = np.array([[-0.6, 0.0], [0.0, 0.6], [0.6, 0.0]])  # far apart: no collision moves an agent
    for agent, landmark, spot in zip(world.agents, world.landmarks, spots, strict=True):
        landmark.state.p_pos, agent.state.p_pos = spot.copy(), spot.copy()
    if not covered:
        world.agents[0].state.p_pos = spots[0] + 0.3
    # agents start at rest, so a no-op step leaves them where they were put
    step = env.step(np.zeros((1, 3), np.int64))
    assert step.done.all() and not step.terminated.any()  # the time limit: truncation
    assert step.won.tolist() == [covered]


def test_spread_continuous_actions_map_onto_mpe_box():
    env = make("mpe_spread", {**MPE2, "continuous_actions": True}, [{"n_agents": 2}], num_envs=1)
    assert not env.spec.discrete and env.spec.n_actions == 5
    step = env.reset()
    assert step.avail_actions.shape == (1, 2, 5) and step.avail_actions.all()
    world = slot_env(env, 0).unwrapped.world
    push = np.array([-1, -1, 1, -1, -1], np.float32)  # right at full strength, nothing else
    env.step(np.stack([push, push])[None])
    assert world.agents[0].action.u[0] > 0 and world.agents[0].action.u[1] == 0


# ---------------------------------------------------------------------------------------------
# mpe_tag


def test_tag_layout_team_and_state():
    env = make(
        "mpe_tag",
        comps=[
            {"n_predators": 2, "n_prey": 1, "n_obstacles": 2},
            {"n_predators": 4, "n_prey": 2, "n_obstacles": 1},
        ],
        num_envs=6,
        seed=4,
    )
    spec = env.spec
    assert (spec.obs_features, spec.state_features, spec.max_agents, spec.max_entities) == (11, 7, 4, 7)
    step = env.reset()
    assert set(step.composition.tolist()) == {0, 1}
    for b in range(6):
        world = slot_env(env, b).unwrapped.world
        preds = [a for a in world.agents if a.adversary]
        prey = [a for a in world.agents if not a.adversary]
        k, m, o = len(preds), len(prey), len(world.landmarks)
        assert step.agent_mask[b].sum() == k and step.obs_mask[b, 0].sum() == k + m + o
        kinds = [0] + [1] * (k - 1) + [2] * m + [3] * o
        np.testing.assert_array_equal(step.obs[b, 0, : k + m + o, :TAG_KINDS], np.eye(4)[kinds])
        everything = preds + prey + list(world.landmarks)
        np.testing.assert_allclose(
            step.state[b, : k + m + o, 3:5], [e.state.p_pos for e in everything], atol=1e-5
        )
        feats = step.obs[b, 1, :, TAG_KINDS:]  # predator 1: itself, predator 0, then prey
        np.testing.assert_allclose(feats[1, POS], preds[0].state.p_pos, atol=1e-5)
        np.testing.assert_allclose(feats[k, VEL], prey[0].state.p_vel, atol=1e-5)


def chase(step: Step) -> np.ndarray:
    """Every predator moves towards the first prey (row n_predators of its entity list)."""
    k = int(step.agent_mask[0].sum())
    towards = step.obs[:, :, k, TAG_KINDS:][..., REL]  # [B, A, 2]
    return (towards @ MOVES.T).argmax(-1)


@pytest.mark.parametrize("end_on_capture", [False, True])
def test_tag_chasing_predators_score_and_win(end_on_capture):
    env = make(
        "mpe_tag",
        {"prey_policy": "still", "end_on_capture": end_on_capture, "team_reward": "sum"},
        [{"n_predators": 2, "n_prey": 1, "n_obstacles": 0}],
        num_envs=2,
        seed=3,
    )
    step, rewards = env.reset(), []
    while not step.done.all():
        step = env.step(chase(step))
        rewards.append(step.reward.copy())
    rewards = np.array(rewards)
    assert (rewards.max(axis=0) >= 20).all()  # a contact pays 10 to each of the 2 predators
    assert np.all(rewards % 20 == 0)
    assert step.won.all()
    assert step.terminated.all() == end_on_capture
    assert (len(rewards) < 25) == end_on_capture  # with end_on_capture both episodes end at the capture


def test_tag_mean_reward_is_the_shared_predator_reward():
    mean = play(make("mpe_tag", {"team_reward": "mean"}, [{"n_predators": 3}], num_envs=4, seed=9), 9)
    total = play(make("mpe_tag", {"team_reward": "sum"}, [{"n_predators": 3}], num_envs=4, seed=9), 9)
    np.testing.assert_allclose(np.array([s.reward for s in total]), 3 * np.array([s.reward for s in mean]))


def test_tag_prey_scripts():
    env: Any = make("mpe_tag", {"prey_policy": "flee"}, [{"n_predators": 1, "n_obstacles": 0}], num_envs=1)
    predator_right = np.array([[[0.3, 0.0]]])  # prey's relative view of one predator
    direction = env._prey_directions(None, np.zeros((1, 2)), predator_right)
    assert direction[0, 0] < 0 and env._move(direction[0]) == 1  # 1 = left
    cornered = env._prey_directions(None, np.array([[-0.99, 0.0]]), predator_right * 10)
    assert cornered[0, 0] > 0  # the edge pushes back harder than a distant predator
    still = make("mpe_tag", {"prey_policy": "still"}, [{}], num_envs=1)
    still.reset()
    prey = slot_env(still, 0).unwrapped.world.agents[-1]
    start = prey.state.p_pos.copy()
    still.step(np.zeros((1, 3), np.int64))
    np.testing.assert_allclose(prey.state.p_pos, start)
    assert MOVES.shape == (5, 2)


# ---------------------------------------------------------------------------------------------
# multiwalker


def test_multiwalker_layout_matches_the_raw_observation():
    env = make("multiwalker", comps=[{"n_walkers": 3}, {"n_walkers": 5}], num_envs=4, seed=2)
    spec = env.spec
    assert (spec.obs_features, spec.max_entities, spec.n_actions, spec.discrete) == (FEATURES, 4, 4, False)
    assert spec.max_agents == spec.max_state_entities == 5
    env.reset()
    step = env.step(np.zeros((4, 5, 4), np.float32))
    assert set(step.composition.tolist()) == {0, 1}
    for b in range(4):
        slot = env._env(b)  # type: ignore[attr-defined]
        n = len(slot.team)
        raw = np.array([slot.obs[a] for a in slot.team])
        obs = step.obs[b]
        np.testing.assert_allclose(obs[:n, 0, 6:], raw[:, :24])  # own state, self row first
        np.testing.assert_allclose(obs[1:n, 1, 3:5], raw[1:, 24:26])  # left neighbour
        np.testing.assert_allclose(obs[: n - 1, 2, 3:5], raw[:-1, 26:28])  # right neighbour
        np.testing.assert_allclose(obs[:n, 3, 3:6], raw[:, 28:31])  # package position and angle
        expected_mask = np.ones((n, 4), bool)
        expected_mask[0, 1] = expected_mask[n - 1, 2] = False  # the ends of the line
        np.testing.assert_array_equal(step.obs_mask[b, :n], expected_mask)
        assert not step.obs_mask[b, n:].any() and not step.agent_mask[b, n:].any()
        np.testing.assert_allclose(step.state[b, :n], np.concatenate([raw[:, :24], raw[:, 28:]], axis=1))


def test_multiwalker_reward_is_the_shared_mean_and_episodes_end():
    env = make("multiwalker", {}, [{"n_walkers": 3}], num_envs=2, seed=1)
    rng = np.random.default_rng(0)
    step = env.reset()
    final = np.zeros(2)
    while not step.done.all():
        active = ~step.done
        step = env.step(random_actions(step, env, rng))
        for b in np.flatnonzero(active):
            base = slot_env(env, b).unwrapped.env
            assert step.reward[b] == pytest.approx(float(np.mean(base.last_rewards)))
        final[active & step.done] = step.reward[active & step.done]
    # random torques drop a walker or the package long before 500 steps: a real termination
    assert step.terminated.all() and (final < -90).all() and not step.won.any()
    assert step.agent_mask.all()  # the last step still shows the walkers' final observation


def test_multiwalker_time_limit_is_truncation():
    env = make("multiwalker", {"max_cycles": 5}, [{"n_walkers": 2}], num_envs=2)
    step = env.reset()
    for _ in range(5):
        assert not step.done.any()
        step = env.step(np.zeros((2, 2, 4), np.float32))
    assert step.done.all() and not step.terminated.any()


@pytest.mark.parametrize("n_walkers", [0, 1, 6])
def test_multiwalker_rejects_team_sizes(n_walkers):
    with pytest.raises(ValidationError):
        MultiwalkerComposition(n_walkers=n_walkers)


# ---------------------------------------------------------------------------------------------
# Bad input, through pydantic and through a suite file


@pytest.mark.parametrize(
    "model,data",
    [
        (MPESpreadBackend.Composition, {"n_agents": 0}),
        (MPESpreadBackend.Args, {"local_ratio": 1.5}),
        (MPESpreadBackend.Args, {"max_cycle": 25}),
        (MPETagBackend.Composition, {"n_predators": 0}),
        (MPETagBackend.Composition, {"n_prey": 0}),
        (MPETagBackend.Args, {"prey_policy": "chase"}),
        (MultiwalkerArgs, {"terrain_length": 10}),
        (PettingZooArgs, {"env": "not a module path"}),
        (PettingZooArgs, {"env": "pettingzoo.sisl.multiwalker_v9", "team_reward": "max"}),
        (PettingZooComposition, {"n_walkers": 3}),  # must sit under kwargs
    ],
)
def test_bad_args_raise_validation_errors(model, data):
    with pytest.raises(ValidationError):
        model.model_validate(data)


@pytest.mark.parametrize(
    "task,where",
    [
        ("{env: mpe_spread, train: [{n_agents: 0}]}", "tasks.t.train[0].n_agents"),
        ("{env: multiwalker, train: [{n_walkers: 3}], test: [{n_walkers: 6}]}", "tasks.t.test[0].n_walkers"),
        ("{env: mpe_tag, args: {prey_speed: 2}}", "tasks.t.args.prey_speed"),
        ("{env: pettingzoo, args: {env: pettingzoo.sisl.multiwalker_v8}}", "tasks.t.args.env"),
        (
            "{env: pettingzoo, args: {env: pettingzoo.sisl.multiwalker_v9},"
            " train: [{kwargs: {n_walkerz: 2}}]}",
            "tasks.t.train[0].kwargs",
        ),
    ],
)
def test_suite_errors_name_file_line_and_key(tmp_path: Path, task: str, where: str):
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        textwrap.dedent(f"""\
        algorithms: [random]
        tasks:
          t: {task}
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite))
    text = str(info.value)
    assert f"{suite}:3: {where}:" in text, text


# ---------------------------------------------------------------------------------------------
# The generic adapter


def generic(
    env: str,
    kwargs: dict[str, Any] | None = None,
    comps: list[dict[str, Any]] | None = None,
    num_envs: int = 2,
    seed: int = 0,
    **args: Any,
) -> PettingZooBackend:
    parsed = PettingZooArgs(env=env, kwargs=kwargs or {}, **args)
    compositions = [PettingZooComposition(kwargs=c) for c in comps] if comps else [PettingZooComposition()]
    PettingZooBackend.check_task(parsed, {"train": compositions})
    return PettingZooBackend(parsed, compositions, num_envs, seed)


def test_generic_wraps_multiwalker_by_module_path():
    env = generic(
        "pettingzoo.sisl.multiwalker_v9",
        {"max_cycles": 30},
        [{"n_walkers": 2}, {"n_walkers": 3}],
        num_envs=4,
        seed=1,
        team_reward="mean",
    )
    spec = env.spec
    assert (spec.obs_features, spec.state_features, spec.max_entities) == (31, 31, 1)
    assert (spec.max_agents, spec.max_state_entities, spec.n_actions, spec.discrete) == (3, 3, 4, False)
    assert spec.episode_limit == 30
    step = env.reset()
    for b in range(4):
        slot = env._env(b)
        n = len(slot.team)
        np.testing.assert_allclose(step.obs[b, :n, 0], [slot.obs[a] for a in slot.team])
        np.testing.assert_allclose(step.state[b, :n], step.obs[b, :n, 0])
        assert step.agent_mask[b].tolist() == [True] * n + [False] * (3 - n)
    steps = play(env, 1)
    assert steps[-1].done.all()


def test_generic_discrete_observations_are_flattened_one_hot():
    env = generic("pettingzoo.classic.rps_v2", num_envs=3)  # Discrete(4) observations, 3 actions
    assert (env.spec.obs_features, env.spec.n_actions, env.spec.episode_limit) == (4, 3, 15)
    steps = play(env, 0)
    assert len(steps) == 16 and steps[-1].done.all()
    for s in steps:
        np.testing.assert_array_equal(s.obs.sum(-1), 1)  # exactly one hot
        assert (s.reward == 0).all()  # zero-sum game, summed over both players


def test_generic_episode_limit_truncates_a_longer_env():
    env = generic("mpe2.simple_spread_v3", {"max_cycles": 25}, episode_limit=4)
    steps = play(env, 0)
    assert len(steps) == 5 and steps[-1].done.all() and not steps[-1].terminated.any()


class Corridor(ParallelEnv):
    """A real (tiny) ParallelEnv with dict observations carrying action masks, and agents
    leaving early: each walks a corridor of 5 cells (actions left, stay, right) and leaves
    when it reaches the last cell. Agent i starts at cell i."""

    metadata = {"name": "corridor", "render_modes": []}

    def __init__(self, n_agents: int = 2, max_cycles: int = 8) -> None:
        self.possible_agents = [f"a{i}" for i in range(n_agents)]
        self.max_cycles = max_cycles
        self._obs = spaces.Dict(
            {
                "observation": spaces.Box(0, 1, (5,), np.float32),
                "action_mask": spaces.Box(0, 1, (3,), np.int8),
            }
        )
        self._act = spaces.Discrete(3)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs

    def action_space(self, agent: str) -> spaces.Space:
        return self._act

    def _view(self, agent: str) -> dict[str, np.ndarray]:
        cell = self.cells[agent]
        return {
            "observation": np.eye(5, dtype=np.float32)[cell],
            "action_mask": np.array([cell > 0, 1, cell < 4], dtype=np.int8),
        }

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents, self.t = list(self.possible_agents), 0
        self.cells = {a: i for i, a in enumerate(self.agents)}
        return {a: self._view(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        for a, act in actions.items():
            self.cells[a] = min(4, max(0, self.cells[a] + int(act) - 1))
        obs = {a: self._view(a) for a in self.agents}
        rewards = {a: float(self.cells[a] == 4) for a in self.agents}
        terms = {a: self.cells[a] == 4 for a in self.agents}
        truncs = {a: self.t >= self.max_cycles and not terms[a] for a in self.agents}
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def test_generic_action_masks_and_agents_leaving_early():
    env = generic("test_pettingzoo_backends:Corridor", {"n_agents": 2}, num_envs=1)
    step = env.reset()
    assert step.avail_actions[0].tolist() == [[False, True, True], [True, True, True]]  # a0 at the wall
    right = np.full((1, 2), 2)
    for _ in range(3):
        step = env.step(right)
    # a1 started one cell ahead: it reached the end and left; a0 is still walking
    assert step.agent_mask[0].tolist() == [True, False] and step.reward[0] == 1.0 and not step.done[0]
    assert not step.obs_mask[0, 1].any() and step.avail_actions[0, 0].tolist() == [True, True, True]
    step = env.step(right)
    assert step.done[0] and step.terminated[0] and step.reward[0] == 1.0
    view = BackendParallelEnv(
        PettingZooBackend, PettingZooArgs(env="test_pettingzoo_backends:Corridor"), [PettingZooComposition()]
    )
    api_test(view, num_cycles=20)


def test_generic_refuses_compositions_with_different_observation_sizes():
    args = PettingZooArgs(env="mpe2.simple_spread_v3")
    comps = {
        "train": [PettingZooComposition(kwargs={"N": 3})],
        "test": [PettingZooComposition(kwargs={"N": 4})],
    }
    with pytest.raises(ConfigError) as info:
        PettingZooBackend.check_task(args, comps)
    problem = info.value.problems[0]
    assert problem.path == ("test", 0, "kwargs") and "entity parser" in problem.message


@pytest.mark.parametrize(
    "env,message",
    [
        ("pettingzoo.sisl.multiwalker_v8", "did you mean 'pettingzoo.sisl.multiwalker_v9'"),
        ("pettingzoo.sisl.multiwalker_v9:nope", "no callable 'nope'"),
        ("pettingzoo.sisl", "no callable 'parallel_env'"),
    ],
)
def test_generic_bad_module_paths(env, message):
    with pytest.raises(ConfigError) as info:
        PettingZooBackend.check_task(PettingZooArgs(env=env), {"train": [PettingZooComposition()]})
    assert info.value.problems[0].path == ("args", "env")
    assert message in str(info.value)
