"""The SMAX backend: team generation within a race, entity observations and masks, rewards,
determinism, the PettingZoo view, and bad suite input.

Every backend here is sized for at most 4 v 4 units (one compiled program shared by the whole
module: a JAX compilation costs seconds).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

from harness.api import Step  # noqa: E402
from harness.cli import main  # noqa: E402
from scenarios.parallel_env import BackendParallelEnv  # noqa: E402
from scenarios.smax import SmaxBackend  # noqa: E402
from scenarios.smax_spec import OBS_FEATURES, SMAX_UNIT_TYPES, STATE_FEATURES, SmaxArgs  # noqa: E402
from scenarios.smax_spec import SmaxComposition as Comp  # noqa: E402

F = {name: i for i, name in enumerate(OBS_FEATURES)}
G = {name: i for i, name in enumerate(STATE_FEATURES)}
TYPE_COLS = slice(G["type_marine"], G["type_marine"] + len(SMAX_UNIT_TYPES))
MAX = [Comp(allies=4)]  # include in every backend so they all share the 4v4 program


def make(comps: list[Comp], num_envs: int = 16, seed: int = 0, **args: object) -> SmaxBackend:
    return SmaxBackend(SmaxArgs(**args), comps, num_envs, seed)


def random_actions(step: Step, rng: np.random.Generator) -> np.ndarray:
    noise = rng.random(step.avail_actions.shape)
    return np.where(step.avail_actions, noise, -1.0).argmax(-1)


MOVES = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])  # SMAX's north, east, south, west


def focus_fire(step: Step, rng: np.random.Generator) -> np.ndarray:
    """Scripted tactics that win some battles: shoot the first enemy in range, else walk
    towards the enemies' centre (read from the global state)."""
    enemies = step.state_mask & (step.state[..., G["is_enemy"]] == 1)
    xy = step.state[..., G["x"] : G["y"] + 1]
    centre = (xy * enemies[..., None]).sum(1) / np.maximum(enemies.sum(1), 1)[:, None]  # [B, 2]
    own = step.obs[:, :, 0, F["x"] : F["y"] + 1]  # [B, A, 2]
    move = ((centre[:, None] - own) @ MOVES.T).argmax(-1)
    attack = step.avail_actions[..., 5:]
    return np.where(attack.any(-1), 5 + attack.argmax(-1), move)


def play(env: SmaxBackend, seed: int | None, policy=random_actions) -> tuple[list[Step], np.ndarray]:
    rng = np.random.default_rng(0)
    steps = [env.reset(seed)]
    returns = np.zeros(env.num_envs)
    while not steps[-1].done.all():
        steps.append(env.step(policy(steps[-1], rng)))
        returns += steps[-1].reward
        assert len(steps) <= env.spec.episode_limit + 1
    return steps, returns


@pytest.fixture(scope="module")
def mixed() -> tuple[SmaxBackend, list[Step], np.ndarray]:
    """2v2, 3v4 and 4v4 in one batch, played to the end with scripted focus fire."""
    env = make([Comp(allies=2), Comp(allies=3, enemies=4), *MAX], num_envs=24, seed=3, race="terran")
    steps, returns = play(env, seed=3, policy=focus_fire)
    return env, steps, returns


def test_spec_covers_the_largest_composition() -> None:
    spec = SmaxBackend.describe(SmaxArgs(), [Comp(allies=3), Comp(allies=6, enemies=8)])
    assert (spec.max_agents, spec.max_entities, spec.max_state_entities) == (6, 14, 14)
    assert spec.n_actions == 5 + 8
    assert (spec.obs_features, spec.state_features) == (len(OBS_FEATURES), len(STATE_FEATURES))


def test_steps_match_the_spec(mixed) -> None:
    env, steps, _ = mixed
    for step in steps:
        step.validate(env.spec)
        assert step.obs.shape == (24, 4, 8, len(OBS_FEATURES))


