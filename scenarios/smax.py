"""StarCraft-like combat on JaxMARL's SMAX, the embedded default for the SC2 suites.

SMAX reimplements SMAC/SMACv2 micromanagement in JAX; no game binary is needed. This backend
keeps SMAX's units, combat rules and heuristic enemy AI, and replaces three things:

- Team generation. SMAX's SMACv2 sampler draws every unit from all six unit types; here a
  composition fixes the race, the ally and enemy counts, and either exact unit counts or
  per-unit type probabilities within the race (enemies mirror the allies' types, extra
  enemies are drawn from the same distribution, as SMACv2 does). Start positions follow
  SMACv2: `surround`, `reflect`, or either with probability 1/2; or `smax`, the layout of
  SMAX's fixed maps (3m, 2s3z, ...): each team in a clump on its own side of the map, units
  of each team in slot order with their types unshuffled; or `refil`, the layout of REFIL's
  symmetric-army maps (3-8sz_symmetric, ...), which MIPI's SMAC experiments use: the two
  armies face each other across the centre at a random angle. A composition may also draw its
  team uniformly from a list of unit mixes (`mixes`), as REFIL draws from its list of teams.
- Observations: entity lists for the harness's batched API (see `_entity_features`), so
  one network runs on teams of any size.
- Reward: SMAX's shaped reward (enemy health removed, normalised by the enemy count, plus
  a bonus for winning), computed with the *real* enemy count of each episode.

One compiled program serves every composition of a backend instance: the arrays are sized
for the largest composition, and the units a smaller team lacks start dead (dead SMAX
units cannot act, be seen, be shot or collide). With auto-reset on (continuous rollouts),
the compiled step itself draws the next battle of every env that was done, from that env's
own key, for a few envs at a time. Programs are cached per shape in this
process, and on disk by JAX's persistent compilation cache across processes.

Agents pick among `5 + max_enemies` discrete actions: 4 moves, stop, attack enemy slot k.
SMAX numbers are not comparable with SMACv2 (StarCraft II) numbers: the combat model,
timing and enemy AI are simplified.

Playing SMAX's fixed maps (to compare with JaxMARL's published baselines): the default args
(map_size 32, episode_limit 100, won_battle_bonus 1, enemy_attack_mode closest,
see_enemy_actions true) are JaxMARL's, so a map is its race, its team and `smax` starts:

    3m:       args: {race: terran, start_positions: smax}   train: [{allies: 3, units: {marine: 3}}]
    8m, 25m:  the same with 8 or 25 marines
    2s3z:     args: {race: protoss, start_positions: smax}  train: [{allies: 5, units: {stalker: 2, zealot: 3}}]
    5m_vs_6m: args: {race: terran, start_positions: smax}   train: [{allies: 5, enemies: 6, type_probs: {marine: 1}}]

(`type_probs` there, since extra enemies are drawn from the type distribution, which `units`
leaves uniform over the race.) JaxMARL's SMACv2-style maps draw every unit from all six types
of the three races, mirrored, with SMACv2's start positions (the default here):

    smacv2_5_units:  args: {race: any}   train: [{allies: 5}]     (10 and 20 units likewise)
 Maps whose enemies are not the allies' types (3s_vs_5z,
6h_vs_8z) cannot be written. What still differs from JaxMARL: the observation features
(entity rows, see `_entity_features`) and synchronous episodes (an env whose battle ended
waits for the batch's next reset instead of restarting at once).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.api import Backend, EnvSpec, Step
from harness.errors import ConfigError
from harness.registry import register_env

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


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def composition_table(args: Any, compositions: list[SmaxComposition], max_allies: int,
                      weights: list[float] | None) -> dict[str, np.ndarray]:
    """The compositions as arrays for the compiled reset, padded to a power of two rows:
    log-weights, counts, per-unit type probabilities over SMAX's six types, exact ally types
    in SMAX's type order (-1 = draw), the mixes to draw among (log-weights over the count of
    the race's first type, 0 to max_allies, and the race's two types; all -inf: no mixes), the
    probability of a surround start, and whether the battle uses SMAX's fixed-map layout
    (clumps, types kept in slot order) or REFIL's."""
    rows = _pow2(len(compositions))
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


