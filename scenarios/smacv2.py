"""SMACv2 on StarCraft II: the real game behind the SMAX suites (`backend=smacv2`).

The SC2 suites are written for SMAX (`env: smax`); `harness run suite=zero_shot_smacv2
backend=smacv2` plays the same tasks in StarCraft II through SMACv2's capability wrapper.
Both backends share the task and composition models (`SmaxArgs`, `SmaxComposition`), so a
suite validates the same way for either. The game, SMACv2 and its maps are not on PyPI:
see docs/smacv2.md, and `missing_requirements` says what is missing on this machine.

What a composition becomes in SMACv2 (`capability_config`):
- race -> map `10gen_<race>`, with unit types restricted to SMAX's two types of that race
  (stalker/zealot, marine/marauder, zergling/hydralisk: no colossus, medivac or baneling);
- allies / enemies -> `n_units` / `n_enemies`;
- `type_probs` (default uniform) -> SMACv2's `weighted_teams`; exact counts (`units` or
  `mix`) -> `harness_exact_teams`, a distribution defined here (SMACv2 has none that fixes
  counts). Either way enemies mirror the allies' types and extra enemies are drawn;
- start positions: surround -> `surrounded`, reflect -> `reflect_position`,
  surround_and_reflect -> `surrounded_and_reflect` with p = 0.5, on a square of side
  `map_size` (at most 32: every 10gen map is the 32x32 `32x32_flat`); SMAX's fixed-map
  layout `smax` has no 10gen counterpart and is refused.

Episodes end at `args.episode_limit` env steps (the harness's limit, not the maps' 200), so
the EnvSpec is the same as SMAX's. Only race, start_positions, map_size and episode_limit
apply; SMAX's won_battle_bonus, enemy_attack_mode and see_enemy_actions do not (SMACv2's
reward, the game's built-in AI at difficulty 7, no enemy actions in the observations).

Observation of agent i (one row per entity, the same F = 21 features for every race and
team size): row 0 is agent i itself, rows 1..a-1 the other allies in slot order (SMACv2's
order), then padding up to `max_allies`, and enemy k always in row `max_allies + k`, so
attack action 6 + k and enemy row max_allies + k name the same unit (as in SMAX):

    is_self is_ally is_enemy   kind of row
    health shield              fractions of the maximum (shield: protoss only, else 0)
    rel_x rel_y distance       relative to agent i, divided by its sight range (0 in own row)
    shootable                  enemy rows: within agent i's shooting range
    move_north ... move_west   own row: SMACv2's move features (that move is possible)
    x y                        own row: own position / map size - 0.5
    type_<t>                   one-hot over SMAX's six unit types (scenarios.smax_spec.SMAX_UNIT_TYPES)

Masks follow SMACv2's visibility: it zeroes allies and enemies out of sight range or dead,
so an ally row is present when its `visible` flag is set and an enemy row when any of its
features is non-zero; the own row is present while the agent is alive. The state lists
allies in slot order (padded to `max_allies`), then enemies, with features
`is_ally is_enemy health shield x y cooldown type_<t>` (x, y from the map centre divided
by the playable width; cooldown for allies only); dead units are masked.

Actions: SMACv2's `6 + n_enemies`: no-op (dead agents only), stop, north, south, east,
west, attack enemy k. SMAX has `5 + n_enemies` in another order, so the two backends'
policies are not interchangeable. The reward is SMACv2's: damage plus kills plus a win
bonus, scaled so that a full win is worth about 20 per episode (SMACv2 sets the scale from
the enemy team of the first battle a game plays). `won` is its `battle_won`. SMAX and
SMACv2 numbers are not comparable.

Every SMACv2 environment is a StarCraft II process, and its team sizes are fixed when it is
built. So rather than one per batch slot and composition (what `PythonBatchBackend` keeps
for cheap Python envs), games live in a per-process pool keyed by (race, allies, enemies):
a slot takes one at each reset, loads its composition's team and start-position
distributions into it, and gives it back when the episode ends. Unit mixes of one team size
and the training and evaluation backends of a run share them; `close` ends the idle ones.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import EnvSpec, Step
from harness.errors import ConfigError
from harness.registry import register_env
from scenarios.python_batch import Frame, Outcome, PythonBatchBackend
from scenarios.smax_spec import (
    RACES,
    SMAX_UNIT_TYPES,
    SmaxArgs,
    SmaxComposition,
    SmaxTasks,
    exact_units,
)

SC2_MAPS = {"protoss": "10gen_protoss", "terran": "10gen_terran", "zerg": "10gen_zerg"}
# The unit-type bits of the 10gen maps, in SMACv2's order (its get_unit_type_id). The third
# type of each race has no SMAX counterpart and is never drawn here.
SC2_TYPE_BITS = {
    "protoss": ("stalker", "zealot", "colossus"),
    "terran": ("marine", "marauder", "medivac"),
    "zerg": ("zergling", "hydralisk", "baneling"),
}
SC2_MAP_SIDE = 32.0  # every 10gen map is SMACv2's 32x32_flat
MAP_FILE = Path("Maps") / "SMAC_Maps" / "32x32_flat.SC2Map"
N_NON_ATTACK = 6  # no-op, stop, north, south, east, west
N_MOVES = 4
EXACT_TEAMS = "harness_exact_teams"
START_DISTRIBUTIONS = {
    "surround": "surrounded",
    "reflect": "reflect_position",
    "surround_and_reflect": "surrounded_and_reflect",
}

SMACV2_PIP = "pip install git+https://github.com/oxwhirl/smacv2.git"
SC2_DOWNLOAD = "https://github.com/Blizzard/s2client-proto#downloads"
MAPS_DOWNLOAD = "https://github.com/oxwhirl/smacv2/releases/download/maps/SMAC_Maps.zip"

# SMACv2's options for the paper's 10gen tasks, minus what this parser does not read (the
# state's last actions). continuing_episode only makes SMACv2 flag time-outs in `info`,
# which tells a truncation from a battle's end.
ENV_KWARGS: dict[str, Any] = {
    "conic_fov": False,
    "use_unit_ranges": True,
    "min_attack_range": 2,
    "obs_own_pos": True,
    "obs_all_health": True,
    "obs_own_health": True,
    "obs_last_action": False,
    "obs_pathing_grid": False,
    "obs_terrain_height": False,
    "obs_timestep_number": False,
    "state_last_action": False,
    "state_timestep_number": False,
    "fully_observable": False,
    "continuing_episode": True,
}

TYPE_FEATURES = [f"type_{t}" for t in SMAX_UNIT_TYPES]
OBS_FEATURES = [
    "is_self", "is_ally", "is_enemy", "health", "shield", "rel_x", "rel_y", "distance", "shootable",
    "move_north", "move_south", "move_east", "move_west", "x", "y", *TYPE_FEATURES,
]
STATE_FEATURES = ["is_ally", "is_enemy", "health", "shield", "x", "y", "cooldown", *TYPE_FEATURES]
OBS = {name: i for i, name in enumerate(OBS_FEATURES)}
STATE = {name: i for i, name in enumerate(STATE_FEATURES)}


# ---------------------------------------------------------------------------------------------
# Requirements: the smacv2 package, the game and the map


def sc2_dir(environ: Mapping[str, str], home: Path, platform: str) -> Path:
    """Where pysc2 looks for StarCraft II: $SC2PATH when set, else the platform's default."""
    if environ.get("SC2PATH"):
        return Path(environ["SC2PATH"]).expanduser()
    if platform == "darwin":
        return Path("/Applications/StarCraft II")
    if platform.startswith("win"):
        return Path("C:/Program Files (x86)/StarCraft II")
    return home / "StarCraftII"


