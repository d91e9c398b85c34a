"""The matrix-game backend: payoff fixtures, rewards, observations, bad input, PettingZoo view."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from harness.api import Step
from harness.errors import ConfigError
from scenarios.matrix import BUILTIN_GAMES, MatrixArgs, MatrixBackend, MatrixComposition
from scenarios.parallel_env import BackendParallelEnv

STEP_FIELDS = [
    "obs", "obs_mask", "state", "state_mask", "avail_actions", "agent_mask",
    "reward", "done", "terminated", "won", "composition",
]
TWO_TYPE_COMPS = ["A,B", "B,A", "B,B"]


def comp(key: str) -> MatrixComposition:
    return MatrixComposition(types=key.split(","))


def optima(table: np.ndarray) -> set[tuple[int, ...]]:
    """Every joint action attaining the table's maximum."""
    return {tuple(int(i) for i in idx) for idx in np.argwhere(table == table.max())}


def make(game: str | None = None, comps: list[str] | None = None, num_envs: int = 4, seed: int = 0,
         weights: list[float] | None = None, **kw) -> MatrixBackend:
    args = MatrixArgs(game=game, **kw) if game else MatrixArgs(**kw)
    compositions = [comp(c) for c in comps] if comps else MatrixBackend.default_compositions(args)
    return MatrixBackend(args, compositions, num_envs, seed, weights)


# ---------------------------------------------------------------------------------------------
# Payoff fixtures (algorithms.md §6 "Matrix-game fixtures", §4.1)


def test_nonmonotonic_3x3_unique_optimum_is_AA_8():
    table = MatrixArgs(game="nonmonotonic_3x3").tables()
    assert table.shape == (3, 3)
    assert optima(table) == {(0, 0)}
    assert table[0, 0] == 8


def test_climbing_unique_optimum_is_00_11():
    table = MatrixArgs(game="climbing").tables()
    assert table.shape == (3, 3)
    assert optima(table) == {(0, 0)}
    assert table[0, 0] == 11


@pytest.mark.parametrize("k", [-100.0, -30.0, -1.0, -0.5])
def test_penalty_optima_and_configurable_k(k):
    table = MatrixArgs(game="penalty", k=k).tables()
    assert optima(table) == {(0, 2), (2, 0)}
    assert table[0, 2] == table[2, 0] == 10
    assert table[0, 0] == table[2, 2] == np.float32(k)


def test_penalty_default_k_and_positive_k_rejected():
    assert MatrixArgs(game="penalty").tables()[0, 0] == -100
    with pytest.raises(ValidationError):
        MatrixArgs(game="penalty", k=5)


@pytest.mark.parametrize("n_actions", [2, 3, 5])
def test_identity_optimum_set_is_the_diagonal(n_actions):
    table = MatrixArgs(game="identity", n_actions=n_actions).tables()
    assert table.shape == (n_actions, n_actions)
    assert optima(table) == {(i, i) for i in range(n_actions)}


def two_type_tables() -> dict[str, np.ndarray]:
    tables = MatrixArgs(game="two_type").tables()
    assert isinstance(tables, dict)
    assert set(tables) == set(TWO_TYPE_COMPS)
    return tables


def test_two_type_00_pays_5_everywhere_and_is_optimal_nowhere():
    for key, table in two_type_tables().items():
        assert table.shape == (2, 2), key
        assert table[0, 0] == 5, key
        assert (0, 0) not in optima(table), key
        assert table.max() > table[0, 0], key


def test_two_type_training_optima_differ():
    tables = two_type_tables()
    assert optima(tables["A,B"]) == {(1, 0)}
    assert optima(tables["B,A"]) == {(0, 1)}
    assert optima(tables["A,B"]).isdisjoint(optima(tables["B,A"]))


