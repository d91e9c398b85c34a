"""The SMACv2 backend without the game: the requirement check end to end through the CLI,
parsing SMACv2's flat observations and state into entity rows, and the capability config.

StarCraft II cannot run here, so the arrays below are written by hand in the layout SMACv2's
`get_obs_agent` / `get_state` produce (smacv2/env/starcraft2/starcraft2.py), with the
block widths its `get_obs_*_size` functions give for the options in scenarios.smacv2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import scenarios.smacv2 as smacv2_module
from harness import registry
from harness.errors import ConfigError
from scenarios import SUITES_DIR
from scenarios.python_batch import Frame, Outcome
from scenarios.smacv2 import (
    EXACT_TEAMS,
    MAP_FILE,
    OBS_FEATURES,
    STATE_FEATURES,
    ExactTeamsDistribution,
    GamePool,
    Sc2Layout,
    Smacv2Backend,
    _Game,
    avail_rows,
    capability_config,
    distribution_configs,
    exact_teams,
    frame_from_arrays,
    obs_entities,
    requirements_problem,
    sc2_dir,
    state_entities,
)
from scenarios.smax_spec import RACES, SmaxArgs
from scenarios.smax_spec import SmaxComposition as Comp

ROOT = Path(__file__).parents[1]
F = {name: i for i, name in enumerate(OBS_FEATURES)}
G = {name: i for i, name in enumerate(STATE_FEATURES)}
TYPES = slice(F["type_marine"], None)
STATE_TYPES = slice(G["type_marine"], None)


def one_hot(name: str) -> list[float]:
    """SMAX's six-type one-hot (marine, marauder, stalker, zealot, zergling, hydralisk)."""
    return [float(name == t) for t in ("marine", "marauder", "stalker", "zealot", "zergling", "hydralisk")]


def sc2_layout(race: str, n_agents: int, n_enemies: int) -> Sc2Layout:
    """Block widths by SMACv2's size formulas (3 unit-type bits on the 10gen maps, a shield
    column for protoss, own position observed; no pathing, height or last actions)."""
    shield, bits = int(race == "protoss"), 3
    unit = 1 + shield + bits  # health, [shield], type bits
    return Sc2Layout(race=race, n_agents=n_agents, n_enemies=n_enemies, move_feats=4,
                     enemy_feats=4 + unit, ally_feats=4 + unit, own_feats=unit + 2,
                     state_size=n_agents * (4 + shield + bits) + n_enemies * (3 + shield + bits))


# ---------------------------------------------------------------------------------------------
# (a) No game here: validate and run stop with the install message, before any training


