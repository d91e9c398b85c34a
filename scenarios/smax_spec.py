"""What an SMAX task is, without JAX: its args and compositions (validated by pydantic), the
unit types of each race, the start-position layouts' constants, and the tables the compiled
program is fed. The backend (scenarios.smax) and its compiled core (scenarios._smax_core) both
build on this module; importing it costs no JAX start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.api import EnvSpec
from harness.errors import ConfigError

# SMAX's unit-type order (its one-hot features and stat tables use these indices).
SMAX_UNIT_TYPES = ("marine", "marauder", "stalker", "zealot", "zergling", "hydralisk")
RACES = {
    "protoss": ("stalker", "zealot"),
    "terran": ("marine", "marauder"),
    "zerg": ("zergling", "hydralisk"),
    # Every unit type of every race, as JaxMARL's smacv2_5_units, smacv2_10_units, ... maps draw
    # them (SMAX only: StarCraft II teams are of one race).
    "any": SMAX_UNIT_TYPES,
}
N_MOVES = 5  # north, east, south, west, stop (SMAX's movement actions)
STOP = 4
AREA_PER_UNIT = 16.0
MIN_BATCH = 16  # map area (in SMAX distance units squared) each unit needs to start

StartPositions = Literal["surround_and_reflect", "surround", "reflect", "smax", "refil"]
SMAX_START_NOISE = 2.0  # SMAX's fixed maps: each unit within +-2 of its team's centre, on both axes
# REFIL's symmetric-army maps (its custom_scenarios.py, `separation=14, jitter=1`, rotate on):
# the army centres lie 14 apart on a line through the map's centre at a uniform angle, and each
# unit-type group of a team is placed within +-1 of its army's centre on both axes.
REFIL_SEPARATION = 14.0
REFIL_JITTER = 1.0
# StarCraft II spreads the units created at one point; SMAX's collision push cannot separate
# units that share a point exactly, so each unit is placed within +-1 of its group's point.
REFIL_UNIT_SPREAD = 1.0


class SmaxArgs(BaseModel):
    """`args:` of an SMAX task."""

    model_config = ConfigDict(extra="forbid")

    race: Literal["protoss", "terran", "zerg", "any"] = Field(
        "protoss", description="the race of both teams (any: units of all three races, as JaxMARL's smacv2_N_units maps)")
    start_positions: StartPositions = Field(
        "surround_and_reflect",
        description="SMACv2 start positions (surround_and_reflect draws either, p=0.5); smax: SMAX's "
                    "fixed-map layout, each team in a clump on its own side of the map (JaxMARL's 3m, 2s3z, ...); "
                    "refil: REFIL's symmetric-army maps, the armies 14 apart across the centre at a random angle")
    map_size: float = Field(32.0, ge=8, le=256, description="side of the square map")
    episode_limit: int = Field(100, ge=1, le=10_000, description="env steps before a draw")
    won_battle_bonus: float = Field(1.0, ge=0, description="reward for killing every enemy")
    enemy_attack_mode: Literal["closest", "random"] = Field("closest", description="heuristic enemy targeting")
    see_enemy_actions: bool = Field(True, description="observe enemies' last movement and attack")

    def unit_capacity(self) -> int:
        return int(self.map_size**2 / AREA_PER_UNIT)


class SmaxComposition(BaseModel):
    """A battle: `allies` learners against `enemies` heuristic units of the task's race.

    Give `units` (exact ally counts per type: {stalker: 2, zealot: 3}), `mix` (the same
    counts for the race's two types in order, [2, 3]: one list fits every race), `mixes` (the
    team drawn uniformly per battle from a list of such mixes, [[0, 5], [1, 4]], or from every
    mix of `allies` units, `all`), or `type_probs` (the probability of each type per unit;
    default uniform over the race's two types).

    `mixes: all` is not the per-unit draw: with 4 units the uniform per-unit draw makes 2+2
    six times as often as 0+4, while `all` makes each of the 5 mixes equally often (REFIL
    draws its teams so).
    """

    model_config = ConfigDict(extra="forbid")

    allies: int = Field(ge=1, le=1000, description="units the algorithm controls")
    enemies: int | None = Field(default=None, ge=1, le=1000, description="enemy units (default: as many as allies)")
    units: dict[str, int] | None = Field(default=None, description="exact ally unit counts per type")
    mix: list[int] | None = Field(default=None, min_length=2, max_length=2,
                                  description="exact counts of the race's first and second unit type")
    mixes: Literal["all"] | list[list[int]] | None = Field(
        default=None, description="draw the team uniformly from these [first, second] type counts, or all of them")
    type_probs: dict[str, float] | None = Field(default=None, description="per-unit type probabilities")
    start_positions: StartPositions | None = Field(default=None, description="override the task's start positions")

    @model_validator(mode="after")
    def _consistent(self) -> SmaxComposition:
        if self.enemies is None:
            self.enemies = self.allies
        given = [k for k in ("units", "mix", "mixes", "type_probs") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of units, mix, mixes, type_probs; found {', '.join(given)}")
        if isinstance(self.mixes, list):
            self._check_mixes(self.mixes)
        counts = list(self.units.values()) if self.units is not None else self.mix
        if counts is not None:
            if any(v < 0 for v in counts):
                raise ValueError(f"unit counts must be >= 0, found {counts}")
            if sum(counts) != self.allies:
                raise ValueError(f"the unit counts add up to {sum(counts)} but allies is {self.allies}")
        probs = self.type_probs
        if probs is not None and (any(v < 0 for v in probs.values()) or sum(probs.values()) <= 0):
            raise ValueError(f"type_probs must be >= 0 with a positive sum, found {probs}")
        return self

    def _check_mixes(self, mixes: list[list[int]]) -> None:
        if not mixes:
            raise ValueError("mixes lists at least one [first, second] pair, or is all")
        for mix in mixes:
            if len(mix) != 2 or any(v < 0 for v in mix) or sum(mix) != self.allies:
                raise ValueError(f"each of mixes is [first, second] unit counts, >= 0, adding up to allies "
                                 f"({self.allies}); found {mix}")
        if len({tuple(m) for m in mixes}) < len(mixes):
            raise ValueError(f"mixes lists a mix twice: {mixes}")

    @property
    def n_enemies(self) -> int:
        assert self.enemies is not None
        return self.enemies

    def first_type_counts(self) -> list[int] | None:
        """The counts of the race's first unit type this composition draws among, one per mix."""
        if self.mixes == "all":
            return list(range(self.allies + 1))
        return None if self.mixes is None else [first for first, _ in self.mixes]


OBS_FEATURES = (
    ["is_self", "is_ally", "is_enemy", "health", "rel_x", "rel_y", "distance", "move_x", "move_y",
     "attacking", "cooldown", "x", "y"]
    + [f"type_{t}" for t in SMAX_UNIT_TYPES]
)
STATE_FEATURES = (
    ["is_ally", "is_enemy", "health", "x", "y", "move_x", "move_y", "attacking", "cooldown"]
    + [f"type_{t}" for t in SMAX_UNIT_TYPES]
)


def check_compositions(args: Any, splits: dict[str, list[SmaxComposition]]) -> None:
    """Cross-field checks shared by the SMAX and SMACv2 backends: unit types and map capacity."""
    race_types = RACES[args.race]
    capacity = args.unit_capacity()
    for split, comps in splits.items():
        for i, comp in enumerate(comps):
            for key in ("mix", "mixes"):
                if getattr(comp, key) is not None and len(race_types) != 2:
                    raise ConfigError.single(
                        (split, i, key), f"{key} gives the counts of a race's two unit types; race {args.race} has "
                        f"{len(race_types)} ({', '.join(race_types)}): give units instead", found=getattr(comp, key))
            for key in ("units", "type_probs"):
                unknown = [t for t in (getattr(comp, key) or {}) if t not in race_types]
                if unknown:
                    raise ConfigError.single(
                        (split, i, key, unknown[0]),
                        f"unknown unit type for race {args.race}; expected one of {', '.join(race_types)}",
                        found=unknown[0], choices=race_types,
                    )
            if comp.allies + comp.n_enemies > capacity:
                raise ConfigError.single(
                    (split, i, "allies"),
                    f"{comp.allies} + {comp.n_enemies} units do not fit a {args.map_size:g}x{args.map_size:g} "
                    f"map (at most {capacity}: each unit needs {AREA_PER_UNIT:g} square units); "
                    "use fewer units or a larger args.map_size",
                    found=comp.allies + comp.n_enemies,
                )


def battle_spec(args: Any, compositions: list[SmaxComposition], obs_features: int, state_features: int,
                non_attack_actions: int) -> EnvSpec:
    """The spec of a battle backend (SMAX, SMACv2): every unit is an entity, one attack action
    per enemy slot after the backend's other actions."""
    allies = max(c.allies for c in compositions)
    enemies = max(c.n_enemies for c in compositions)
    return EnvSpec(
        obs_features=obs_features,
        state_features=state_features,
        n_actions=non_attack_actions + enemies,
        max_agents=allies,
        max_entities=allies + enemies,
        max_state_entities=allies + enemies,
        episode_limit=args.episode_limit,
        n_unit_types=len(SMAX_UNIT_TYPES),
        # Agent i sees itself, the other allies in slot order, then the enemies; the state
        # lists allies then enemies, so a unit's state row is its index in that order.
        obs_entity=tuple(
            (i, *(j for j in range(allies + enemies) if j != i)) for i in range(allies)
        ),
    )


def exact_units(args: Any, composition: SmaxComposition) -> dict[str, int] | None:
    """Exact ally counts per unit type, from `units` or from `mix` and the task's race."""
    if composition.mix is not None:
        return dict(zip(RACES[args.race], composition.mix, strict=True))
    return composition.units


def composition_label(args: Any, composition: SmaxComposition) -> str:
    """'5v5', '4v5 stalker=1,zealot=3', '5v5 zealot=0.8', '5v5 any mix', '5v5 mixes 0+5,1+4'."""
    label = f"{composition.allies}v{composition.n_enemies}"
    mix = exact_units(args, composition) or composition.type_probs
    if composition.mixes == "all":
        label += " any mix"
    elif composition.mixes:
        label += " mixes " + ",".join(f"{first}+{second}" for first, second in composition.mixes)
    elif mix:
        label += " " + ",".join(f"{k}={v:g}" for k, v in sorted(mix.items()))
    if composition.start_positions:
        label += f" {composition.start_positions}"
    return label


def pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def composition_table(args: Any, compositions: list[SmaxComposition], max_allies: int,
                      weights: list[float] | None) -> dict[str, np.ndarray]:
    """The compositions as arrays for the compiled reset, padded to a power of two rows:
    log-weights, counts, per-unit type probabilities over SMAX's six types, exact ally types
    in SMAX's type order (-1 = draw), the mixes to draw among (log-weights over the count of
    the race's first type, 0 to max_allies, and the race's two types; all -inf: no mixes), the
    probability of a surround start, and whether the battle uses SMAX's fixed-map layout
    (clumps, types kept in slot order) or REFIL's."""
    rows = pow2(len(compositions))
    w = np.ones(len(compositions)) if weights is None else np.asarray(weights, dtype=np.float64)
    table = {
        "weights": np.full(rows, -np.inf, np.float32),
        "allies": np.ones(rows, np.int32),
        "enemies": np.ones(rows, np.int32),
        "type_probs": np.full((rows, len(SMAX_UNIT_TYPES)), 1 / len(SMAX_UNIT_TYPES), np.float32),
        "fixed_types": np.full((rows, max_allies), -1, np.int32),
        "mix_weights": np.full((rows, max_allies + 1), -np.inf, np.float32),
        "mix_types": np.zeros((rows, 2), np.int32),
        "p_surround": np.zeros(rows, np.float32),
        "smax_layout": np.zeros(rows, bool),
        "refil_layout": np.zeros(rows, bool),
    }
    table["weights"][: len(w)] = np.log(w / w.sum())
    for c, comp in enumerate(compositions):
        table["allies"][c], table["enemies"][c] = comp.allies, comp.n_enemies
        mix = comp.type_probs or {t: 1.0 for t in RACES[args.race]}
        probs = np.zeros(len(SMAX_UNIT_TYPES), np.float32)
        for name, p in mix.items():
            probs[SMAX_UNIT_TYPES.index(name)] = p
        table["type_probs"][c] = probs / probs.sum()
        units = exact_units(args, comp)
        if units:
            types = sorted(SMAX_UNIT_TYPES.index(t) for t, n in units.items() for _ in range(n))
            table["fixed_types"][c, : len(types)] = types
        first_counts = comp.first_type_counts()
        if first_counts is not None:
            table["mix_weights"][c, first_counts] = -np.log(len(first_counts))
            table["mix_types"][c] = [SMAX_UNIT_TYPES.index(t) for t in RACES[args.race]]
        mode = comp.start_positions or args.start_positions
        table["p_surround"][c] = {"surround": 1.0, "reflect": 0.0, "smax": 0.0, "refil": 0.0}.get(mode, 0.5)
        table["smax_layout"][c] = mode == "smax"
        table["refil_layout"][c] = mode == "refil"
    return table


class SmaxTasks:
    """The class-level contract both SC2-family backends share (SMAX and SMACv2 run the same
    tasks): args and composition models, the default team, checks, the EnvSpec and names.
    A backend sets the observation and state feature names and how many actions precede
    "attack enemy k" (`non_attack_actions`)."""

    Args: ClassVar[type[BaseModel]] = SmaxArgs
    Composition: ClassVar[type[BaseModel]] = SmaxComposition
    family: ClassVar[str | None] = "sc2"  # `backend=smax|smacv2` swaps a suite's tasks between the two
    obs_features: Sequence[str] = OBS_FEATURES
    state_features: Sequence[str] = STATE_FEATURES
    non_attack_actions = N_MOVES

    @classmethod
    def default_compositions(cls, args: SmaxArgs) -> list[SmaxComposition]:
        return [SmaxComposition(allies=5)]

    @classmethod
    def check_task(cls, args: SmaxArgs, splits: dict[str, list[SmaxComposition]]) -> None:
        check_compositions(args, splits)

    @classmethod
    def describe(cls, args: SmaxArgs, compositions: list[SmaxComposition]) -> EnvSpec:
        return battle_spec(args, compositions, len(cls.obs_features), len(cls.state_features), cls.non_attack_actions)

    @classmethod
    def composition_name(cls, args: SmaxArgs, composition: SmaxComposition) -> str:
        return composition_label(args, composition)