def requirements_problem(import_error: str | None, game_dir: Path, sc2path_set: bool) -> str | None:
    """None when smacv2 imports and the game and map are in place, else what to install."""
    missing = []
    if import_error:
        missing.append(f"the smacv2 package ({import_error})")
    if not game_dir.is_dir():
        missing.append(f"StarCraft II (SC2PATH={game_dir} is not a folder)" if sc2path_set else
                       f"StarCraft II (not in its default folder {game_dir}, and SC2PATH is not set)")
    elif not (game_dir / MAP_FILE).is_file():
        missing.append(f"the SMACv2 maps ({game_dir / MAP_FILE} does not exist)")
    if not missing:
        return None
    return "\n".join([
        f"backend smacv2 needs SMACv2 and StarCraft II; missing here: {'; '.join(missing)}.",
        "  To install (details in docs/smacv2.md):",
        f"  1. {SMACV2_PIP}",
        f"  2. StarCraft II: on Linux the 4.10 package from {SC2_DOWNLOAD}; on macOS/Windows Battle.net",
        f"  3. the SMACv2 maps: unzip {MAPS_DOWNLOAD} so that $SC2PATH/{MAP_FILE.as_posix()} exists",
        "  4. export SC2PATH=<the StarCraftII folder>, unless it is ~/StarCraftII (Linux) or "
        "/Applications/StarCraft II (macOS)",
        "  Without the game, backend=smax (the default, no game needed) runs the same suites",
    ])


