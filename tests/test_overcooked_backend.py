"""The Overcooked backend on the real overcooked-ai: rewards, encoding, partners, annealing, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from harness.api import Step
from harness.errors import ConfigError
from scenarios.overcooked import (
    COL,
    FEATURES,
    ITEM_INDEX,
    LAYOUTS,
    POS,
    TERRAIN,
    TYPE_INDEX,
    OvercookedArgs,
    OvercookedBackend,
    OvercookedComposition,
    load_layout,
)
from scenarios.parallel_env import BackendParallelEnv

MISSING = OvercookedBackend.missing_requirements(OvercookedArgs())
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

STEP_FIELDS = [
    "obs", "obs_mask", "state", "state_mask", "avail_actions", "agent_mask",
    "reward", "done", "terminated", "won", "composition",
]
NORTH, SOUTH, EAST, WEST, STAY, INTERACT = range(6)

# cramped_room (cook 0 starts at (1, 2), cook 1 at (3, 1)):
#   XXPXX      pot (2,0); onion dispensers (0,1), (4,1)
#   O  2O      dish dispenser (1,3); serving (3,3)
#   X1  X
#   XDXSX
FETCH_ONION = [WEST, INTERACT, EAST, NORTH, INTERACT]  # from (2,1): onion from (0,1), into the pot
SOUP_PLAN = (
    [NORTH, WEST, INTERACT, EAST, NORTH, INTERACT] + FETCH_ONION + FETCH_ONION  # three onions in the pot
    + [INTERACT]  # empty hands at a full pot: start cooking
    + [WEST, SOUTH, INTERACT, NORTH, EAST, NORTH]  # a dish, back at the pot
    + [STAY] * 20 + [INTERACT]  # the soup cooks for 20 ticks; pick it up
    + [SOUTH, EAST, SOUTH, INTERACT]  # deliver at (3,3)
)
DELIVERY_STEP = len(SOUP_PLAN) - 1
SHAPED_TOTAL = 3 * 3 + 3 + 5  # three onions into the pot, a useful dish pickup, the soup pickup


def comp(layout: str = "cramped_room", partner: object = "self", player: int = 0) -> OvercookedComposition:
    return OvercookedComposition.model_validate({"layout": layout, "partner": partner, "player": player})


def make(comps: list[OvercookedComposition] | None = None, num_envs: int = 2, seed: int = 0,
         training: bool = False, weights: list[float] | None = None, **args: object) -> OvercookedBackend:
    return OvercookedBackend(OvercookedArgs.model_validate(args), comps or [comp()], num_envs, seed,
                             weights=weights, training=training)


def play(env: OvercookedBackend, plan: list[int], partner_action: int | None = STAY) -> list[Step]:
    """Cook 0 (slot 0) follows `plan` in every env; a learner slot 1 (self-play) takes `partner_action`."""
    steps = [env.reset()]
    for a in plan:
        row = [a] if env.spec.max_agents == 1 else [a, partner_action]
        steps.append(env.step(np.tile(row, (env.num_envs, 1))))
    return steps


def rel_pos(x: int, y: int, layout: str = "cramped_room") -> np.ndarray:
    lay = load_layout(layout)
    return np.array([x / lay.width, y / lay.height], np.float32)


# ---------------------------------------------------------------------------------------------
# Import and requirements


def test_module_import_does_not_import_overcooked():
    code = "import sys, scenarios.overcooked; assert 'overcooked_ai_py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_missing_requirements(monkeypatch):
    import scenarios.overcooked as oc

    assert OvercookedBackend.missing_requirements(OvercookedArgs()) is None

    def absent():
        raise ImportError("No module named 'overcooked_ai_py'")

    monkeypatch.setattr(oc, "_overcooked", absent)
    message = OvercookedBackend.missing_requirements(OvercookedArgs())
    assert message == "backend overcooked needs overcooked-ai: pip install -e '.[overcooked]' -c constraints.txt"


def test_layouts_load_and_counter_circuit_is_the_onion_only_one():
    for name in LAYOUTS:
        lay = load_layout(name)
        assert lay.mdp.num_players == 2
        assert lay.n_fixed >= 5  # a pot, two onion dispensers (or more), a dish dispenser, a serving spot
    assert load_layout("counter_circuit").mdp.layout_name == "counter_circuit_o_1order"


# ---------------------------------------------------------------------------------------------
# Rewards


@pytest.mark.parametrize("partner", ["self", "stay"])
def test_scripted_soup_delivery_pays_20(partner):
    env = make([comp(partner=partner)], num_envs=2, horizon=len(SOUP_PLAN) + 2)
    steps = play(env, SOUP_PLAN + [STAY, STAY])
    rewards = np.stack([s.reward for s in steps[1:]])  # [T, B]
    assert (rewards[DELIVERY_STEP] == 20).all()
    assert (rewards.sum(0) == 20).all()  # evaluation instance: sparse reward only
    last = steps[-1]
    assert last.done.all() and last.terminated.all() and last.won.all()
    assert not steps[-2].done.any() and not steps[-2].won.any()  # won only where done


def test_no_soup_no_win_and_episode_length_is_horizon():
    env = make(horizon=7)
    steps = play(env, [STAY] * 7)
    assert [bool(s.done.all()) for s in steps] == [False] * 7 + [True]
    assert not steps[-1].won.any() and all((s.reward == 0).all() for s in steps)
    after = env.step(np.zeros((2, 2), np.int64))  # past the end: done, zero reward
    assert after.done.all() and (after.reward == 0).all()


def test_a_soup_no_order_pays_for_is_not_a_win():
    """One onion cooked alone can be served, but pays 0: it must not count as a delivered soup."""
    plan = ([NORTH, WEST, INTERACT, EAST, NORTH, INTERACT] + [INTERACT]  # one onion, start cooking
            + [WEST, SOUTH, INTERACT, NORTH, EAST, NORTH] + [STAY] * 30 + [INTERACT]  # dish, wait, pick up
            + [SOUTH, EAST, SOUTH, INTERACT, STAY])  # serve it
    steps = play(make([comp(partner="stay")], num_envs=1, horizon=len(plan)), plan)
    assert sum(float(s.reward.sum()) for s in steps) == 0
    assert steps[-1].done.all() and not steps[-1].won.any()


def test_win_soups_threshold():
    env = make(horizon=len(SOUP_PLAN), win_soups=2)
    assert not play(env, SOUP_PLAN)[-1].won.any()


# ---------------------------------------------------------------------------------------------
# Shaped reward annealing


def test_shaped_reward_annealed_on_training_instances_only():
    horizon, anneal = len(SOUP_PLAN), 400
    train = make(num_envs=2, training=True, horizon=horizon, shaped_reward_horizon=anneal)
    factors = []
    rewards = []
    train.reset()
    for a in SOUP_PLAN:
        factors.append(train.shaping_factor())
        rewards.append(train.step(np.tile([a, STAY], (2, 1))).reward[0])
    # The factor falls by (active envs) / shaped_reward_horizon per batched step.
    np.testing.assert_allclose(factors, 1 - 2 * np.arange(horizon) / anneal, rtol=1e-6)
    shaped = np.array(rewards) - np.where(np.arange(horizon) == DELIVERY_STEP, 20, 0)
    np.testing.assert_allclose(shaped[shaped > 0] / np.array(factors)[shaped > 0], [3, 3, 3, 3, 5], rtol=1e-5)
    assert train.shaping_steps == 2 * horizon
    # Past the horizon the factor stays 0: only sparse reward is left.
    train.shaping_steps = anneal * 2
    assert train.shaping_factor() == 0.0
    assert sum(s.reward[0] for s in play(train, SOUP_PLAN)[1:]) == 20

    evaluation = make(num_envs=2, training=False, horizon=horizon, shaped_reward_horizon=anneal)
    assert sum(s.reward[0] for s in play(evaluation, SOUP_PLAN)[1:]) == 20
    assert evaluation.shaping_factor() == 0.0

    off = make(num_envs=2, training=True, horizon=horizon, shaped_reward=False)
    assert sum(s.reward[0] for s in play(off, SOUP_PLAN)[1:]) == 20


def test_first_training_episode_gets_the_full_shaped_reward():
    env = make(num_envs=1, training=True, horizon=len(SOUP_PLAN), shaped_reward_horizon=10**9)
    total = sum(float(s.reward[0]) for s in play(env, SOUP_PLAN)[1:])
    assert total == pytest.approx(20 + SHAPED_TOTAL, rel=1e-4)


def test_annealing_counter_survives_a_checkpoint_round_trip():
    kw = {"num_envs": 3, "training": True, "horizon": len(SOUP_PLAN), "shaped_reward_horizon": 500}
    first = make(**kw, seed=1)
    play(first, SOUP_PLAN)  # one episode: 3 * horizon env steps
    saved = first.rng_state()
    resumed = make(**kw, seed=99)
    resumed.set_rng_state(saved)
    assert resumed.shaping_steps == first.shaping_steps == 3 * len(SOUP_PLAN)
    assert resumed.shaping_factor() == first.shaping_factor() < 1
    a, b = play(first, SOUP_PLAN), play(resumed, SOUP_PLAN)
    for sa, sb in zip(a, b, strict=True):
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)
    fresh = make(**kw, seed=1)
    fresh_rewards = [float(s.reward.sum()) for s in play(fresh, SOUP_PLAN)]
    assert sum(float(s.reward.sum()) for s in b) < sum(fresh_rewards)  # the schedule continued, not restarted


# ---------------------------------------------------------------------------------------------
# Observations and state


def test_two_layouts_share_features_and_padding_is_masked():
    comps = [comp("cramped_room"), comp("asymmetric_advantages"), comp("forced_coordination", "random", 1)]
    env = make(comps, num_envs=24, seed=3, max_items=4)
    spec = env.spec
    assert spec.obs_features == spec.state_features == FEATURES
    assert spec.n_actions == 6 and spec.max_agents == 2 and spec.episode_limit == 400
    assert spec.max_entities == spec.max_state_entities == max(load_layout(c.layout).entities(4) for c in comps)
    step = env.reset()
    step.validate(spec)
    assert set(step.composition.tolist()) == {0, 1, 2}
    assert step.avail_actions[step.agent_mask].all()
    for b, c in enumerate(step.composition):
        layout, a = comps[c].layout, len(comps[c].learners)
        real = 2 + load_layout(layout).n_fixed  # no items on counters at the start
        assert step.agent_mask[b].tolist() == [True] * a + [False] * (2 - a)
        assert (step.obs_mask[b, :a].sum(-1) == real).all() and not step.obs_mask[b, a:].any()
        assert step.state_mask[b].sum() == real
        assert (step.obs[b][~step.obs_mask[b]] == 0).all() and (step.state[b][~step.state_mask[b]] == 0).all()
        for i in range(a):
            own = step.obs[b, i]
            assert own[0, COL["self"]] == 1 and (own[1:, COL["self"]] == 0).all()
            assert own[0, TYPE_INDEX["player"]] == own[1, TYPE_INDEX["player"]] == 1
            np.testing.assert_array_equal(own[0, POS], 0)  # own position is the origin
            # the state's row i is the same cook with absolute coordinates
            np.testing.assert_array_equal(np.delete(step.state[b, i], [*range(POS.start, POS.stop), COL["self"]]),
                                          np.delete(own[0], [*range(POS.start, POS.stop), COL["self"]]))
        assert (step.state[b, :2, TYPE_INDEX["player"]] == 1).all()  # cooks first (the partner's too)


def test_player_index_and_partner_rows():
    env = make([comp(partner="random", player=1)], num_envs=1)
    step = env.reset()
    assert env.spec.max_agents == 1 and step.agent_mask.tolist() == [[True]]
    # slot 0 controls cook 1, which starts at (3, 1); the partner (cook 0) at (1, 2)
    np.testing.assert_allclose(step.state[0, 0, POS], rel_pos(3, 1))
    np.testing.assert_allclose(step.state[0, 1, POS], rel_pos(1, 2))
    np.testing.assert_allclose(step.obs[0, 0, 1, POS], rel_pos(1, 2) - rel_pos(3, 1))
    assert step.obs[0, 0, 0, COL["orientation"]] == 1  # both start facing north


def test_terrain_window_of_the_start_cell():
    step = make().reset()
    window = step.obs[0, 0, 0, TERRAIN]  # cook 0 at (1, 2) in cramped_room

    def cell(dx: int, dy: int) -> float:
        k = (dy + 2) * 5 + (dx + 2)
        return float(window[k - (k > 12)])  # the centre cell is left out

    assert cell(-1, 0) == 1 and cell(0, 1) == 1  # counter to the west, dish dispenser to the south
    assert cell(1, 0) == 0 and cell(0, -1) == 0 and cell(1, -1) == 0  # floor
    assert cell(-2, 0) == 1 and cell(0, 2) == 1  # outside the grid counts as blocked
    assert window.sum() == 24 - 5  # cramped_room has six floor cells, one of them the cook's own


def test_pot_and_held_item_features_follow_the_game():
    env = make(num_envs=1, horizon=len(SOUP_PLAN))
    steps = play(env, SOUP_PLAN)
    pot = 2  # first fixed row: the pot
    soup = COL["soup"]
    assert steps[3].obs[0, 0, 0, ITEM_INDEX["onion"]] == 1  # holding an onion after the first pickup
    assert steps[6].obs[0, 0, pot, soup] == pytest.approx(1 / 3)  # one onion in the pot
    started = len(SOUP_PLAN) - 31  # the step after the interact that starts cooking
    assert steps[started].obs[0, 0, pot, soup : soup + 4].tolist() == pytest.approx([1, 0, 1, 0])
    assert steps[started + 20].obs[0, 0, pot, soup + 3] == 1  # ready after 20 ticks
    assert steps[-2].obs[0, 0, 0, ITEM_INDEX["soup"]] == 1  # carrying the soup just before delivery
    assert steps[-1].obs[0, 0, 0, COL["time"]] == 1.0


def test_items_on_counters_are_capped_nearest_first():
    # Both cooks drop an onion on a counter: cook 0 on (1,0), cook 1 on (3,0).
    plan0 = [NORTH, WEST, INTERACT, NORTH, INTERACT]
    plan1 = [EAST, INTERACT, NORTH, INTERACT, STAY]
    for cap, shown in ((8, 2), (1, 1), (0, 0)):
        env = make(num_envs=1, max_items=cap)
        env.reset()
        for a0, a1 in zip(plan0, plan1, strict=True):
            step = env.step(np.array([[a0, a1]]))
        base = 2 + load_layout("cramped_room").n_fixed
        assert step.obs_mask[0].sum(-1).tolist() == [base + shown] * 2
        assert step.state_mask[0].sum() == base + shown
        items = step.obs[0, :, base : base + shown]
        assert (items[..., TYPE_INDEX["item"]] == 1).all() and (items[..., ITEM_INDEX["onion"]] == 1).all()
        if cap == 1:  # each cook sees the onion right above it
            np.testing.assert_allclose(step.obs[0, 0, base, POS], rel_pos(1, 0) - rel_pos(1, 1))
            np.testing.assert_allclose(step.obs[0, 1, base, POS], rel_pos(3, 0) - rel_pos(3, 1))
            np.testing.assert_allclose(step.state[0, base, POS], rel_pos(1, 0))  # first in grid order


def test_composition_names():
    args = OvercookedArgs()
    names = [OvercookedBackend.composition_name(args, c) for c in (
        comp(), comp(player=1), comp("counter_circuit", "random"), comp(partner="stay", player=1),
        comp(partner={"kind": "checkpoint", "algorithm": "qmix", "path": "runs/x/RUN1/best.pt"}),
    )]
    assert names == ["cramped_room", "cramped_room@p1", "counter_circuit+random", "cramped_room+stay@p1",
                     "cramped_room+qmix:RUN1/best.pt"]


# ---------------------------------------------------------------------------------------------
# Determinism and partners


def run_episodes(seed: int, comps: list[OvercookedComposition], episodes: int = 2, horizon: int = 15) -> list[Step]:
    env = make(comps, num_envs=4, seed=seed, weights=[1, 2, 3][: len(comps)], horizon=horizon)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(episodes):
        out.append(env.reset())
        for _ in range(horizon):
            out.append(env.step(rng.integers(0, 6, size=(4, env.spec.max_agents))))
    return out


def test_same_seed_same_steps():
    comps = [comp("cramped_room"), comp("coordination_ring", "random"), comp("counter_circuit", "stay", 1)]
    a, b, c = run_episodes(5, comps), run_episodes(5, comps), run_episodes(6, comps)
    for sa, sb in zip(a, b, strict=True):
        for name in STEP_FIELDS:
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name), err_msg=name)
    assert any(not np.array_equal(sa.state, sc.state) for sa, sc in zip(a, c, strict=True))


def partner_positions(steps: list[Step]) -> np.ndarray:
    return np.stack([s.state[:, 1, POS] for s in steps])  # [T, B, 2]: state row 1 is the partner's cook


def test_stay_partner_never_moves_and_random_partner_does():
    stay = run_episodes(0, [comp(partner="stay")], episodes=1, horizon=30)
    assert (partner_positions(stay) == partner_positions(stay)[0]).all()
    rand = run_episodes(0, [comp(partner="random")], episodes=1, horizon=30)
    assert (partner_positions(rand) != partner_positions(rand)[0]).any()


def save_partner(path: Path, spec, favourite: int | None, bare: bool = False, **params: object) -> dict:
    """A qmix checkpoint; with `favourite`, its greedy action is always that one."""
    import torch

    from harness import registry
    from harness.config import build_config

    registry.load_all()
    cls = registry.get_algorithm("qmix")
    params = {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 16, "buffer_size": 4, **params}
    algo = cls(spec, build_config(cls, params), 0, torch.device("cpu"))
    if favourite is not None:
        with torch.no_grad():
            algo.agent.head.weight.zero_()
            algo.agent.head.bias.fill_(-1.0)
            algo.agent.head.bias[favourite] = 1.0
    torch.save(algo.state_dict() if bare else {"algorithm": algo.state_dict()}, path)
    return {"kind": "checkpoint", "algorithm": "qmix", "path": str(path), "params": params}


@pytest.mark.parametrize("bare", [False, True])
def test_checkpoint_partner_acts_with_the_loaded_weights(tmp_path, bare):
    spec = make().spec
    partner = save_partner(tmp_path / "south.pt", spec, favourite=SOUTH, bare=bare)
    for player, start, end in ((0, (3, 1), (3, 2)), (1, (1, 2), (1, 2))):
        env = make([comp(partner=partner, player=player)], num_envs=3, horizon=6)
        assert env.spec.max_agents == 1
        steps = play(env, [STAY] * 6)
        assert all(s.agent_mask.tolist() == [[True]] * 3 for s in steps)
        pos = partner_positions(steps)
        np.testing.assert_allclose(pos[0], np.tile(rel_pos(*start), (3, 1)))
        np.testing.assert_allclose(pos[-1], np.tile(rel_pos(*end), (3, 1)))  # walked south until blocked
        facing_south = steps[-1].state[:, 1, COL["orientation"] + 1]
        assert (facing_south == 1).all()


def test_checkpoint_partner_mixed_with_self_play_in_one_batch(tmp_path):
    spec = make().spec
    partner = save_partner(tmp_path / "p.pt", spec, favourite=None)
    comps = [comp(), comp("coordination_ring", partner)]
    steps = run_episodes(0, comps, episodes=2, horizon=10)
    again = run_episodes(0, comps, episodes=2, horizon=10)
    for sa, sb in zip(steps, again, strict=True):
        np.testing.assert_array_equal(sa.state, sb.state)
    for s in steps:
        np.testing.assert_array_equal(s.agent_mask[:, 1], s.composition == 0)


def test_checkpoint_with_other_params_is_a_config_error(tmp_path):
    spec = make().spec
    partner = save_partner(tmp_path / "p.pt", spec, favourite=None)
    partner["params"] = {"attn_embed": 32, "attn_heads": 2, "rnn_hidden": 16}
    with pytest.raises(ConfigError) as info:
        make([comp(partner=partner)])
    assert info.value.problems[0].path == ("partner", "path")
    assert "were other params used" in str(info.value)


def test_missing_checkpoint_file_is_a_config_error(tmp_path):
    missing = {"kind": "checkpoint", "algorithm": "qmix", "path": str(tmp_path / "nope.pt")}
    args = OvercookedArgs()
    with pytest.raises(ConfigError) as info:
        OvercookedBackend.check_task(args, {"train": [comp()], "test": [comp(partner="stay"), comp(partner=missing)]})
    assert info.value.problems[0].path == ("test", 1, "partner", "path")
    with pytest.raises(ConfigError) as info:
        make([comp(partner=missing)])
    assert info.value.problems[0].path == ("partner", "path")


def test_unknown_checkpoint_algorithm_and_params(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(b"")
    bad_alg = {"kind": "checkpoint", "algorithm": "qmx", "path": str(path)}
    bad_param = {"kind": "checkpoint", "algorithm": "qmix", "path": str(path), "params": {"attn": 3}}
    for partner, where, found in ((bad_alg, "algorithm", "qmx"), (bad_param, ("params", "attn"), "attn")):
        with pytest.raises(ConfigError) as info:
            OvercookedBackend.check_task(OvercookedArgs(), {"train": [comp(partner=partner)]})
        problem = info.value.problems[0]
        assert problem.path == ("train", 0, "partner", *((where,) if isinstance(where, str) else where))
        assert problem.found == found


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("data,key", [
    ({"layout": "cramped_rom"}, "layout"),
    ({"layout": "simple"}, "layout"),
    ({}, "layout"),
    ({"layout": "cramped_room", "partner": "rnadom"}, "partner"),
    ({"layout": "cramped_room", "partner": {"kind": "stay", "path": "x.pt"}}, "partner"),
    ({"layout": "cramped_room", "partner": {"kind": "checkpoint", "path": "x.pt"}}, "partner"),
    ({"layout": "cramped_room", "partner": {"kind": "random", "bogus": 1}}, "partner"),
    ({"layout": "cramped_room", "player": 2}, "player"),
    ({"layout": "cramped_room", "team": 2}, "team"),
])
def test_bad_compositions_raise_validation_error_naming_the_key(data, key):
    with pytest.raises(ValidationError) as info:
        OvercookedComposition.model_validate(data)
    assert info.value.errors()[0]["loc"][0] == key


def test_unknown_layout_message_lists_layouts():
    with pytest.raises(ValidationError) as info:
        comp("cramped_rom")
    text = str(info.value)
    assert all(name in text for name in LAYOUTS) and "did you mean 'cramped_room'" in text


@pytest.mark.parametrize("args", [{"horizon": 0}, {"shaped_reward_horizon": 0}, {"max_items": -1}, {"layout": "x"}])
def test_bad_args_raise_validation_error(args):
    with pytest.raises(ValidationError):
        OvercookedArgs.model_validate(args)


def test_suite_errors_name_file_line_and_key(tmp_path):
    from harness.config import load_suite

    suite = tmp_path / "oc.yaml"
    suite.write_text(textwrap.dedent("""\
        seeds: 1
        budget: {env_steps: 100, eval_every: 50, eval_episodes: 2}
        algorithms: [qmix]
        tasks:
          oc:
            env: overcooked
            train: [{layout: cramped_room}]
            test: [{layout: counter_circut}]
    """))
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite))
    problem = info.value.problems[0]
    assert problem.path == ("tasks", "oc", "test", 0, "layout") and problem.line == 8
    assert "did you mean 'counter_circuit'" in str(info.value)
    # A task without train compositions is an error (a silent default layout would surprise).
    suite.write_text(suite.read_text().replace("    train: [{layout: cramped_room}]\n", "").replace("circut", "circuit"))
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite))
    assert info.value.problems[0].path == ("tasks", "oc", "train")


@pytest.mark.parametrize("actions", [
    np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), np.array([[0, 6], [0, 0]]), np.array([[0, -1], [0, 0]]),
])
def test_step_rejects_bad_actions(actions):
    env = make()
    env.reset()
    with pytest.raises(ValueError):
        env.step(actions)


# ---------------------------------------------------------------------------------------------
# PettingZoo


@pytest.mark.parametrize("comps", [
    [comp(), comp("forced_coordination", "random", 1)],
    [comp("asymmetric_advantages", "stay")],
])
def test_parallel_api(comps):
    from pettingzoo.test import parallel_api_test

    args = OvercookedArgs(horizon=12)
    parallel_api_test(BackendParallelEnv(OvercookedBackend, args, comps), num_cycles=30)


def test_parallel_env_delivers_a_soup():
    args = OvercookedArgs(horizon=len(SOUP_PLAN))
    env = BackendParallelEnv(OvercookedBackend, args, [comp(partner="stay")])
    obs, infos = env.reset(seed=0)
    assert list(obs) == ["agent_0"] and infos["agent_0"]["action_mask"].tolist() == [1] * 6
    total = 0.0
    for a in SOUP_PLAN:
        _, rewards, terms, truncs, _ = env.step({"agent_0": a})
        total += rewards["agent_0"]
    assert total == 20 and terms == {"agent_0": True} and truncs == {"agent_0": False} and env.agents == []


# ---------------------------------------------------------------------------------------------
# End to end through the CLI


@pytest.mark.slow
def test_harness_trains_qmix_on_cramped_room(tmp_path):
    suite = tmp_path / "overcooked_smoke.yaml"
    suite.write_text(textwrap.dedent(f"""\
        seeds: 1
        budget: smoke
        budgets:
          smoke: {{env_steps: 2000, eval_every: 1000, eval_episodes: 2}}
        algorithms: [qmix]
        workers: 1
        store: sqlite:///{tmp_path}/store.db
        checkpoint_dir: {tmp_path}/checkpoints
        params:
          "*": {{attn_embed: 32, attn_heads: 2, rnn_hidden: 32, batch_size: 8, buffer_size: 64}}
        tasks:
          cramped_room:
            env: overcooked
            args: {{horizon: 50}}
            num_envs: 4
            train: [{{layout: cramped_room}}]
            test: [{{layout: cramped_room, partner: random}}]
    """))
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "harness", "run", f"suite={suite}"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - start < 600
    best = list((tmp_path / "checkpoints").rglob("best.pt"))
    assert len(best) == 1
    # The trained policy can be a checkpoint partner right away (cross-play).
    partner = {"kind": "checkpoint", "algorithm": "qmix", "path": str(best[0]),
               "params": {"attn_embed": 32, "attn_heads": 2, "rnn_hidden": 32, "batch_size": 8, "buffer_size": 64}}
    env = make([comp(partner=partner)], num_envs=2, horizon=10)
    assert play(env, [STAY] * 10)[-1].done.all()