@register_env("smax")
class SmaxBackend(Backend):
    """SMAX: StarCraft-like unit micromanagement in JAX (JaxMARL); no game binary needed."""

    Args = SmaxArgs
    Composition = SmaxComposition
    family = "sc2"  # `backend=smacv2` swaps these tasks onto StarCraft II
    supports_autoreset = True  # inside the compiled step: a done env draws its next battle from its own key
    supports_assigned_compositions = True  # the compiled reset takes each env's composition as data
    leaderboard_note = ("SMAX (JaxMARL's JAX reimplementation of SMAC combat) numbers are not comparable with "
                        "SMACv2 (StarCraft II) numbers: units, timing and the enemy AI are simplified.")

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        try:
            with quiet_stdout():
                import jaxmarl.environments.smax  # noqa: F401
        except ImportError as exc:
            return (f"backend smax needs JaxMARL ({exc.name} is missing): "
                    "pip install -e '.[smax]' -c constraints.txt")
        return None

    @classmethod
    def default_compositions(cls, args: SmaxArgs) -> list[SmaxComposition]:
        return [SmaxComposition(allies=5)]

    @classmethod
    def check_task(cls, args: SmaxArgs, splits: dict[str, list[SmaxComposition]]) -> None:
        check_compositions(args, splits)

    @classmethod
    def describe(cls, args: SmaxArgs, compositions: list[SmaxComposition]) -> EnvSpec:
        return battle_spec(args, compositions, len(OBS_FEATURES), len(STATE_FEATURES), N_MOVES)

    @classmethod
    def composition_name(cls, args: SmaxArgs, composition: SmaxComposition) -> str:
        return composition_label(args, composition)

    # ---- batched environment ----------------------------------------------------------------
    def __init__(self, args: SmaxArgs, compositions: list[SmaxComposition], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        import jax

        self.args, self.num_envs = args, num_envs
        self.spec = self.describe(args, compositions)
        a, e = self.spec.max_agents, self.spec.max_entities - self.spec.max_agents
        # Race and start positions reach the program as data (the composition table), so every
        # race shares one compiled program per team size.
        self.core = _core(a, e, args.model_copy(update={"race": "protoss", "start_positions": "surround"}).model_dump_json())
        # Each new array shape costs a compilation of seconds, so the batch is padded to a power
        # of two (at least MIN_BATCH: small batches cost as much per step as 16 envs do) and the
        # composition table to a power of two rows (the extra rows have zero weight).
        self.padded = max(MIN_BATCH, _pow2(num_envs))
        self.table = jax.device_put(composition_table(args, compositions, a, weights))  # read by every step
        self.key = jax.random.PRNGKey(seed)
        self.state: Any = None
        # The step's autoreset argument, both values on the device once (not copied over every step),
        # and the reset's "draw every env's composition by weight".
        self.autoreset_flags = jax.device_put((np.bool_(False), np.bool_(True)))
        self.draw_all = jax.device_put(np.full(self.padded, -1, np.int32))
        self.n_compositions = len(compositions)

    @functools.cached_property
    def programs(self) -> tuple[Any, Any]:
        """The compiled reset and step of this batch (see `SmaxCore.programs`)."""
        return self.core.programs(self.padded, self.table)

    def reset(self, seed: int | None = None) -> Step:
        return self._reset(seed, self.draw_all)

    def reset_compositions(self, seed: int | None, compositions: np.ndarray) -> Step:
        compositions = np.asarray(compositions, dtype=np.int32)
        if compositions.shape != (self.num_envs,) or not ((compositions >= 0) & (compositions < self.n_compositions)).all():
            raise ValueError(f"compositions must be {self.num_envs} indices below {self.n_compositions}, got {compositions}")
        assigned = np.full(self.padded, -1, np.int32)  # the padding envs draw theirs
        assigned[: self.num_envs] = compositions
        return self._reset(seed, assigned)

    def _reset(self, seed: int | None, assigned: Any) -> Step:
        import jax

        if seed is not None:
            self.key = jax.random.PRNGKey(seed)
        self.key, self.state, out = self.programs[0](self.key, self.table, assigned)
        return self._to_step(out)

    def step(self, actions: np.ndarray) -> Step:
        actions = np.asarray(actions, dtype=np.int32)
        if actions.shape != (self.num_envs, self.spec.max_agents):
            raise ValueError(f"actions must have shape {(self.num_envs, self.spec.max_agents)}, got {actions.shape}")
        if self.padded > self.num_envs:
            actions = np.concatenate([actions, np.full((self.padded - self.num_envs, actions.shape[1]), STOP, np.int32)])
        self.state, out = self.programs[1](self.state, actions, self.table, self.autoreset_flags[self.autoreset])
        return self._to_step(out)

    def _to_step(self, packed: dict[str, Any]) -> Step:
        return Step(**self.core.to_host(packed, self.padded, self.num_envs))

    def rng_state(self) -> str:
        return json.dumps(np.asarray(self.key).tolist())

    def set_rng_state(self, state: str) -> None:
        import jax.numpy as jnp

        if state:
            self.key = jnp.asarray(json.loads(state), dtype=jnp.uint32)

    def env_state(self) -> dict[str, np.ndarray]:
        """The batch of battles in flight (every leaf of the compiled state, in tree order)."""
        import jax

        if self.state is None:
            raise RuntimeError("smax: call reset() before env_state()")
        return {f"{i:03d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(self.state))}

    def load_env_state(self, state: dict[str, np.ndarray]) -> None:
        import jax
        import jax.numpy as jnp

        # The compiled step takes exactly the dtypes it was compiled for.
        template = self.core.state_template(self.padded, self.table)
        leaves = [jnp.asarray(state[k], dtype=like.dtype) for k, like in zip(sorted(state), jax.tree.leaves(template),
                                                                            strict=True)]
        self.state = jax.tree.unflatten(jax.tree.structure(template), leaves)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1: JaxMARL prints a notice when imported, and a library it imports
    resets `sys.stdout`, so `contextlib.redirect_stdout` cannot catch it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# The compiled core: one per (max allies, max enemies, args) in this process.


def _enable_compilation_cache() -> None:
    """Reuse compiled SMAX programs across processes (every worker would compile them again)."""
    import jax

    if getattr(jax.config, "jax_compilation_cache_dir", None):
        return
    path = os.environ.get("HARNESS_JAX_CACHE") or str(Path.home() / ".cache" / "teamgen-harness" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@functools.cache
def _core(max_allies: int, max_enemies: int, args_json: str) -> Any:
    with quiet_stdout():
        from scenarios._smax_core import SmaxCore

    _enable_compilation_cache()
    return SmaxCore(max_allies, max_enemies, SmaxArgs.model_validate_json(args_json))