def test_masks_follow_each_composition(mixed) -> None:
    env, steps, _ = mixed
    first = steps[0]
    sizes = {0: (2, 2), 1: (3, 4), 2: (4, 4)}
    assert set(first.composition) == {0, 1, 2}
    for b, c in enumerate(first.composition):
        allies, enemies = sizes[int(c)]
        assert first.agent_mask[b].tolist() == [True] * allies + [False] * (4 - allies)
        assert first.state_mask[b].tolist() == [True] * allies + [False] * (4 - allies) + [True] * enemies + [False] * (4 - enemies)
        # Attacks on enemy slots the composition lacks are never available.
        assert not first.avail_actions[b, :, 5 + enemies :].any()
        # Padded agents exist in no one's view, and see nothing themselves.
        assert not first.obs_mask[b, allies:].any()


def test_own_entity_first_then_allies_then_enemies(mixed) -> None:
    _, steps, _ = mixed
    step = steps[0]
    alive = step.agent_mask
    kinds = step.obs[..., [F["is_self"], F["is_ally"], F["is_enemy"]]]
    assert (kinds[..., 0, 0][alive] == 1).all() and step.obs_mask[..., 0][alive].all()
    assert (kinds[:, :, 1:4, 0] == 0).all()  # self only in row 0
    visible = step.obs_mask
    assert (kinds[:, :, 1:4, 1][visible[:, :, 1:4]] == 1).all()  # rows 1..3: the other allies
    assert (kinds[:, :, 4:, 2][visible[:, :, 4:]] == 1).all()  # rows 4..7: the enemies
    # The own row's relative position is zero, and every visible unit is within sight (< 1).
    assert np.allclose(step.obs[..., 0, F["rel_x"] : F["rel_y"] + 1][alive], 0)
    assert (step.obs[..., F["distance"]][visible] < 1).all()
    assert (step.obs[~visible] == 0).all()


def test_reset_plays_the_compositions_it_is_given() -> None:
    """`reset_compositions` sets each env's battle (what evaluation uses to play every
    composition in one batch); `reset` draws each by weight. Bad indices are refused."""
    env = make([Comp(allies=2), Comp(allies=3, enemies=4), *MAX], num_envs=6, seed=5)
    wanted = np.array([2, 0, 1, 1, 0, 2])
    step = env.reset_compositions(7, wanted)
    assert step.composition.tolist() == wanted.tolist()
    assert step.agent_mask.sum(1).tolist() == [4, 2, 3, 3, 2, 4]
    assert step.state_mask[:, 4:].sum(1).tolist() == [4, 2, 4, 4, 2, 4]
    again = env.reset_compositions(7, wanted)  # the same seed and compositions: the same battles
    np.testing.assert_array_equal(again.state, step.state)
    for bad in (np.array([0, 1, 2, 3, 0, 0]), np.array([0, 1])):
        with pytest.raises(ValueError, match="compositions must be"):
            env.reset_compositions(7, bad)


def test_unit_types_stay_within_the_race() -> None:
    for race, allowed in {"protoss": {"stalker", "zealot"}, "zerg": {"zergling", "hydralisk"}}.items():
        step = make(MAX, seed=1, race=race).reset()
        types = step.state[..., TYPE_COLS].argmax(-1)[step.state_mask]
        assert {SMAX_UNIT_TYPES[t] for t in np.unique(types)} == allowed


def test_race_any_draws_every_races_units_mirrored_and_refuses_a_two_type_mix() -> None:
    """`race: any` is JaxMARL's smacv2_N_units: each unit drawn from all six types, the enemies
    mirroring the allies; `mix` (two counts) cannot say which six types."""
    step = make(MAX, seed=4, race="any").reset()
    types = step.state[..., TYPE_COLS].argmax(-1)
    assert set(np.unique(types[step.state_mask])) == set(range(len(SMAX_UNIT_TYPES)))
    assert (types[:, :4] == types[:, 4:]).all()
    from harness.errors import ConfigError
    from scenarios.smax_spec import check_compositions

    with pytest.raises(ConfigError, match="two unit types"):
        check_compositions(SmaxArgs(race="any"), {"train": [Comp(allies=2, mix=[1, 1])]})