def test_two_type_BB_optimum_unreachable_by_identical_policies():
    table = two_type_tables()["B,B"]
    for a in range(2):  # both agents play the same action
        assert table[a, a] < table.max()
    # the two rules that fit training (§4.1): "own type" gives (0,0)=5, "partner type" (1,1)=-20
    assert table[0, 0] == 5 and table[1, 1] == -20
    # and through the backend: no symmetric joint action wins on (B,B)
    env = make("two_type", comps=["B,B"], num_envs=2)
    env.reset()
    step = env.step(np.array([[0, 0], [1, 1]]))
    assert step.done.all() and not step.won.any()


def test_two_type_default_types_and_needs_explicit_compositions():
    args = MatrixArgs(game="two_type")
    assert args.unit_types() == ["A", "B"]
    with pytest.raises(ConfigError):
        MatrixBackend.default_compositions(args)


# ---------------------------------------------------------------------------------------------
# Rewards, won, done


@st.composite
def games(draw):
    n_agents = draw(st.integers(2, 3))
    n_actions = draw(st.integers(2, 4))
    elements = st.one_of(st.integers(-2, 2).map(float), st.floats(-1e3, 1e3, width=32))
    table = draw(hnp.arrays(np.float32, (n_actions,) * n_agents, elements=elements))
    episode_length = draw(st.integers(1, 4))
    num_envs = draw(st.integers(1, 4))
    actions = draw(hnp.arrays(np.int64, (episode_length, num_envs, n_agents),
                              elements=st.integers(0, n_actions - 1)))
    # let env 0 play an optimal joint action at each step it is told to, so `won` gets exercised
    force = draw(st.lists(st.booleans(), min_size=episode_length, max_size=episode_length))
    best = np.argwhere(table == table.max())[0]
    for t, f in enumerate(force):
        if f:
            actions[t, 0] = best
    return table, episode_length, actions


@settings(max_examples=40, deadline=None)
@given(games())
def test_step_rewards_won_and_done_match_the_table(game):
    table, episode_length, actions = game
    num_envs = actions.shape[1]
    env = make(payoff=table.tolist(), episode_length=episode_length, num_envs=num_envs, seed=3)
    first = env.reset()
    assert not first.done.any() and not first.terminated.any() and not first.won.any()
    assert (first.reward == 0).all()
    all_optimal = np.ones(num_envs, dtype=bool)
    for t in range(episode_length):
        step = env.step(actions[t].copy())
        step.validate(env.spec)
        expected = np.array([table[tuple(actions[t, b])] for b in range(num_envs)], dtype=np.float32)
        np.testing.assert_array_equal(step.reward, expected)
        all_optimal &= expected == table.max()
        last = t == episode_length - 1
        assert (step.done == last).all()
        assert (step.terminated == last).all()
        if last:
            np.testing.assert_array_equal(step.won, all_optimal)
        else:
            assert not step.won.any()
    # after the end: zero reward and done=True until the next reset
    for _ in range(2):
        after = env.step(actions[0].copy())
        assert (after.reward == 0).all()
        assert after.done.all() and after.terminated.all()


def test_won_requires_every_step_optimal_in_repeated_game():
    env = make("climbing", num_envs=3, episode_length=3)
    env.reset()
    plan = [  # env 0 always optimal, env 1 slips once in the middle, env 2 slips at the end
        [[0, 0], [0, 0], [0, 0]],
        [[0, 0], [1, 1], [0, 0]],
        [[0, 0], [0, 0], [2, 2]],
    ]
    for t in range(3):
        step = env.step(np.array([plan[b][t] for b in range(3)]))
    assert step.done.all()
    assert step.won.tolist() == [True, False, False]
    np.testing.assert_array_equal(step.reward, np.array([11, 11, 5], dtype=np.float32))


def test_reset_starts_a_new_episode_after_done():
    env = make("climbing", num_envs=2, episode_length=2)
    for _ in range(2):
        env.reset()
        for _ in range(2):
            step = env.step(np.zeros((2, 2), dtype=np.int64))
        assert step.done.all() and step.won.all()
        assert (step.reward == 11).all()