def harness(tmp_path: Path, *tokens: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SC2PATH": str(tmp_path / "no-starcraft"), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "harness", *tokens], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


@pytest.mark.parametrize("command", [
    ["validate", "suite=zero_shot_smacv2", "backend=smacv2"],
    ["run", "suite=zero_shot_smacv2", "budget=smoke", "backend=smacv2"],
])
def test_cli_refuses_smacv2_without_the_game(tmp_path, command):
    out = harness(tmp_path, *command)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "backend smacv2 needs SMACv2 and StarCraft II" in text
    assert f"SC2PATH={tmp_path / 'no-starcraft'} is not a folder" in text
    assert "pip install git+https://github.com/oxwhirl/smacv2.git" in text
    assert "SMAC_Maps.zip" in text and "backend=smax" in text
    assert "Traceback" not in text
    assert not (tmp_path / "runs").exists()  # no store, no checkpoints: nothing was trained
    assert not list(tmp_path.rglob("*.db"))


def test_the_sc2_suites_swap_onto_smacv2():
    registry.load_all()
    smax, smacv2 = registry.get_env("smax"), registry.get_env("smacv2")
    assert smacv2 is Smacv2Backend
    assert getattr(smax, "family", None) == smacv2.family == "sc2", "SmaxBackend needs family = 'sc2'"
    assert smacv2.Args is smax.Args and smacv2.Composition is smax.Composition


def test_importing_the_module_leaves_smacv2_and_pysc2_alone():
    code = textwrap.dedent("""
        import sys
        tried = []
        class Spy:
            def find_spec(self, name, path=None, target=None):
                tried.append(name)
        sys.meta_path.insert(0, Spy())
        from harness import registry
        registry.load_all()
        assert not [n for n in tried if n.split(".")[0] in ("smacv2", "pysc2")], tried
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_requirements_check_names_what_is_missing(tmp_path):
    game = tmp_path / "StarCraftII"
    assert sc2_dir({"SC2PATH": str(game)}, tmp_path, "linux") == game
    assert sc2_dir({}, tmp_path, "linux") == tmp_path / "StarCraftII"
    assert sc2_dir({}, tmp_path, "darwin") == Path("/Applications/StarCraft II")

    no_game = requirements_problem(None, game, sc2path_set=False)
    assert no_game is not None and "not in its default folder" in no_game and "smacv2 package" not in no_game
    game.mkdir()
    no_map = requirements_problem(None, game, sc2path_set=True)
    assert no_map is not None and "SMACv2 maps" in no_map and str(game / MAP_FILE) in no_map
    (game / MAP_FILE).parent.mkdir(parents=True)
    (game / MAP_FILE).write_bytes(b"")
    assert requirements_problem(None, game, sc2path_set=True) is None
    no_package = requirements_problem("ModuleNotFoundError: No module named 'smacv2'", game, sc2path_set=True)
    assert no_package is not None and "smacv2 package" in no_package and "backend=smax" in no_package


# ---------------------------------------------------------------------------------------------
# (b) Observation and state parsing
#
# Protoss, 3 agents v 4 enemies. Agent 2 is dead. Agent 0 sees agent 1 and enemies 0 and 2;
# agent 1 sees agent 0 and enemy 3. Unit types: agents stalker, zealot, stalker; enemies
# zealot, stalker, stalker, zealot (SMACv2's protoss bits: stalker, zealot, colossus).

STALKER, ZEALOT = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
NOBODY = [0.0] * 9  # an unseen or dead unit's block: all zeros

OBS_3V4 = np.array([
    # agent 0: moves N S E W | enemies 0..3: shootable, dist, rel x, rel y, health, shield, type bits
    # | allies (agents 1, 2): visible, dist, rel x, rel y, health, shield, type bits
    # | own: health, shield, x / map_x, y / map_y, type bits
    [1, 0, 1, 1,
     1, 0.5, 0.3, 0.4, 0.9, 0.8, *ZEALOT,
     *NOBODY,
     0, 0.9, -0.6, 0.66, 1.0, 1.0, *STALKER,
     *NOBODY,
     1, 0.2, 0.1, -0.17, 0.5, 0.25, *ZEALOT,
     *NOBODY,
     0.7, 0.6, 0.25, 0.75, *STALKER],
    # agent 1 (enemies 0..3, then allies: agents 0, 2)
    [0, 1, 1, 0,
     *NOBODY, *NOBODY, *NOBODY,
     1, 0.3, 0.0, 0.3, 0.4, 0.0, *ZEALOT,
     1, 0.2, -0.1, 0.17, 0.7, 0.6, *STALKER,
     *NOBODY,
     0.5, 0.25, 0.3, 0.6, *ZEALOT],
    # agent 2: dead, SMACv2 returns zeros
    [0.0] * (4 + 4 * 9 + 2 * 9 + 7),
], dtype=np.float32)

STATE_3V4 = np.array([
    # agents: health, cooldown, (x - centre) / width, (y - centre) / height, shield, type bits
    0.7, 0.1, -0.25, 0.25, 0.6, *STALKER,
    0.5, 0.0, -0.20, 0.10, 0.25, *ZEALOT,
    0, 0, 0, 0, 0, 0, 0, 0,  # dead
    # enemies: health, x, y, shield, type bits
    0.9, 0.05, 0.30, 0.8, *ZEALOT,
    0, 0, 0, 0, 0, 0, 0,  # dead
    1.0, -0.45, 0.35, 1.0, *STALKER,
    0.4, 0.10, 0.00, 0.0, *ZEALOT,
], dtype=np.float32)

AVAIL_3V4 = np.array([
    # no-op, stop, N, S, E, W, attack enemy 0..3
    [0, 1, 1, 0, 1, 1, 1, 0, 0, 0],
    [0, 1, 0, 1, 1, 0, 0, 0, 0, 0],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
])


def row(**values: float) -> np.ndarray:
    out = np.zeros(len(OBS_FEATURES), np.float32)
    for name, v in values.items():
        out[F[name]] = v
    return out


def test_layout_matches_the_hand_built_vectors():
    layout = sc2_layout("protoss", 3, 4)
    layout.check(OBS_3V4.shape[1])
    assert (layout.ally_state_feats, layout.enemy_state_feats) == (8, 7)
    assert STATE_3V4.size == layout.state_size


def test_observation_rows_masks_and_order():
    layout = sc2_layout("protoss", 3, 4)
    alive = np.array([True, True, False])
    rows, mask = obs_entities(OBS_3V4, alive, layout, max_allies=3, max_enemies=4)
    assert rows.shape == (3, 7, len(OBS_FEATURES)) and mask.shape == (3, 7)
    # Agent 0: itself, agent 1, (agent 2 dead), enemies 0..3 from row 3; sees enemies 0 and 2.
    assert mask[0].tolist() == [True, True, False, True, False, True, False]
    np.testing.assert_allclose(rows[0, 0], row(
        is_self=1, health=0.7, shield=0.6, move_north=1, move_south=0, move_east=1, move_west=1,
        x=0.25 - 0.5, y=0.75 - 0.5, type_stalker=1))
    np.testing.assert_allclose(rows[0, 1], row(
        is_ally=1, distance=0.2, rel_x=0.1, rel_y=-0.17, health=0.5, shield=0.25, type_zealot=1))
    np.testing.assert_allclose(rows[0, 3], row(
        is_enemy=1, shootable=1, distance=0.5, rel_x=0.3, rel_y=0.4, health=0.9, shield=0.8, type_zealot=1))
    np.testing.assert_allclose(rows[0, 5], row(
        is_enemy=1, shootable=0, distance=0.9, rel_x=-0.6, rel_y=0.66, health=1.0, shield=1.0, type_stalker=1))
    # Agent 1: its allies are agents 0 and 2 in slot order; it sees agent 0 and enemy 3 only.
    assert mask[1].tolist() == [True, True, False, False, False, False, True]
    np.testing.assert_allclose(rows[1, 1], row(
        is_ally=1, distance=0.2, rel_x=-0.1, rel_y=0.17, health=0.7, shield=0.6, type_stalker=1))
    np.testing.assert_allclose(rows[1, 6], row(
        is_enemy=1, shootable=1, distance=0.3, rel_x=0.0, rel_y=0.3, health=0.4, shield=0.0, type_zealot=1))
    assert rows[1, 0, F["is_self"]] == 1 and rows[1, 0, F["type_zealot"]] == 1
    # A dead agent sees nothing, not even itself; masked rows are all zeros.
    assert not mask[2].any()
    assert not rows[~mask].any()


def test_enemies_keep_their_attack_rows_when_teams_are_padded():
    """Composition 3v4 inside a task whose largest is 5v6: enemy k sits in row max_allies + k
    (5 + k), the row attack action 6 + k refers to, as in SMAX."""
    layout = sc2_layout("protoss", 3, 4)
    rows, mask = obs_entities(OBS_3V4, np.array([True, True, False]), layout, max_allies=5, max_enemies=6)
    assert rows.shape == (3, 11, len(OBS_FEATURES))
    assert mask[0].tolist() == [True, True, False, False, False, True, False, True, False, False, False]
    assert rows[0, 5, F["shootable"]] == 1 and rows[0, 7, F["type_stalker"]] == 1


def test_state_rows():
    layout = sc2_layout("protoss", 3, 4)
    rows, mask = state_entities(STATE_3V4, layout, max_allies=3, max_enemies=4)
    assert rows.shape == (7, len(STATE_FEATURES))
    assert mask.tolist() == [True, True, False, True, False, True, True]
    expect = np.zeros(len(STATE_FEATURES), np.float32)
    expect[[G["is_ally"], G["health"], G["cooldown"], G["x"], G["y"], G["shield"]]] = [1, 0.7, 0.1, -0.25, 0.25, 0.6]
    expect[STATE_TYPES] = one_hot("stalker")
    np.testing.assert_allclose(rows[0], expect)
    expect = np.zeros(len(STATE_FEATURES), np.float32)
    expect[[G["is_enemy"], G["health"], G["x"], G["y"], G["shield"]]] = [1, 1.0, -0.45, 0.35, 1.0]
    expect[STATE_TYPES] = one_hot("stalker")
    np.testing.assert_allclose(rows[5], expect)
    assert rows[6, G["cooldown"]] == 0 and rows[6, G["type_zealot"]] == 1
    assert not rows[~mask].any()


def test_state_ignores_last_actions_after_the_unit_blocks():
    layout = sc2_layout("protoss", 3, 4)
    with_last_actions = np.concatenate([STATE_3V4, np.ones(3 * 10, np.float32)])
    for a, b in zip(state_entities(STATE_3V4, layout, 3, 4), state_entities(with_last_actions, layout, 3, 4),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_frame_from_arrays_agent_mask_and_actions():
    args = SmaxArgs(race="protoss")
    spec = Smacv2Backend.describe(args, [Comp(allies=3, enemies=4), Comp(allies=5, enemies=6)])
    assert spec.n_actions == 6 + 6 and spec.max_entities == spec.max_state_entities == 11
    frame = frame_from_arrays(OBS_3V4, STATE_3V4, AVAIL_3V4, sc2_layout("protoss", 3, 4), spec)
    assert frame.agent_mask.tolist() == [True, True, False]
    assert frame.avail_actions.shape == (3, 12)
    assert frame.avail_actions[:, :10].tolist() == AVAIL_3V4.astype(bool).tolist()
    assert not frame.avail_actions[:, 10:].any()  # enemies 4 and 5 do not exist in this battle
    assert frame.obs.shape == (3, 11, len(OBS_FEATURES)) and frame.state.shape == (11, len(STATE_FEATURES))
    assert frame.state_mask.tolist() == [True, True, False, False, False, True, False, True, True, False, False]


def test_heal_targets_of_terran_maps_are_dropped():
    """SMACv2's terran maps have 6 + n_agents actions when allies outnumber enemies."""
    avail = np.zeros((5, 6 + 5), bool)
    avail[:, 1] = avail[:, 6 + 2] = avail[:, 6 + 4] = True  # column 10 would heal agent 4
    out = avail_rows(avail, n_enemies=3, n_actions=6 + 4)
    assert out.shape == (5, 10)
    assert out[0].nonzero()[0].tolist() == [1, 8]


@pytest.mark.parametrize("race,n,m", [("protoss", 3, 4), ("terran", 5, 6), ("zerg", 8, 8), ("terran", 1, 2)])
def test_one_feature_width_for_every_race_and_team_size(race, n, m):
    layout = sc2_layout(race, n, m)
    rng = np.random.default_rng(n * m)
    obs = rng.random((n, layout.obs_size)).astype(np.float32)
    rows, mask = obs_entities(obs, np.ones(n, bool), layout, max_allies=n, max_enemies=m)
    assert rows.shape == (n, n + m, len(OBS_FEATURES)) == (n, n + m, 21)
    srows, _ = state_entities(rng.random(layout.state_size), layout, n, m)
    assert srows.shape == (n + m, len(STATE_FEATURES)) == (n + m, 13)
    if race != "protoss":
        assert not rows[..., F["shield"]].any() and not srows[:, G["shield"]].any()


def test_unexpected_feature_sizes_are_refused():
    layout = sc2_layout("terran", 3, 4)
    with pytest.raises(ValueError, match="enemy: 10 \\(expected 8\\)"):
        Sc2Layout(**{**layout.__dict__, "enemy_feats": 10}).check()
    with pytest.raises(ValueError, match="obs: 60"):
        layout.check(obs_size=60)


# ---------------------------------------------------------------------------------------------
# (c) The capability config and team generation


def test_capability_config_for_type_probabilities():
    args = SmaxArgs(race="zerg", start_positions="surround")
    config = capability_config(args, Comp(allies=4, enemies=6, type_probs={"hydralisk": 3, "zergling": 1}))
    assert config == {
        "n_units": 4,
        "n_enemies": 6,
        "team_gen": {"dist_type": "weighted_teams", "unit_types": ["zergling", "hydralisk"],
                     "weights": [0.25, 0.75], "observe": True},
        "start_positions": {"dist_type": "surrounded", "map_x": 32.0, "map_y": 32.0},
    }


def test_capability_config_defaults_and_exact_counts():
    args = SmaxArgs(race="protoss", map_size=24)
    uniform = capability_config(args, Comp(allies=5))
    assert uniform["n_enemies"] == 5
    assert uniform["team_gen"]["unit_types"] == ["stalker", "zealot"]
    assert uniform["team_gen"]["weights"] == [0.5, 0.5]
    assert uniform["start_positions"] == {"dist_type": "surrounded_and_reflect", "p": 0.5, "map_x": 24.0, "map_y": 24.0}
    exact = capability_config(args, Comp(allies=5, units={"zealot": 5}, start_positions="reflect"), seed=7)
    assert exact["team_gen"] == {"dist_type": EXACT_TEAMS, "unit_types": ["stalker", "zealot"],
                                 "units": {"stalker": 0, "zealot": 5}, "observe": True, "seed": 7}
    assert exact["start_positions"]["dist_type"] == "reflect_position"


def test_distribution_configs_are_what_the_wrapper_hands_over():
    config = capability_config(SmaxArgs(race="terran"), Comp(allies=4, enemies=6))
    entries = distribution_configs(config)
    assert set(entries) == {"team_gen", "start_positions"}
    for key, entry in entries.items():
        assert entry == {**config[key], "env_key": key, "n_units": 4, "n_enemies": 6}


def test_exact_teams_distribution_gives_the_counts():
    args = SmaxArgs(race="terran")
    for enemies in (2, 4, 7):
        config = capability_config(args, Comp(allies=4, enemies=enemies, mix=[3, 1]), seed=1)
        dist = ExactTeamsDistribution(distribution_configs(config)["team_gen"])
        for _ in range(20):
            teams = dist.generate()["team_gen"]
            allies, foes = teams["ally_team"], teams["enemy_team"]
            assert sorted(allies) == ["marauder", "marine", "marine", "marine"]
            assert len(foes) == enemies and foes[: min(4, enemies)] == allies[: min(4, enemies)]
            assert set(foes) <= {"marine", "marauder"}


def test_exact_teams_shuffle_and_draw_extras():
    rng = np.random.default_rng(0)
    orders, extras = set(), set()
    for _ in range(50):
        allies, enemies = exact_teams({"stalker": 1, "zealot": 2}, 5, rng)
        orders.add(tuple(allies))
        extras.update(enemies[3:])
    assert len(orders) == 3 and extras == {"stalker", "zealot"}


def test_every_zero_shot_smacv2_task_builds_for_smacv2():
    suite = yaml.safe_load((SUITES_DIR / "zero_shot_smacv2.yaml").read_text())
    for task in suite["tasks"].values():
        args = SmaxArgs(**task["args"])
        splits = {s: [Comp(**c) for c in task[s]] for s in ("train", "validation", "test")}
        Smacv2Backend.check_task(args, splits)
        comps = [c for cs in splits.values() for c in cs]
        spec = Smacv2Backend.describe(args, comps)
        assert (spec.max_agents, spec.n_actions, spec.obs_features) == (8, 6 + 8, 21)
        for comp in comps:
            config = capability_config(args, comp, seed=0)
            assert (config["n_units"], config["n_enemies"]) == (comp.allies, comp.n_enemies)
            assert config["team_gen"]["unit_types"] == list(RACES[args.race])


def test_maps_larger_than_sc2s_are_refused():
    with pytest.raises(ConfigError, match="32x32") as info:
        Smacv2Backend.check_task(SmaxArgs(map_size=48), {"train": [Comp(allies=3)]})
    assert info.value.problems[0].path == ("args", "map_size")
    with pytest.raises(ConfigError, match="unknown unit type"):
        Smacv2Backend.check_task(SmaxArgs(race="zerg"), {"train": [Comp(allies=3, units={"marine": 3})]})
    with pytest.raises(ConfigError, match="one race") as info:  # SMAX's mixed-race teams do not exist in SC2
        Smacv2Backend.check_task(SmaxArgs(race="any"), {"train": [Comp(allies=3)]})
    assert info.value.problems[0].path == ("args", "race")


def test_mix_and_units_give_the_same_exact_counts():
    args = SmaxArgs(race="zerg")
    by_mix = capability_config(args, Comp(allies=5, mix=[4, 1]))["team_gen"]
    by_units = capability_config(args, Comp(allies=5, units={"zergling": 4, "hydralisk": 1}))["team_gen"]
    assert by_mix == by_units and by_mix["units"] == {"zergling": 4, "hydralisk": 1}


# ---------------------------------------------------------------------------------------------
# The game pool. StarCraft II cannot run here, so these games are scripted stand-ins (each
# battle lasts 2 + composition index steps); the pool bookkeeping is the backend's real code.


class StandInProcess:
    def __init__(self) -> None:
        self.closed = False
        self.steps_left = 0

    def close(self) -> None:
        self.closed = True


class ScriptedBackend(Smacv2Backend):
    launched: list[_Game] = []

    def make_env(self, composition_index: int) -> _Game:
        comp = self.compositions[composition_index]
        game = _Game(StandInProcess(), sc2_layout(self.args.race, comp.allies, comp.n_enemies),
                     (self.args.race, comp.allies, comp.n_enemies))
        self.launched.append(game)
        return game

    def reset_env(self, env: _Game, composition_index: int, seed: int) -> Frame:
        assert not env.env.closed and env.key[1:] == (self.compositions[composition_index].allies,
                                                      self.compositions[composition_index].n_enemies)
        env.env.steps_left = 2 + composition_index
        return self._scripted_frame(env)

    def step_env(self, env: _Game, composition_index: int, actions: np.ndarray) -> Outcome:
        env.env.steps_left -= 1
        return Outcome(self._scripted_frame(env), 1.0, terminated=env.env.steps_left == 0, truncated=False)

    def _scripted_frame(self, game: _Game) -> Frame:
        n, m = game.layout.n_agents, game.layout.n_enemies
        avail = np.zeros((n, 6 + m), bool)
        avail[:, 1] = True
        game.frame = frame_from_arrays(np.zeros((n, game.layout.obs_size)), np.ones(game.layout.state_size),
                                       avail, game.layout, self.spec)
        return game.frame


@pytest.fixture
def pool(monkeypatch):
    fresh = GamePool()
    monkeypatch.setattr(smacv2_module, "GAMES", fresh)
    ScriptedBackend.launched = []
    return fresh


def play_out(env: Smacv2Backend, seed: int) -> None:
    step = env.reset(seed)
    while not step.done.all():
        step = env.step(np.ones((env.num_envs, env.spec.max_agents), np.int64))


def test_games_are_shared_by_team_size_and_across_backends(pool):
    args = SmaxArgs(race="protoss")
    train = ScriptedBackend(args, [Comp(allies=3), Comp(allies=3, mix=[3, 0]), Comp(allies=4)], num_envs=6, seed=0)
    play_out(train, seed=1)
    # Unit mixes of one size share games: at most one game per slot, all idle after the episode.
    sizes = [g.key[1] for g in ScriptedBackend.launched]
    assert len(sizes) == 6 and set(sizes) <= {3, 4}
    assert sum(len(gs) for gs in pool.idle.values()) == 6 and train.games == [None] * 6
    for seed in range(2, 6):  # later batches reuse them, launching only for a size drawn more often
        play_out(train, seed)
    launched = len(ScriptedBackend.launched)
    assert launched <= 2 * 6  # never more games of a size than slots (one per slot and composition: 18)

    evaluation = ScriptedBackend(args, [Comp(allies=3, mix=[1, 2])], num_envs=2, seed=9)
    step = evaluation.reset(0)
    assert len(ScriptedBackend.launched) == launched  # the training games of size 3 serve evaluation
    held = [g for g in evaluation.games if g is not None]
    assert len(held) == 2
    train.close()  # ends the idle games, not those another backend is playing
    assert all(not g.env.closed for g in held)
    assert all(g.env.closed for g in ScriptedBackend.launched if g not in held)
    while not step.done.all():
        step = evaluation.step(np.ones((2, 3), np.int64))
    assert step.reward.shape == (2,) and evaluation.games == [None, None]
    evaluation.close()
    assert all(g.env.closed for g in ScriptedBackend.launched) and not pool.idle


def test_a_game_is_given_back_as_soon_as_its_episode_ends(pool):
    args = SmaxArgs(race="terran")
    env = ScriptedBackend(args, [Comp(allies=2), Comp(allies=2, enemies=3)], num_envs=8, seed=0,
                          weights=[1.0, 1.0])
    step = env.reset(3)
    short = step.composition == 0  # 2-step battles; the others last 3 steps
    assert short.any() and (~short).any()
    for _ in range(2):
        step = env.step(np.ones((8, 2), np.int64))
    assert step.done.tolist() == short.tolist()
    assert [g is None for g in env.games] == short.tolist()
    assert len(pool.idle[("terran", 2, 2)]) == short.sum()
    env.close()


def test_a_forked_process_does_not_drive_its_parents_games():
    pool = GamePool()
    pool.give(("zerg", 3, 3), StandInProcess())
    pool.pid = -1  # as seen from a child process after a fork
    fresh = StandInProcess()
    assert pool.take(("zerg", 3, 3), lambda: fresh) is fresh and not pool.idle