def test_exact_unit_counts_and_mirrored_enemies() -> None:
    step = make([Comp(allies=4, units={"stalker": 1, "zealot": 3})], seed=2).reset()
    types = step.state[..., TYPE_COLS].argmax(-1)  # [B, 8]
    stalker, zealot = SMAX_UNIT_TYPES.index("stalker"), SMAX_UNIT_TYPES.index("zealot")
    assert ((types[:, :4] == stalker).sum(1) == 1).all() and ((types[:, :4] == zealot).sum(1) == 3).all()
    assert (np.sort(types[:, 4:], 1) == np.sort(types[:, :4], 1)).all()
    # The stalker's slot is shuffled between episodes, not always the first.
    assert len(set((types[:, :4] == stalker).argmax(1))) > 1


def test_reflect_starts_each_team_on_its_own_half() -> None:
    step = make(MAX, seed=4, start_positions="reflect").reset()
    x = step.state[..., G["x"]]  # map-centred
    assert (x[:, :4] < 0.02).all() and (x[:, 4:] > -0.02).all()


def test_surround_starts_one_team_in_the_centre() -> None:
    step = make(MAX, seed=5, start_positions="surround").reset()
    xy = step.state[..., G["x"] : G["y"] + 1]
    spread = np.linalg.norm(xy - xy.mean(axis=1, keepdims=True), axis=-1)
    centred_allies = (np.abs(xy[:, :4]) < 0.1).all(axis=(1, 2))
    centred_enemies = (np.abs(xy[:, 4:]) < 0.1).all(axis=(1, 2))
    assert (centred_allies ^ centred_enemies).all() and spread.max() > 0.2


def _map_positions(step: Step, size: float = 32.0) -> np.ndarray:
    """[B, units, 2] positions in map units (the state holds them map-centred and scaled)."""
    return (step.state[..., G["x"] : G["y"] + 1] + 0.5) * size


def test_smax_starts_each_team_in_a_clump_on_its_own_side() -> None:
    """JaxMARL's fixed maps: allies within +-2 of (8, 16) and enemies of (24, 16) on a 32 map;
    the collision push afterwards moves a marine at most 3 neighbours x 0.375."""
    three_m = Comp(allies=3, units={"marine": 3})
    step = make([three_m, *MAX], seed=6, race="terran", start_positions="smax").reset()
    xy, alive = _map_positions(step), step.state_mask
    box = 2.0 + 3 * 0.375
    allies, enemies = np.zeros_like(alive), np.zeros_like(alive)
    allies[:, :4], enemies[:, 4:] = alive[:, :4], alive[:, 4:]
    assert (np.abs(xy[allies] - [8.0, 16.0]) <= box).all()
    assert (np.abs(xy[enemies] - [24.0, 16.0]) <= box).all()
    assert ((xy[alive] > 0) & (xy[alive] < 32)).all()
    # Uniform noise, not one point per team; 3v3 and 4v4 battles both drawn.
    assert xy[allies].std(0).min() > 0.5 and set(step.composition) == {0, 1}
    again = make([three_m, *MAX], seed=6, race="terran", start_positions="smax").reset()
    other = make([three_m, *MAX], seed=7, race="terran", start_positions="smax").reset()
    assert np.array_equal(again.state, step.state) and not np.array_equal(other.state, step.state)


def test_smax_starts_keep_unit_types_in_slot_order() -> None:
    """As JaxMARL's 2s3z lists its stalkers first, exact counts stay in SMAX's type order."""
    comp = Comp(allies=4, units={"zealot": 3, "stalker": 1}, start_positions="smax")
    step = make([comp], seed=2).reset()
    types = step.state[..., TYPE_COLS].argmax(-1)
    expected = [SMAX_UNIT_TYPES.index(t) for t in ("stalker", "zealot", "zealot", "zealot")] * 2
    assert (types == expected).all()