# ---------------------------------------------------------------------------------------------
# Observations


def test_observation_layout_two_type():
    env = make("two_type", comps=TWO_TYPE_COMPS, num_envs=64, seed=1, episode_length=3)
    types = env.args.unit_types()
    n_types, n, u = env.spec.n_unit_types, env.spec.max_agents, env.spec.n_actions
    assert (n_types, n, u) == (2, 2, 2)
    assert env.spec.obs_features == n_types + u + 1
    step = env.reset()
    step.validate(env.spec)
    assert set(step.composition.tolist()) == {0, 1, 2}  # 64 draws from three equal weights
    for b in range(64):
        key = TWO_TYPE_COMPS[step.composition[b]].split(",")
        for i in range(n):
            onehot = np.zeros(n_types, dtype=np.float32)
            onehot[types.index(key[i])] = 1
            np.testing.assert_array_equal(step.obs[b, i, 0, :n_types], onehot)


def check_rows(step: Step, n: int) -> None:
    for i in range(n):
        for j in range(n):
            np.testing.assert_array_equal(step.obs[:, i, j], step.state[:, (i + j) % n])
        np.testing.assert_array_equal(step.state[:, i], step.obs[:, i, 0])


def test_observation_rows_state_masks_and_last_actions_three_agents():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3, 3, 3)).tolist()
    length = 4
    env = make(payoff=table, episode_length=length, num_envs=5, seed=2)
    spec = env.spec
    n, u, n_types = spec.max_agents, spec.n_actions, spec.n_unit_types
    assert (n, u, n_types) == (3, 3, 3)
    assert spec.episode_limit == length
    prev = np.zeros((5, n), dtype=np.int64)
    step = env.reset()
    for t in range(length + 1):
        step.validate(spec)
        check_rows(step, n)
        assert step.obs_mask.all() and step.state_mask.all()
        assert step.avail_actions.all() and step.agent_mask.all()
        # own type one-hot: agent i of the default composition is type p{i+1}
        for i in range(n):
            np.testing.assert_array_equal(step.obs[:, i, 0, :n_types], np.tile(np.eye(n)[i], (5, 1)))
        np.testing.assert_allclose(step.obs[..., -1], t / length)
        last = step.state[:, :, n_types:n_types + u]
        if t == 0:
            assert (last == 0).all()
        else:
            np.testing.assert_array_equal(last, np.eye(u, dtype=np.float32)[prev])
        if t < length:
            prev = rng.integers(0, u, size=(5, n))
            step = env.step(prev.copy())


def test_one_step_game_has_no_last_action_at_t0():
    env = make("nonmonotonic_3x3", num_envs=2)
    step = env.reset()
    assert (step.obs[..., 2:5] == 0).all()  # types p1,p2 then 3 actions then time
    step = env.step(np.array([[0, 1], [2, 2]]))
    np.testing.assert_array_equal(step.state[0, :, 2:5], np.eye(3)[[0, 1]])
    np.testing.assert_array_equal(step.state[1, :, 2:5], np.eye(3)[[2, 2]])


def test_composition_follows_weights():
    env = make("two_type", comps=["A,B", "B,A"], num_envs=1000, seed=0, weights=[1, 0.000001])
    for _ in range(10):
        assert (env.reset().composition == 0).all()
    env = make("two_type", comps=["A,B", "B,A"], num_envs=4000, seed=0, weights=[3, 1])
    frac = (env.reset().composition == 0).mean()
    assert 0.72 < frac < 0.78
    env = make("two_type", comps=["A,B", "B,A"], num_envs=100, seed=0, weights=[0, 1])
    assert (env.reset().composition == 1).all()


def draws(seed: int, resets: int = 20) -> np.ndarray:
    env = make("two_type", comps=["A,B", "B,A", "B,B"], num_envs=4, seed=seed)
    return np.stack([env.reset().composition for _ in range(resets)])