def smacv2_import_error() -> str | None:
    """Why SMACv2's wrapper (and with it pysc2) cannot be imported here, if it cannot."""
    try:
        import smacv2.env.starcraft2.wrapper  # noqa: F401
    except Exception as exc:  # a broken install (pysc2, protobuf) raises more than ImportError
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------------------------
# Team generation and the capability config


def exact_teams(units: Mapping[str, int], n_enemies: int,
                rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Allies with exactly `units` counts (shuffled); enemies mirror them, and enemies beyond
    the allies' count are drawn uniformly from the same types (SMAX and SMACv2 do the same)."""
    allies = [t for t, n in sorted(units.items()) for _ in range(n)]
    rng.shuffle(allies)
    types = sorted(units)
    extra = [types[i] for i in rng.integers(0, len(types), size=max(n_enemies - len(allies), 0))]
    return list(allies), (allies + extra)[:n_enemies]


class ExactTeamsDistribution:
    """SMACv2 team distribution that fixes the ally counts (registered as `harness_exact_teams`).

    SMACv2's own `fixed` distribution hands out an `item` that its team generation does not
    read, so exact compositions need this one. It follows SMACv2's distribution protocol:
    built from the capability config's `team_gen` entry (plus the `env_key`, `n_units` and
    `n_enemies` the wrapper adds), `generate()` returns the next episode's teams.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.env_key = config["env_key"]
        self.units = {t: int(config["units"].get(t, 0)) for t in config["unit_types"]}
        self.n_enemies = int(config["n_enemies"])
        self.rng = np.random.default_rng(config.get("seed"))

    def generate(self) -> dict[str, dict[str, Any]]:
        allies, enemies = exact_teams(self.units, self.n_enemies, self.rng)
        return {self.env_key: {"ally_team": allies, "enemy_team": enemies, "id": 0}}

    @property
    def n_tasks(self) -> int:
        return 1


def capability_config(args: SmaxArgs, composition: SmaxComposition, seed: int | None = None) -> dict[str, Any]:
    """SMACv2's `capability_config` for one composition (a fresh dict: the wrapper edits it)."""
    race_types = list(RACES[args.race])
    team_gen: dict[str, Any] = {"unit_types": race_types, "observe": True}
    units = exact_units(args, composition)  # `units` or `mix`
    if units is not None:
        team_gen.update(dist_type=EXACT_TEAMS, seed=seed, units={t: units.get(t, 0) for t in race_types})
    else:
        probs = composition.type_probs or dict.fromkeys(race_types, 1.0)
        weights = np.array([probs.get(t, 0.0) for t in race_types], dtype=np.float64)
        team_gen.update(dist_type="weighted_teams", weights=(weights / weights.sum()).tolist())
    mode = composition.start_positions or args.start_positions
    side = min(float(args.map_size), SC2_MAP_SIDE)
    start: dict[str, Any] = {"dist_type": START_DISTRIBUTIONS[mode], "map_x": side, "map_y": side}
    if mode == "surround_and_reflect":
        start["p"] = 0.5
    return {"n_units": composition.allies, "n_enemies": composition.n_enemies,
            "team_gen": team_gen, "start_positions": start}


# zero_shot_sc2 plays REFIL's layout, which StarCraft II's 10gen maps cannot: say where to go.
SMACV2_SUITE_HINT = " (zero_shot_smacv2 is zero_shot_sc2 with SMACv2's start positions and team draws)"


def _refuse_smax_only_options(args: SmaxArgs, splits: dict[str, list[SmaxComposition]]) -> None:
    """Refuse what only SMAX can play: SMACv2's 10gen maps have no counterpart of SMAX's fixed-map
    clumps (`smax`) or of REFIL's symmetric armies (`refil`), and its team distributions no draw
    among listed mixes (`mixes`)."""
    places = [(("args", "start_positions"), args.start_positions)] + [
        ((split, i, "start_positions"), comp.start_positions)
        for split, comps in splits.items() for i, comp in enumerate(comps)
    ]
    for path, mode in places:
        if mode is not None and mode not in START_DISTRIBUTIONS:
            raise ConfigError.single(
                path, f"start_positions {mode} is SMAX-only; backend smacv2 takes one of "
                f"{', '.join(START_DISTRIBUTIONS)}{SMACV2_SUITE_HINT}", found=mode, choices=START_DISTRIBUTIONS)
    for split, comps in splits.items():
        for i, comp in enumerate(comps):
            if comp.mixes is not None:
                raise ConfigError.single(
                    (split, i, "mixes"), "mixes is SMAX-only; with backend smacv2 give one composition per mix "
                    f"(`mix: [first, second]`){SMACV2_SUITE_HINT}", found=comp.mixes)


def distribution_configs(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each distribution's config as SMACv2's wrapper hands it over: the capability config's
    entry plus `env_key` and the team sizes."""
    sizes = {"n_units": config["n_units"], "n_enemies": config["n_enemies"]}
    return {key: {**entry, "env_key": key, **sizes} for key, entry in config.items() if isinstance(entry, Mapping)}


# ---------------------------------------------------------------------------------------------
# SMACv2's flat vectors -> entity rows (pure functions of arrays and sizes)


@dataclass(frozen=True)
class Sc2Layout:
    """Block sizes of SMACv2's flat observation and state for one environment.

    The block sizes come from the env's `get_obs_*_size` functions; the columns inside each
    block follow from the shield and unit-type switches (SMACv2's get_obs_agent and
    get_state_dict, with the ENV_KWARGS options). `check` refuses anything else, such as
    another SMACv2 version with different features.
    """

    race: str
    n_agents: int
    n_enemies: int
    move_feats: int
    enemy_feats: int
    ally_feats: int
    own_feats: int
    state_size: int
    type_bits: int = 3
    own_pos: bool = True

    @property
    def shield(self) -> int:
        return 1 if self.race == "protoss" else 0  # both teams are of the task's race

    @property
    def ally_state_feats(self) -> int:
        return 4 + self.shield + self.type_bits  # health, cooldown, x, y, [shield], types

    @property
    def enemy_state_feats(self) -> int:
        return 3 + self.shield + self.type_bits  # health, x, y, [shield], types

    @property
    def obs_size(self) -> int:
        return (self.move_feats + self.n_enemies * self.enemy_feats
                + (self.n_agents - 1) * self.ally_feats + self.own_feats)

    @classmethod
    def from_env(cls, env: Any, race: str) -> Sc2Layout:
        n_enemies, enemy_feats = env.get_obs_enemy_feats_size()
        _, ally_feats = env.get_obs_ally_feats_size()
        layout = cls(race=race, n_agents=env.n_agents, n_enemies=n_enemies,
                     move_feats=env.get_obs_move_feats_size(), enemy_feats=enemy_feats,
                     ally_feats=ally_feats, own_feats=env.get_obs_own_feats_size(),
                     state_size=env.get_state_size(), type_bits=env.unit_type_bits,
                     own_pos=bool(env.obs_own_pos))
        layout.check(env.get_obs_size())
        return layout

    def check(self, obs_size: int | None = None) -> None:
        unit = 1 + self.shield + self.type_bits  # health, [shield], types
        expected = {
            "move": (self.move_feats, N_MOVES),
            "enemy": (self.enemy_feats, 4 + unit),  # shootable, distance, rel x, rel y
            "ally": (self.ally_feats, 4 + unit),  # visible, distance, rel x, rel y
            "own": (self.own_feats, unit + 2 * self.own_pos),
            "state": (self.state_size, self.n_agents * self.ally_state_feats
                      + self.n_enemies * self.enemy_state_feats),
            "obs": (obs_size if obs_size is not None else self.obs_size, self.obs_size),
        }
        wrong = [f"{k}: {got} (expected {want})" for k, (got, want) in expected.items() if got != want]
        if wrong:
            raise ValueError(f"SMACv2 feature sizes differ from what scenarios/smacv2.py parses ({', '.join(wrong)}); "
                             "another SMACv2 version or different env options?")


def _type_matrix(race: str, type_bits: int) -> np.ndarray:
    """[type_bits, 6]: SMACv2's race-specific type bit -> SMAX's global unit-type one-hot."""
    out = np.zeros((type_bits, len(SMAX_UNIT_TYPES)), np.float32)
    for bit, name in enumerate(SC2_TYPE_BITS[race][:type_bits]):
        if name in SMAX_UNIT_TYPES:
            out[bit, SMAX_UNIT_TYPES.index(name)] = 1.0
    return out


def _unit_columns(block: np.ndarray, start: int, shield: int, type_bits: int,
                  types: np.ndarray) -> dict[str, np.ndarray]:
    """health, shield and SMAX type one-hot of a [..., f] block whose health is column `start`
    and whose unit-type bits are its last `type_bits` columns."""
    zero = np.zeros(block.shape[:-1], np.float32)
    return {
        "health": block[..., start],
        "shield": block[..., start + 1] if shield else zero,
        "types": block[..., block.shape[-1] - type_bits:] @ types,
    }


def obs_entities(obs: np.ndarray, alive: np.ndarray, layout: Sc2Layout, max_allies: int,
                 max_enemies: int) -> tuple[np.ndarray, np.ndarray]:
    """SMACv2's observations [n_agents, obs_size] -> entity rows [n_agents, max_allies +
    max_enemies, F] and their mask (layout in the module docstring). `alive` [n_agents]."""
    n, m = layout.n_agents, layout.n_enemies
    obs = np.asarray(obs, np.float32).reshape(n, layout.obs_size)
    e0 = layout.move_feats
    a0 = e0 + m * layout.enemy_feats
    o0 = a0 + (n - 1) * layout.ally_feats
    enemy = obs[:, e0:a0].reshape(n, m, layout.enemy_feats)
    ally = obs[:, a0:o0].reshape(n, n - 1, layout.ally_feats)
    own = obs[:, o0:]
    types = _type_matrix(layout.race, layout.type_bits)

    rows = np.zeros((n, max_allies + max_enemies, len(OBS_FEATURES)), np.float32)
    mask = np.zeros(rows.shape[:2], bool)
    _fill_others(rows[:, 1:n], ally, "is_ally", layout, types)
    mask[:, 1:n] = ally[..., 0] > 0  # SMACv2's `visible` flag
    enemies = rows[:, max_allies:max_allies + m]
    _fill_others(enemies, enemy, "is_enemy", layout, types)
    enemies[..., OBS["shootable"]] = enemy[..., 0]
    mask[:, max_allies:max_allies + m] = np.any(enemy != 0, axis=-1)  # unseen enemies are all zeros

    me = rows[:, 0]
    me[:, OBS["is_self"]] = 1.0
    unit = _unit_columns(own, 0, layout.shield, layout.type_bits, types)
    me[:, OBS["health"]], me[:, OBS["shield"]] = unit["health"], unit["shield"]
    me[:, OBS["type_" + SMAX_UNIT_TYPES[0]]:] = unit["types"]
    me[:, OBS["move_north"]:OBS["move_west"] + 1] = obs[:, :N_MOVES]
    if layout.own_pos:
        pos = 1 + layout.shield
        me[:, OBS["x"]:OBS["y"] + 1] = own[:, pos:pos + 2] - 0.5
    mask[:, 0] = alive
    rows[~mask] = 0.0
    return rows, mask


def _fill_others(rows: np.ndarray, block: np.ndarray, kind: str, layout: Sc2Layout, types: np.ndarray) -> None:
    """Ally or enemy rows from SMACv2's [flag, distance, rel_x, rel_y, health, [shield], types] block."""
    rows[..., OBS[kind]] = 1.0
    rows[..., OBS["distance"]] = block[..., 1]
    rows[..., OBS["rel_x"]] = block[..., 2]
    rows[..., OBS["rel_y"]] = block[..., 3]
    unit = _unit_columns(block, 4, layout.shield, layout.type_bits, types)
    rows[..., OBS["health"]], rows[..., OBS["shield"]] = unit["health"], unit["shield"]
    rows[..., OBS["type_" + SMAX_UNIT_TYPES[0]]:] = unit["types"]


def state_entities(state: np.ndarray, layout: Sc2Layout, max_allies: int,
                   max_enemies: int) -> tuple[np.ndarray, np.ndarray]:
    """SMACv2's state vector -> [max_allies + max_enemies, G] rows (allies in slot order, then
    enemies from row max_allies) and their mask; anything after the unit blocks is ignored."""
    n, m = layout.n_agents, layout.n_enemies
    state = np.asarray(state, np.float32)
    fa, fe = layout.ally_state_feats, layout.enemy_state_feats
    ally = state[: n * fa].reshape(n, fa)
    enemy = state[n * fa: n * fa + m * fe].reshape(m, fe)
    types = _type_matrix(layout.race, layout.type_bits)

    rows = np.zeros((max_allies + max_enemies, len(STATE_FEATURES)), np.float32)
    mask = np.zeros(len(rows), bool)
    # Ally columns: health, cooldown, x, y, [shield], types; enemy columns: health, x, y, [shield], types.
    for block, start, kind, xy in ((ally, 0, "is_ally", 2), (enemy, max_allies, "is_enemy", 1)):
        out = rows[start:start + len(block)]
        out[:, STATE[kind]] = 1.0
        out[:, STATE["health"]] = block[:, 0]
        out[:, STATE["x"]:STATE["y"] + 1] = block[:, xy:xy + 2]
        if layout.shield:
            out[:, STATE["shield"]] = block[:, xy + 2]
        out[:, STATE["type_" + SMAX_UNIT_TYPES[0]]:] = block[:, block.shape[1] - layout.type_bits:] @ types
        mask[start:start + len(block)] = block[:, 0] > 0  # SMACv2 leaves dead units all zeros
    rows[:n, STATE["cooldown"]] = ally[:, 1]
    rows[~mask] = 0.0
    return rows, mask


def avail_rows(avail: np.ndarray, n_enemies: int, n_actions: int) -> np.ndarray:
    """SMACv2's available actions -> [n_agents, n_actions] bool. Columns past 6 + n_enemies are
    dropped: on terran maps with more allies than enemies SMACv2 adds medivac heal targets,
    and no medivac is ever drawn here."""
    avail = np.asarray(avail, dtype=bool)[:, : N_NON_ATTACK + n_enemies]
    out = np.zeros((avail.shape[0], n_actions), bool)
    out[:, : avail.shape[1]] = avail
    return out


def frame_from_arrays(obs: np.ndarray, state: np.ndarray, avail: np.ndarray, layout: Sc2Layout,
                      spec: EnvSpec) -> Frame:
    """One SMACv2 env's arrays -> the harness's Frame (entity rows sized for `spec`)."""
    max_enemies = spec.max_entities - spec.max_agents
    actions = avail_rows(avail, layout.n_enemies, spec.n_actions)
    alive = actions[:, 1]  # SMACv2 lets an agent stop exactly while it is alive
    rows, mask = obs_entities(obs, alive, layout, spec.max_agents, max_enemies)
    srows, smask = state_entities(state, layout, spec.max_agents, max_enemies)
    return Frame(obs=rows, obs_mask=mask, state=srows, state_mask=smask, avail_actions=actions, agent_mask=alive)


# ---------------------------------------------------------------------------------------------
# The backend


@dataclass
class _Game:
    """One SMACv2 environment (one StarCraft II process) and what parses its vectors."""

    env: Any
    layout: Sc2Layout
    key: tuple[str, int, int]  # race, allies, enemies: what the process can play
    frame: Frame | None = field(default=None)

    def close(self) -> None:
        self.env.close()


class GamePool:
    """This process's idle SMACv2 games, by (race, allies, enemies).

    A game is a StarCraft II process, so they are shared: a batch slot takes one for each
    episode and gives it back when the episode ends. Compositions of one team size (unit
    mixes, start positions) share games, and so do the training and evaluation backends of a
    run, which play one after the other. The games a process keeps are then about, per team
    size, the most episodes of that size ever played side by side.
    """

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int, int], list[Any]] = {}
        self.pid = os.getpid()

    def take(self, key: tuple[str, int, int], launch: Callable[[], Any]) -> Any:
        if self.pid != os.getpid():  # a forked child: the parent's games are not its to drive
            self.idle, self.pid = {}, os.getpid()
        games = self.idle.get(key)
        return games.pop() if games else launch()

    def give(self, key: tuple[str, int, int], game: Any) -> None:
        self.idle.setdefault(key, []).append(game)

    def close_idle(self) -> None:
        games = [g for gs in self.idle.values() for g in gs]
        self.idle.clear()
        for game in games:
            game.close()