def test_smax_starts_override_per_composition() -> None:
    """A composition's own `smax` starts beside the task's reflect starts, in one batch."""
    clumped = Comp(allies=4, start_positions="smax")
    step = make([clumped, Comp(allies=4, enemies=3)], seed=8, start_positions="reflect").reset()
    xy = _map_positions(step)
    is_clumped = step.composition == 0
    assert is_clumped.any() and (~is_clumped).any()
    spread = np.abs(xy[:, :4, 1] - 16.0).max(1)  # allies' distance from the middle row
    assert (spread[is_clumped] <= 2.0 + 3 * 0.625).all() and spread[~is_clumped].max() > 4.0


def test_smacv2_refuses_smax_starts() -> None:
    """StarCraft II's 10gen maps have no fixed-map clumps: backend=smacv2 says so before running."""
    from harness.errors import ConfigError
    from scenarios.smacv2 import Smacv2Backend

    with pytest.raises(ConfigError, match="SMAX-only") as info:
        Smacv2Backend.check_task(SmaxArgs(race="terran"), {"train": [Comp(allies=3)],
                                                            "test": [Comp(allies=3, start_positions="smax")]})
    assert info.value.problems[0].path == ("test", 0, "start_positions")
    with pytest.raises(ConfigError, match="SMAX-only"):
        Smacv2Backend.check_task(SmaxArgs(start_positions="smax"), {"train": [Comp(allies=3)]})


def test_refil_starts_face_each_other_across_the_centre_at_any_angle() -> None:
    """REFIL's symmetric armies: army centres 14 apart through the map's centre, each unit
    within 1 (group) + 1 (unit) of its army's centre before the collision push."""
    step = make(MAX, num_envs=64, seed=9, start_positions="refil").reset()
    xy = _map_positions(step)
    allies, enemies = xy[:, :4].mean(1), xy[:, 4:].mean(1)
    assert np.abs((allies + enemies) / 2 - 16.0).max() < 2.5
    gap = np.linalg.norm(allies - enemies, axis=-1)
    assert (np.abs(gap - 14.0) < 4.0).all()
    box = 2.0 + 3 * 0.625  # jitter + spread, plus the push of up to 3 neighbours
    assert (np.abs(xy[:, :4] - allies[:, None]) <= 2 * box).all()
    # A uniform angle: the allies' side of the centre lands in every quadrant.
    quadrant = (allies[:, 0] > 16).astype(int) * 2 + (allies[:, 1] > 16)
    assert set(quadrant) == {0, 1, 2, 3}


def test_refil_starts_place_each_unit_type_group_together() -> None:
    """Each (team, type) group sits around its own point: units of one group lie within 2 + push
    of each other, and two groups of one army are placed apart (not on one point) in some battles."""
    comp = Comp(allies=4, units={"stalker": 2, "zealot": 2})
    step = make([comp, *MAX], num_envs=64, seed=10, start_positions="refil").reset()
    xy, types = _map_positions(step), step.state[..., TYPE_COLS].argmax(-1)
    fixed = step.composition == 0
    groups = [(slice(0, 4), t) for t in (2, 3)] + [(slice(4, 8), t) for t in (2, 3)]
    centres = []
    for team, t in groups:
        members = [xy[b, team][types[b, team] == t] for b in np.nonzero(fixed)[0]]
        assert all(len(m) == 2 for m in members)
        assert max(np.abs(m[0] - m[1]).max() for m in members) <= 2.0 + 2 * 0.625
        centres.append(np.array([m.mean(0) for m in members]))
    assert np.linalg.norm(centres[0] - centres[1], axis=-1).max() > 0.5