def test_composition_draws_reproducible_by_seed():
    np.testing.assert_array_equal(draws(7), draws(7))
    assert not np.array_equal(draws(7), draws(8))
    # reseeding through reset(seed) restarts the sequence
    env = make("two_type", comps=["A,B", "B,A", "B,B"], num_envs=4, seed=99)
    first = [env.reset(seed=5).composition] + [env.reset().composition for _ in range(10)]
    again = [env.reset(seed=5).composition] + [env.reset().composition for _ in range(10)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    np.testing.assert_array_equal(np.stack(first), draws(5, resets=11))


def test_rng_state_round_trip():
    env = make("two_type", comps=["A,B", "B,A", "B,B"], num_envs=8, seed=4)
    env.reset()
    saved = env.rng_state()
    a = [env.reset().composition for _ in range(5)]
    env.set_rng_state(saved)
    b = [env.reset().composition for _ in range(5)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_step_does_not_alias_the_callers_actions():
    env = make("climbing", num_envs=2, episode_length=1)
    env.reset()
    acts = np.array([[1, 2], [2, 1]], dtype=np.int64)
    env.step(acts)
    env.reset()
    np.testing.assert_array_equal(acts, [[1, 2], [2, 1]])


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("kwargs", [
    {"payoff": [[1, 2], [3]]},  # ragged
    {"payoff": [[1, 2, 3], [4, 5, 6]]},  # not square
    {"payoff": [1, 2, 3]},  # one agent axis
    {"payoff": [[1, "x"], [2, 3]]},  # not numeric
    {"payoff": [[1, float("inf")], [2, 3]]},  # not finite
    {"game": "climbing", "payoff": [[1, 0], [0, 1]]},  # both
    {},  # neither
    {"game": "clmbing"},  # unknown game
    {"payoffs": {"A,B,C": [[1, 0], [0, 1]]}},  # key names 3 types, table has 2 axes
    {"payoffs": {"A": [[1, 0], [0, 1]]}},  # key names 1 type
    {"payoffs": {"A,B": [[1, 0], [0, 1]], "B,B": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}},  # shapes differ
    {"game": "identity", "n_actions": 1},
    {"game": "climbing", "episode_length": 0},
    {"game": "climbing", "bogus": 1},  # unknown key
])
def test_bad_args_raise_validation_error(kwargs):
    with pytest.raises(ValidationError):
        MatrixArgs(**kwargs)


def test_good_custom_payoffs_accepted():
    args = MatrixArgs(payoffs={"A,B": [[1, 0], [0, 1]], "B,B": [[0, 1], [1, 0]]})
    assert args.unit_types() == ["A", "B"]
    assert args.n_agents() == 2


@pytest.mark.parametrize("game,types,path_found", [
    ("two_type", ["A", "C"], "C"),  # unknown type
    ("two_type", ["A", "B", "B"], None),  # wrong number of agents
    ("two_type", ["A"] * 2, "A,A"),  # known types, but no payoff table for (A,A)
    ("climbing", ["p1", "p3"], "p3"),
    ("climbing", ["p1", "p2", "p1"], None),
])
def test_check_task_rejects_bad_compositions(game, types, path_found):
    args = MatrixArgs(game=game)
    good = comp("A,B") if game == "two_type" else comp("p1,p2")
    MatrixBackend.check_task(args, {"train": [good]})  # the good one passes
    with pytest.raises(ConfigError) as info:
        MatrixBackend.check_task(args, {"train": [good], "test": [good, MatrixComposition(types=types)]})
    problem = info.value.problems[0]
    assert problem.path == ("test", 1, "types")
    if path_found is not None:
        assert problem.found == path_found


def test_check_task_accepts_all_two_type_compositions():
    MatrixBackend.check_task(MatrixArgs(game="two_type"), {"train": [comp("A,B"), comp("B,A")],
                                                           "test": [comp("B,B")]})


@pytest.mark.parametrize("actions", [
    np.zeros((2, 3), dtype=np.int64),  # too many agents
    np.zeros((3, 2), dtype=np.int64),  # wrong batch
    np.zeros((2,), dtype=np.int64),
    np.array([[0, 3], [0, 0]]),  # out of range (3 actions)
    np.array([[0, 0], [-1, 0]]),  # negative
])
def test_step_rejects_bad_actions(actions):
    env = make("climbing", num_envs=2)
    env.reset()
    with pytest.raises(ValueError):
        env.step(actions)


# ---------------------------------------------------------------------------------------------
# PettingZoo


def _api_test(args: MatrixArgs, comps: list[MatrixComposition]) -> None:
    from pettingzoo.test import parallel_api_test

    parallel_api_test(BackendParallelEnv(MatrixBackend, args, comps), num_cycles=20)


@pytest.mark.parametrize("episode_length", [1, 4])
@pytest.mark.parametrize("game", [g for g in BUILTIN_GAMES if g != "two_type"])
def test_parallel_api_builtin_games(game, episode_length):
    args = MatrixArgs(game=game, episode_length=episode_length)
    _api_test(args, MatrixBackend.default_compositions(args))


@pytest.mark.parametrize("episode_length", [1, 4])
def test_parallel_api_two_type_BB(episode_length):
    _api_test(MatrixArgs(game="two_type", episode_length=episode_length), [comp("B,B")])


def test_parallel_env_rewards_and_done():
    args = MatrixArgs(game="climbing", episode_length=2)
    env = BackendParallelEnv(MatrixBackend, args, MatrixBackend.default_compositions(args))
    obs, infos = env.reset(seed=1)
    assert set(obs) == {"agent_0", "agent_1"}
    assert obs["agent_0"].shape == env.observation_space("agent_0").shape
    assert infos["agent_0"]["action_mask"].tolist() == [1, 1, 1]
    _, rewards, term, trunc, _ = env.step({"agent_0": 1, "agent_1": 2})
    assert rewards == {"agent_0": 6.0, "agent_1": 6.0}
    assert not any(term.values()) and not any(trunc.values()) and env.agents
    _, rewards, term, trunc, _ = env.step({"agent_0": 0, "agent_1": 0})
    assert rewards == {"agent_0": 11.0, "agent_1": 11.0}
    assert all(term.values()) and not any(trunc.values()) and env.agents == []


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_steps():
    def run(seed: int) -> list[Step]:
        env = make("two_type", comps=TWO_TYPE_COMPS, num_envs=6, seed=seed, weights=[1, 2, 3],
                   episode_length=3)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(3):
            out.append(env.reset())
            for _ in range(3):
                out.append(env.step(rng.integers(0, 2, size=(6, 2))))
        return out

    a, b, c = run(11), run(11), run(12)
    for sa, sb in zip(a, b, strict=True):
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)
    assert any(not np.array_equal(sa.composition, sc.composition) for sa, sc in zip(a, c, strict=True))


def test_all_joint_actions_of_builtin_two_agent_games():
    """Exhaustive: every joint action's reward equals the table entry and wins iff optimal."""
    for game in ["identity", "nonmonotonic_3x3", "climbing", "penalty"]:
        args = MatrixArgs(game=game)
        table = args.tables()
        joint = np.array(list(itertools.product(range(table.shape[0]), repeat=2)))
        env = MatrixBackend(args, MatrixBackend.default_compositions(args), len(joint), 0)
        env.reset()
        step = env.step(joint)
        np.testing.assert_array_equal(step.reward, table[joint[:, 0], joint[:, 1]])
        assert step.won.tolist() == [tuple(a) in optima(table) for a in joint.tolist()]


def test_near_optimal_joint_action_does_not_win():
    table = [[1.0, 0.999999], [0.0, -1.0]]
    env = make(payoff=table, num_envs=2)
    env.reset()
    step = env.step(np.array([[0, 0], [0, 1]]))
    assert step.won.tolist() == [True, False]
    assert step.reward[1] < step.reward[0]
