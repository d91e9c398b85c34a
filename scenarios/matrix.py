"""Cooperative matrix games: one-step or repeated, with optional unit types.

Every agent receives the same team reward `payoff[u_1, ..., u_n]`. A game may have one
payoff table, or one per team composition (a composition is the list of agents' unit
types), which is how MIPI's two-type game asks whether a policy transfers to a team it
never trained with.

Observation of agent i: one entity row per agent (own row first, then the others in slot
order) holding the unit-type one-hot, the action that agent took at the previous step
(one-hot, zero at t=0) and the elapsed fraction of the episode. Row j of agent i's list is
agent (i + j) mod n: own row first, then the others cyclically. The state lists the agents'
rows in slot order (the convention the mixers rely on: agents first, in slot order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.api import Backend, EnvSpec, Loop, Step
from harness.errors import ConfigError
from harness.registry import register_env

# ---------------------------------------------------------------------------------------------
# Built-in games


def _penalty(k: float) -> list[list[float]]:
    # Claus & Boutilier's penalty game: the optima (0,2)/(2,0) sit next to the penalty k.
    return [[k, 0, 10], [0, 2, 0], [10, 0, k]]


BUILTIN_GAMES: dict[str, Any] = {
    # Sanity check: any coordinated action pays 1; every learner should find one.
    "identity": lambda args: np.eye(args.n_actions).tolist(),
    # ME-IGM's non-monotonic game: (A,A) = 8 is the optimum, but miscoordination costs 12,
    # so a monotonic factorisation prefers the safe B/C block.
    "nonmonotonic_3x3": lambda args: [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]],
    # Claus & Boutilier's climbing game: optimum (0,0) = 11 guarded by -30 penalties.
    "climbing": lambda args: [[11, -30, 0], [-30, 7, 6], [0, 0, 5]],
    "penalty": lambda args: _penalty(args.k),
    # MIPI's two-type composition game (payoffs from algorithms.md §4.1, which the paper only
    # shows in a figure): (0,0) pays 5 everywhere and is optimal nowhere; the training teams'
    # optima follow either "own type" or "partner type", and only the first transfers to (B,B).
    "two_type": lambda args: {
        "A,B": [[5, 0], [10, -20]],
        "B,A": [[5, 10], [0, -20]],
        "B,B": [[5, 8], [8, -20]],
    },
}

DEFAULT_TYPES = {"two_type": ["A", "B"]}


def _shape_of(table: Any) -> tuple[int, ...] | None:
    """Shape of a regular nested list of numbers, None if ragged or not numeric."""
    try:
        arr = np.asarray(table, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    return arr.shape if arr.ndim >= 1 else None


def _check_table(table: Any) -> np.ndarray:
    shape = _shape_of(table)
    if shape is None or len(shape) < 2 or len(set(shape)) != 1 or shape[0] < 2:
        raise ValueError(
            "expected a payoff table with one axis per agent (at least 2 agents), every axis "
            f"the same length (the number of actions, at least 2); found shape {shape or 'ragged'}"
        )
    arr = np.asarray(table, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("payoffs must be finite numbers")
    return arr


class MatrixArgs(BaseModel):
    """`args:` of a matrix task. Give a built-in `game`, or your own `payoff` / `payoffs`."""

    model_config = ConfigDict(extra="forbid")

    game: str | None = Field(None, description=f"built-in game: {', '.join(BUILTIN_GAMES)}")
    payoff: list[Any] | None = Field(None, description="one table for every composition")
    payoffs: dict[str, list[Any]] | None = Field(
        None, description="a table per composition, keyed by comma-joined unit types ('A,B')"
    )
    n_actions: int = Field(3, ge=2, le=1000, description="actions of the identity game")
    k: float = Field(-100.0, le=0, description="penalty of the penalty game")
    episode_length: int = Field(1, ge=1, le=10_000, description="1 = one-step game; >1 = repeated")
    types: list[str] | None = Field(None, description="unit types (default: from payoffs or p1..pn)")

    @field_validator("game")
    @classmethod
    def _known_game(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN_GAMES:
            raise ValueError(f"expected one of {', '.join(BUILTIN_GAMES)}")
        return v

    @field_validator("payoff")
    @classmethod
    def _payoff_shape(cls, v: list[Any] | None) -> list[Any] | None:
        if v is not None:
            _check_table(v)
        return v

    @field_validator("payoffs")
    @classmethod
    def _payoffs_shape(cls, v: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if v is not None:
            shapes = {key: _check_table(t).shape for key, t in v.items()}
            if len(set(shapes.values())) > 1:
                raise ValueError(f"every composition's table must have the same shape; found {shapes}")
            for key, shape in shapes.items():
                if len(key.split(",")) != len(shape):
                    raise ValueError(
                        f"key '{key}' names {len(key.split(','))} unit types but its table has "
                        f"{len(shape)} axes (one per agent)"
                    )
        return v

    @model_validator(mode="after")
    def _exactly_one_source(self) -> MatrixArgs:
        given = [k for k in ("game", "payoff", "payoffs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of game, payoff, payoffs; found {given or 'none'}")
        return self

    def tables(self) -> dict[str, np.ndarray] | np.ndarray:
        """One array for an untyped game, or composition key -> array."""
        source = BUILTIN_GAMES[self.game](self) if self.game else (self.payoff or self.payoffs)
        if isinstance(source, dict):
            return {k: np.asarray(t, dtype=np.float32) for k, t in source.items()}
        return np.asarray(source, dtype=np.float32)

    def n_agents(self) -> int:
        tables = self.tables()
        first = next(iter(tables.values())) if isinstance(tables, dict) else tables
        return first.ndim

    def unit_types(self) -> list[str]:
        if self.types:
            return list(self.types)
        if self.game in DEFAULT_TYPES:
            return DEFAULT_TYPES[self.game]
        tables = self.tables()
        if isinstance(tables, dict):
            return sorted({t for key in tables for t in key.split(",")})
        return [f"p{i + 1}" for i in range(self.n_agents())]


class MatrixComposition(BaseModel):
    """A team: the unit type of each agent, in slot order."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(min_length=2)

    def key(self) -> str:
        return ",".join(self.types)