GAMES = GamePool()


def _env_kwargs(env_class: Any) -> dict[str, Any]:
    """ENV_KWARGS, plus prob_obs_enemy=1 where this SMACv2 version has it (every agent then sees
    the enemies within its sight range, as in the SMACv2 paper)."""
    kwargs = dict(ENV_KWARGS)
    if "prob_obs_enemy" in inspect.signature(env_class.__init__).parameters:
        kwargs["prob_obs_enemy"] = 1.0
    return kwargs


@register_env("smacv2")
class Smacv2Backend(SmaxTasks, PythonBatchBackend):
    """SMACv2 (StarCraft II) with SMAX's tasks: the game, SMACv2 and its maps must be installed."""

    obs_features = OBS_FEATURES
    state_features = STATE_FEATURES
    non_attack_actions = N_NON_ATTACK

    leaderboard_note = ("SMACv2 (StarCraft II) numbers are not comparable with SMAX numbers: other actions, "
                        "reward scale, unit stats and enemy AI.")

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        game_dir = sc2_dir(os.environ, Path.home(), sys.platform)
        return requirements_problem(smacv2_import_error(), game_dir, bool(os.environ.get("SC2PATH")))

    @classmethod
    def check_task(cls, args: SmaxArgs, splits: dict[str, list[SmaxComposition]]) -> None:
        if args.map_size > SC2_MAP_SIDE:
            raise ConfigError.single(
                ("args", "map_size"),
                f"SMACv2's maps are {SC2_MAP_SIDE:g}x{SC2_MAP_SIDE:g}; use map_size <= {SC2_MAP_SIDE:g} "
                "with backend smacv2", found=args.map_size)
        if args.race == "any":
            raise ConfigError.single(("args", "race"), "StarCraft II teams are of one race; race any is SMAX's "
                                     "(JaxMARL's smacv2_N_units maps): use protoss, terran or zerg with backend smacv2",
                                     found=args.race, choices=["protoss", "terran", "zerg"])
        _refuse_smax_only_options(args, splits)
        super().check_task(args, splits)

    # ---- games: taken from the pool per episode, instead of kept per slot and composition -----
    def __init__(self, args: SmaxArgs, compositions: list[SmaxComposition], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        super().__init__(args, compositions, num_envs, seed, weights=weights, training=training)
        self.games: list[_Game | None] = [None] * num_envs
        self.distributions: dict[int, dict[str, Any]] = {}

    def _env(self, slot: int) -> _Game:
        game = self.games[slot]
        if game is None:
            index = int(self.comp[slot])
            comp = self.compositions[index]
            game = GAMES.take((self.args.race, comp.allies, comp.n_enemies), lambda: self.make_env(index))
            self.games[slot] = game
        return game

    def _release(self, slot: int) -> None:
        game = self.games[slot]
        if game is not None:
            GAMES.give(game.key, game)
            self.games[slot] = None

    def reset(self, seed: int | None = None) -> Step:
        for slot in range(self.num_envs):  # episodes cut short: SMACv2's reset clears their battles
            self._release(slot)
        return super().reset(seed)

    def step(self, actions: np.ndarray) -> Step:
        out = super().step(actions)
        for slot in np.flatnonzero(out.done):
            self._release(int(slot))
        return out

    def close(self) -> None:
        for slot in range(self.num_envs):
            self._release(slot)
        GAMES.close_idle()  # a run closes its backends at its end; the next run launches its own

    # ---- PythonBatchBackend hooks ------------------------------------------------------------
    def make_env(self, composition_index: int) -> _Game:
        from smacv2.env.starcraft2.distributions import register_distribution
        from smacv2.env.starcraft2.starcraft2 import StarCraft2Env
        from smacv2.env.starcraft2.wrapper import StarCraftCapabilityEnvWrapper

        register_distribution(EXACT_TEAMS, ExactTeamsDistribution)
        comp = self.compositions[composition_index]
        seed = int(self.rng.integers(0, 2**31 - 1))
        env = StarCraftCapabilityEnvWrapper(capability_config=capability_config(self.args, comp, seed),
                                            map_name=SC2_MAPS[self.args.race], seed=seed,
                                            **_env_kwargs(StarCraft2Env))
        return _Game(env, Sc2Layout.from_env(env, self.args.race), (self.args.race, comp.allies, comp.n_enemies))

    def reset_env(self, env: _Game, composition_index: int, seed: int) -> Frame:
        # The game may have played another composition of its size: this episode's teams and
        # start positions come from this composition's distributions (SMACv2 draws them with
        # its own generators, so episodes do not follow `seed`).
        env.env.env_key_to_distribution_map.update(self._distributions(composition_index))
        # The wrapper forwards reads, not writes: the limit lives on the inner env, which ends
        # episodes there (flagged in info["episode_limit"]) so the spec's limit holds.
        env.env.env.episode_limit = self.args.episode_limit
        env.env.reset()
        return self._frame(env)

    def _distributions(self, composition_index: int) -> dict[str, Any]:
        if composition_index not in self.distributions:
            from smacv2.env.starcraft2.distributions import get_distribution

            config = capability_config(self.args, self.compositions[composition_index],
                                       seed=int(self.rng.integers(0, 2**31 - 1)))
            self.distributions[composition_index] = {
                key: get_distribution(entry["dist_type"])(entry) for key, entry in distribution_configs(config).items()
            }
        return self.distributions[composition_index]

    def step_env(self, env: _Game, composition_index: int, actions: np.ndarray) -> Outcome:
        assert env.frame is not None
        # SMACv2 asserts each action is available; a dead agent may only take the no-op, whatever
        # an algorithm put in its masked slot.
        acts = np.where(env.frame.agent_mask, np.asarray(actions, np.int64), 0)
        reward, ended, info = env.env.step(acts.tolist())
        if ended and not info:  # SMACv2 restarted a crashed game: keep the last view, cut here
            return Outcome(env.frame, 0.0, terminated=False, truncated=True)
        timeout = bool(info.get("episode_limit", False))
        return Outcome(self._frame(env), float(reward), terminated=bool(ended) and not timeout,
                       truncated=timeout, won=bool(info.get("battle_won", False)))

    def _frame(self, game: _Game) -> Frame:
        env = game.env
        avail = [env.get_avail_agent_actions(i) for i in range(game.layout.n_agents)]
        game.frame = frame_from_arrays(np.asarray(env.get_obs()), env.get_state(), np.asarray(avail),
                                       game.layout, self.spec)
        return game.frame