def test_mixes_all_draws_every_mix_equally_often() -> None:
    """`mixes: all` draws among the 5 mixes of 4 units uniformly, not per unit (which would make
    2+2 six times as often as 0+4); enemies mirror the allies' mix."""
    from scipy.stats import chisquare

    env = make([Comp(allies=4, mixes="all")], num_envs=256, seed=11, start_positions="refil")
    counts = np.zeros(5, int)
    for seed in range(4):
        step = env.reset(seed)
        types = step.state[..., TYPE_COLS].argmax(-1)
        stalkers = (types[:, :4] == SMAX_UNIT_TYPES.index("stalker")).sum(1)
        assert (np.sort(types[:, :4], 1) == np.sort(types[:, 4:], 1)).all()
        counts += np.bincount(stalkers, minlength=5)
    assert chisquare(counts).pvalue > 0.01 and counts.min() > 150, counts


def test_mixes_listed_draw_only_those() -> None:
    env = make([Comp(allies=4, mixes=[[4, 0], [1, 3]])], num_envs=64, seed=12)
    types = env.reset().state[..., TYPE_COLS].argmax(-1)
    stalkers = (types[:, :4] == SMAX_UNIT_TYPES.index("stalker")).sum(1)
    assert set(stalkers) == {4, 1}
    label = SmaxBackend.composition_name(SmaxArgs(), Comp(allies=4, mixes=[[4, 0], [1, 3]]))
    assert label == "4v4 mixes 4+0,1+3"
    assert SmaxBackend.composition_name(SmaxArgs(), Comp(allies=6, mixes="all")) == "6v6 any mix"


@pytest.mark.parametrize(("comp", "message"), [
    ({"allies": 4, "mixes": [[1, 2]]}, "adding up to allies"),
    ({"allies": 4, "mixes": [[1, 3], [1, 3]]}, "lists a mix twice"),
    ({"allies": 4, "mixes": []}, "at least one"),
    ({"allies": 4, "mixes": "some"}, "all"),
    ({"allies": 4, "mixes": "all", "mix": [1, 3]}, "at most one of"),
])
def test_bad_mixes_are_refused(comp: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Comp(**comp)


def test_mixes_need_a_race_of_two_types() -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="race any has 6") as info:
        SmaxBackend.check_task(SmaxArgs(race="any"), {"train": [Comp(allies=3, mixes="all")]})
    assert info.value.problems[0].path == ("train", 0, "mixes")


def test_smacv2_refuses_refil_starts_and_mixes() -> None:
    from harness.errors import ConfigError
    from scenarios.smacv2 import Smacv2Backend

    with pytest.raises(ConfigError, match="start_positions refil is SMAX-only"):
        Smacv2Backend.check_task(SmaxArgs(start_positions="refil"), {"train": [Comp(allies=3)]})
    with pytest.raises(ConfigError, match="mixes is SMAX-only") as info:
        Smacv2Backend.check_task(SmaxArgs(), {"train": [Comp(allies=3)], "test": [Comp(allies=6, mixes="all")]})
    assert info.value.problems[0].path == ("test", 0, "mixes")


def test_won_battles_pay_damage_plus_bonus(mixed) -> None:
    """Reward = enemy health removed / enemy count, + 1 for a win: a win pays exactly 2."""
    _, steps, returns = mixed
    won = steps[-1].won
    assert won.any() and not won.all(), "focus fire should win some of these battles and lose others"
    assert np.allclose(returns[won], 2.0, atol=1e-4)
    assert (returns[~won] < 1.0 + 1e-4).all() and (returns >= 0).all()
    # A won battle ended by the rules (no bootstrapping), with an ally alive and no enemy left.
    last = steps[-1]
    assert last.terminated[won].all()
    assert (last.agent_mask[won].any(1)).all()


def test_finished_envs_freeze_until_reset(mixed) -> None:
    _, steps, _ = mixed
    done_at = np.array([next(t for t, s in enumerate(steps) if s.done[b]) for b in range(24)])
    assert len(set(done_at)) > 1, "episodes should end at different times"
    for b, t in enumerate(done_at):
        for later in steps[t + 1 :]:
            assert later.done[b] and later.reward[b] == 0
            assert np.array_equal(later.obs[b], steps[t].obs[b])