@register_env("matrix")
class MatrixBackend(Backend):
    Args = MatrixArgs
    Composition = MatrixComposition
    # Every env's episode lasts `episode_length` steps, so they all end, and restart, together.
    supports_autoreset = True
    supports_assigned_compositions = True
    # Greedy play of a fixed payoff table is the same every episode: per composition, a run's
    # win rate (optimal joint action reached) is 0 or 1.
    per_run_outcomes = ("win_rate",)
    raw_loop_label = "numpy payoff lookup"  # matrix games have no library

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def default_compositions(cls, args: MatrixArgs) -> list[MatrixComposition]:
        tables = args.tables()
        if isinstance(tables, dict):
            raise ConfigError.single(
                ("train",), "this game has a payoff table per composition: declare the train compositions"
            )
        return [MatrixComposition(types=args.unit_types())]

    @classmethod
    def raw_loop(cls, args: MatrixArgs, composition: MatrixComposition, num_envs: int, **options: Any) -> Loop:
        tables = args.tables()
        table = tables[composition.key()] if isinstance(tables, dict) else tables
        return PayoffLoop(table, args.episode_length, num_envs)

    @classmethod
    def check_task(cls, args: MatrixArgs, splits: dict[str, list[MatrixComposition]]) -> None:
        tables, types, n = args.tables(), set(args.unit_types()), args.n_agents()
        for split, comps in splits.items():
            for i, comp in enumerate(comps):
                where = (split, i, "types")
                if len(comp.types) != n:
                    raise ConfigError.single(
                        where, f"expected {n} unit types (one per agent of the payoff table)", found=comp.types
                    )
                unknown = [t for t in comp.types if t not in types]
                if unknown:
                    raise ConfigError.single(
                        where, f"unknown unit type; expected one of {sorted(types)}",
                        found=unknown[0], choices=types,
                    )
                if isinstance(tables, dict) and comp.key() not in tables:
                    raise ConfigError.single(
                        where, f"no payoff table for this composition; tables exist for {sorted(tables)}",
                        found=comp.key(),
                    )

    @classmethod
    def describe(cls, args: MatrixArgs, compositions: list[MatrixComposition]) -> EnvSpec:
        n, n_types = args.n_agents(), len(args.unit_types())
        n_actions = int(next(iter(cls._table_list(args, compositions))).shape[0])
        features = n_types + n_actions + 1
        return EnvSpec(
            obs_features=features,
            state_features=features,
            n_actions=n_actions,
            max_agents=n,
            max_entities=n,
            max_state_entities=n,
            episode_limit=args.episode_length,
            n_unit_types=n_types,
            obs_entity=tuple(tuple((i + j) % n for j in range(n)) for i in range(n)),
        )

    @classmethod
    def composition_name(cls, args: MatrixArgs, composition: MatrixComposition) -> str:
        return composition.key()

    @staticmethod
    def _table_list(args: MatrixArgs, compositions: list[MatrixComposition]) -> list[np.ndarray]:
        tables = args.tables()
        if isinstance(tables, dict):
            return [tables[c.key()] for c in compositions]
        return [tables for _ in compositions]

    # ---- batched environment ----------------------------------------------------------------
    def __init__(
        self,
        args: MatrixArgs,
        compositions: list[MatrixComposition],
        num_envs: int,
        seed: int,
        weights: list[float] | None = None,
        training: bool = False,
    ) -> None:
        self.args = args
        self.spec = self.describe(args, compositions)
        self.num_envs = num_envs
        self.tables = np.stack(self._table_list(args, compositions))  # [C, U, ..., U]
        self.optimum = self.tables.reshape(len(compositions), -1).max(axis=1)  # [C]
        type_index = {t: i for i, t in enumerate(args.unit_types())}
        self.agent_types = np.array([[type_index[t] for t in c.types] for c in compositions])  # [C, n]
        w = np.ones(len(compositions)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.rng = np.random.default_rng(seed)
        n, b = self.spec.max_agents, num_envs
        # Row j of agent i's observation is agent (i + j) mod n: own row first, others in slot order.
        self.view_order = (np.arange(n)[:, None] + np.arange(n)[None, :]) % n  # [n, n]
        self.comp = np.zeros(b, dtype=np.int64)
        self.t = 0
        self.last_actions = np.zeros((b, n), dtype=np.int64)
        self.ep_return = np.zeros(b, dtype=np.float32)
        self.all_optimal = np.ones(b, dtype=bool)

    def _entity_rows(self) -> np.ndarray:
        """[B, n, F] feature row of every agent."""
        spec, b, n = self.spec, self.num_envs, self.spec.max_agents
        n_types = spec.n_unit_types
        rows = np.zeros((b, n, spec.obs_features), dtype=np.float32)
        type_ids = self.agent_types[self.comp]  # [B, n]
        np.put_along_axis(rows[:, :, :n_types], type_ids[..., None], 1.0, axis=2)
        if self.t > 0:
            act = rows[:, :, n_types : n_types + spec.n_actions]
            np.put_along_axis(act, self.last_actions[..., None], 1.0, axis=2)
        rows[:, :, -1] = self.t / self.args.episode_length
        return rows

    def _observe(self, reward: np.ndarray, done: bool) -> Step:
        b, n, u = self.num_envs, self.spec.max_agents, self.spec.n_actions
        rows = self._entity_rows()
        finished = np.full(b, done)
        return Step(
            obs=rows[:, self.view_order],  # [B, n(agent), n(entity), F]
            obs_mask=np.ones((b, n, n), dtype=bool),
            state=rows,
            state_mask=np.ones((b, n), dtype=bool),
            avail_actions=np.ones((b, n, u), dtype=bool),
            agent_mask=np.ones((b, n), dtype=bool),
            reward=reward.astype(np.float32),
            done=finished,
            terminated=finished.copy(),  # the game ends by its own rules: no bootstrap past it
            won=finished & self.all_optimal,
            composition=self.comp.copy(),
        )

    def reset(self, seed: int | None = None) -> Step:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self._start(self.rng.choice(len(self.probs), size=self.num_envs, p=self.probs))

    def reset_compositions(self, seed: int | None, compositions: np.ndarray) -> Step:
        compositions = np.asarray(compositions, dtype=np.int64)
        if compositions.shape != (self.num_envs,) or not ((compositions >= 0) & (compositions < len(self.probs))).all():
            raise ValueError(f"compositions must be {self.num_envs} indices below {len(self.probs)}, got {compositions}")
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self._start(compositions)

    def _start(self, compositions: np.ndarray) -> Step:
        self.comp = compositions.astype(np.int64)
        self.t = 0
        self.last_actions[:] = 0
        self.ep_return[:] = 0
        self.all_optimal[:] = True
        return self._observe(np.zeros(self.num_envs, dtype=np.float32), done=False)

    def step(self, actions: np.ndarray) -> Step:
        if self.t >= self.args.episode_length:  # episode over: padding until the next reset
            if self.autoreset:
                return self.reset()
            return self._observe(np.zeros(self.num_envs, dtype=np.float32), done=True)
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self.num_envs, self.spec.max_agents):
            raise ValueError(f"actions must have shape {(self.num_envs, self.spec.max_agents)}, got {actions.shape}")
        if actions.min() < 0 or actions.max() >= self.spec.n_actions:
            raise ValueError(f"actions must lie in [0, {self.spec.n_actions}), got {actions.min()}..{actions.max()}")
        reward = self.tables[(self.comp, *actions.T)]
        self.all_optimal &= reward >= self.optimum[self.comp]
        self.ep_return += reward
        self.last_actions = actions.copy()  # the caller may reuse its array
        self.t += 1
        return self._observe(reward, done=self.t >= self.args.episode_length)

    # ---- continuous rollouts: the episodes in flight ------------------------------------------
    def env_state(self) -> dict[str, np.ndarray]:
        return {"comp": self.comp, "t": np.array(self.t), "last_actions": self.last_actions,
                "ep_return": self.ep_return, "all_optimal": self.all_optimal}

    def load_env_state(self, state: dict[str, np.ndarray]) -> None:
        self.comp, self.t = state["comp"].copy(), int(state["t"])
        self.last_actions, self.ep_return = state["last_actions"].copy(), state["ep_return"].copy()
        self.all_optimal = state["all_optimal"].copy()


class PayoffLoop(Loop):
    """A matrix game with nothing around it: random joint actions looked up in the payoff table."""

    def __init__(self, table: np.ndarray, episode_length: int, num_envs: int, seed: int = 0) -> None:
        self.table, self.episode_length, self.num_envs = table, episode_length, num_envs
        self.rng = np.random.default_rng(seed)
        self.returns = np.zeros(num_envs, dtype=np.float32)
        self.t = 0

    def advance(self) -> int:
        actions = self.rng.integers(0, self.table.shape[0], size=(self.num_envs, self.table.ndim))
        self.returns += self.table[tuple(actions.T)]
        self.t += 1
        if self.t == self.episode_length:
            self.t, self.returns[:] = 0, 0.0
        return self.num_envs