def test_same_seed_same_battles_other_seed_other_battles() -> None:
    a, b, c = (make([Comp(allies=3), *MAX], seed=s) for s in (7, 7, 8))
    run_a, run_b, run_c = play(a, seed=None), play(b, seed=None), play(c, seed=None)
    for x, y in zip(run_a[0], run_b[0], strict=True):
        for name in x.__dict__:
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert not np.array_equal(run_a[0][0].state, run_c[0][0].state)


def test_rng_state_round_trip() -> None:
    env = make(MAX, seed=9)
    env.reset()
    saved = env.rng_state()
    first = env.reset()
    other = make(MAX, seed=123)
    other.set_rng_state(saved)
    assert np.array_equal(other.reset().state, first.state)


def test_pettingzoo_parallel_api() -> None:
    from pettingzoo.test import parallel_api_test

    env = BackendParallelEnv(SmaxBackend, SmaxArgs(), MAX, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel_api_test(env, num_cycles=25)


BAD = """\
metric: win_rate
seeds: 1
budget: {{env_steps: 100, eval_every: 50, eval_episodes: 2}}
algorithms: [qmix]
tasks:
  battle:
    env: smax
    args: {args}
    train: [{train}]
"""


@pytest.mark.parametrize("args, train, expected", [
    ("{race: protoss}", "{allies: 3, units: {stalker: 2, marine: 1}}", ["tasks.battle.train[0].units.marine",
                                                                       "unknown unit type", "stalker, zealot"]),
    ("{race: protoss}", "{allies: 0}", ["tasks.battle.train[0].allies", "greater than or equal to 1"]),
    ("{race: protoss}", "{allies: 40, enemies: 40}", ["tasks.battle.train[0].allies", "do not fit", "at most 64"]),
    ("{race: elves}", "{allies: 3}", ["tasks.battle.args.race", "protoss", "elves"]),
    ("{race: terran}", "{allies: 3, units: {marine: 1}}", ["tasks.battle.train[0]", "add up to 1"]),
])
def test_bad_env_args_exit_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: str,
                                                 train: str, expected: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(BAD.format(args=args, train=train)))
    code = main(["validate", f"suite={path}"])
    text = " ".join((capsys.readouterr().err).split())
    assert code == 2, text
    assert str(path.name) in text and "Traceback" not in text
    for piece in expected:
        assert piece in text, f"{piece!r} not in {text!r}"


def test_zero_shot_sc2_follows_mipis_split() -> None:
    """zero_shot_sc2 (MIPI's protocol on REFIL's maps): per task, training teams are every mix of
    3-5 units but the held-out 5-unit validation mix, weighted so every team is equally likely;
    test teams have 6, 7 and 8 units of any mix; every battle uses REFIL's layout."""
    from harness.config import load_suite

    suite = load_suite("zero_shot_sc2")
    assert [t.name for t in suite.tasks] == ["sz", "mm", "zh"]
    for task in suite.tasks:
        args = SmaxArgs.model_validate(task.args)
        assert args.start_positions == "refil" and args.episode_limit == 150
        teams: dict[str, list[tuple[tuple[int, int], float]]] = {}
        for split, comps in task.splits.items():
            teams[split] = []
            for comp in comps:
                spec = Comp.model_validate(comp.spec.model_dump())
                firsts = spec.first_type_counts() or [spec.mix[0]]
                teams[split] += [((first, spec.allies - first), comp.weight / len(firsts)) for first in firsts]
        held_out = {team for team, _ in teams["validation"]}
        every_team = {(first, n - first) for n in (3, 4, 5) for first in range(n + 1)}
        assert held_out == {(2, 3)}
        assert {team for team, _ in teams["train"]} == every_team - held_out
        assert len({weight for _, weight in teams["train"]}) == 1  # every training team equally likely
        assert {sum(team) for team, _ in teams["test"]} == {6, 7, 8} and len(teams["test"]) == 7 + 8 + 9
