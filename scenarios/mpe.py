"""MPE2's particle worlds as entity-list backends: cooperative navigation and predator-prey.

Both parse mpe2's flat observation (`[self_vel, self_pos, landmark rel pos, other agents' rel
pos, ...]`, see mpe2's `Scenario.observation`) into one row per entity, so a network trained
with one team size runs unchanged with another. Every observation row has the same features:

    [kind one-hot | rel_x rel_y | distance | pos_x pos_y | vel_x vel_y]

- kind: spread (self, agent, landmark); tag (self, predator, prey, obstacle);
- rel: position relative to the observing agent (zero in its own row), distance its norm;
- pos: absolute position (own position + rel: no more than the agent observes);
- vel: velocity where the agent observes one (its own row; prey rows in tag), else zero.

Rows: the agent itself first, then the other team members in slot order, then the other
entities in mpe2's order. The global state (for centralised mixers) lists the team first in
slot order, then the other entities, in absolute coordinates:

    [kind one-hot | pos_x pos_y | vel_x vel_y]     (spread: agent, landmark; tag: predator, prey, obstacle)

Actions: mpe2's five moves (no-op, left, right, down, up); with `continuous_actions` a
five-dimensional action in [-1, 1] mapped onto mpe2's [0, 1] Box.

`mpe_spread` (simple_spread, N agents and N landmarks): the team reward is the sum over agents
of mpe2's per-agent reward (PyMARL/EPyMARL convention; `team_reward: mean` divides by N).
With local_ratio r each agent gets (1 - r) x (minus the summed landmark-to-nearest-agent
distances) + r x (minus its collisions). `won`: every landmark has an agent within
`cover_radius` (default mpe2's 0.1) at the last step.

Spread has two engines (`engine:`), which give the same Steps for the same seed (to float32
rounding; tests/test_mpe_engine.py plays them side by side). `numpy`, the default, steps the
whole batch at once in `scenarios._mpe_spread_core` (a re-implementation of mpe2's
simple_spread: tens of microseconds per batch step where mpe2 takes about a third of a
millisecond per env) and does not need mpe2 installed. `mpe2` runs one mpe2 ParallelEnv per
slot. The registered `MPESpreadBackend` builds `NumpySpreadBackend` or `MPE2SpreadBackend`.

`mpe_tag` (simple_tag): the predators (mpe2's adversaries) learn; the prey follow a fixed
script (`prey_policy`: flee, random or still). mpe2 gives every predator the same reward, 10
per predator-prey contact, so the default `team_reward: mean` is that shared reward (`sum`
multiplies it by the number of predators). `won`: at some step every prey was touched by a
predator at once (with `end_on_capture` the episode also ends there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from harness.api import Backend, EnvSpec, Loop, Step
from harness.registry import register_env
from scenarios._mpe_spread_core import MOVES, SpreadWorlds, continuous_forces, discrete_forces
from scenarios.pettingzoo_generic import (
    ParallelEnvBackend,
    Slot,
    checked_actions,
    library_loop,
    quiet_import,
    requirement_problem,
)
from scenarios.python_batch import EpisodeDraws, Frame

MAX_TEAM = 32  # mpe2's physics is O(entities^2) Python; larger teams would crawl
POS, VEL = 2, 2
N_MOVES = len(MOVES)  # mpe2's discrete moves: no-op, left, right, down, up


def obs_features(n_kinds: int) -> int:
    return n_kinds + POS + 1 + POS + VEL


def state_features(n_kinds: int) -> int:
    return n_kinds + POS + VEL


def kind_rows(kinds: list[int], n_kinds: int, features: int) -> np.ndarray:
    """[e, F] zero rows holding only the kind one-hot: the template every frame starts from."""
    rows = np.zeros((len(kinds), features), dtype=np.float32)
    rows[np.arange(len(kinds)), kinds] = 1
    return rows


def entity_rows(template: np.ndarray, n_kinds: int, rel: np.ndarray, own_pos: np.ndarray) -> np.ndarray:
    """[a, e, F] observation rows from the kind template [e, F], relative positions [a, e, 2]
    and the observers' positions [a, 2]; velocities (the last two features) are left zero for
    the caller to fill where they are observed. A copy of the template is filled rather than
    pieces concatenated: the arrays are tiny, so numpy's per-call cost is what counts."""
    k = n_kinds
    rows = np.repeat(template[None], len(rel), axis=0)
    rows[..., k : k + 2] = rel
    rows[..., k + 2] = np.sqrt(np.einsum("aei,aei->ae", rel, rel))
    rows[..., k + 3 : k + 5] = rel + own_pos[:, None, :]
    return rows


def state_rows(template: np.ndarray, n_kinds: int, pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
    rows = template.copy()
    rows[:, n_kinds : n_kinds + 2] = pos
    rows[:, n_kinds + 2 :] = vel
    return rows


class MPELayout:
    """The spec of an MPE task from its entity kinds (shared by every engine of a scenario)."""

    OBS_KINDS: ClassVar[int]
    STATE_KINDS: ClassVar[int]

    @classmethod
    def team_size(cls, composition: Any) -> int:
        raise NotImplementedError

    @classmethod
    def kinds(cls, composition: Any) -> tuple[list[int], list[int]]:
        """Kind ids of the observation rows and of the state rows, in row order."""
        raise NotImplementedError

    @classmethod
    def describe(cls, args: Any, compositions: list[Any]) -> EnvSpec:
        entities = max(len(cls.kinds(c)[0]) for c in compositions)
        return EnvSpec(
            obs_features=obs_features(cls.OBS_KINDS),
            state_features=state_features(cls.STATE_KINDS),
            n_actions=N_MOVES,
            max_agents=max(cls.team_size(c) for c in compositions),
            max_entities=entities,
            max_state_entities=entities,
            episode_limit=args.max_cycles,
            discrete=not args.continuous_actions,
        )


class MPEBackend(MPELayout, ParallelEnvBackend):
    """What the mpe2-driven backends share: the mpe2 requirement, the parsing helpers."""

    requires: ClassVar[tuple[str, str]] = ("mpe2", "the mpe2 package")

    def make_env(self, composition_index: int) -> Slot:
        slot = super().make_env(composition_index)
        obs_kinds, state_kinds = self.kinds(self.compositions[composition_index])
        a, e = len(slot.team), len(obs_kinds)
        # Fixed per composition, so built once: kind templates and the (all-True) masks, which
        # frames may share because nothing writes to them.
        slot.static.update(
            obs_template=kind_rows(obs_kinds, self.OBS_KINDS, obs_features(self.OBS_KINDS)),
            state_template=kind_rows(state_kinds, self.STATE_KINDS, state_features(self.STATE_KINDS)),
            obs_mask=np.ones((a, e), dtype=bool),
            state_mask=np.ones(e, dtype=bool),
            agent_mask=np.ones(a, dtype=bool),
            avail=np.ones((a, N_MOVES), dtype=bool),
        )
        return slot

    def frame(self, slot: Slot, obs: np.ndarray, state: np.ndarray) -> Frame:
        st = slot.static
        return Frame(
            obs=obs,
            obs_mask=st["obs_mask"],
            state=state,
            state_mask=st["state_mask"],
            avail_actions=st["avail"],
            agent_mask=st["agent_mask"],
        )

    def raw_obs(self, slot: Slot, names: list[str]) -> np.ndarray:
        return np.array([slot.obs[a] for a in names], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Cooperative navigation


class SpreadArgs(BaseModel):
    """`args:` of an mpe_spread task."""

    model_config = ConfigDict(extra="forbid")

    local_ratio: float = Field(
        default=0.5, ge=0, le=1, description="weight of the agent's own collision penalty"
    )
    max_cycles: int = Field(default=25, ge=1, le=10_000, description="episode length in env steps")
    continuous_actions: bool = Field(
        default=False, description="5-d continuous moves instead of 5 discrete ones"
    )
    team_reward: Literal["sum", "mean"] = Field(
        default="sum", description="sum (PyMARL convention) or mean over agents"
    )
    cover_radius: float = Field(
        default=0.1, gt=0, description="won: every landmark has an agent this close at the end"
    )
    engine: Literal["numpy", "mpe2"] = Field(
        default="numpy",
        description="numpy = the harness's vectorised re-implementation of mpe2's simple_spread, "
        "verified step for step against mpe2; mpe2 = the mpe2 package itself",
    )

    @model_serializer(mode="wrap")
    def _default_engine_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Run ids hash the dumped args. Both engines play the same episodes, so the default one
        # is left out: runs recorded before the engine existed keep their ids.
        data = handler(self)
        if data.get("engine") == "numpy":
            del data["engine"]
        return data


class SpreadComposition(BaseModel):
    """A team of n_agents agents (and as many landmarks)."""

    model_config = ConfigDict(extra="forbid")

    n_agents: int = Field(default=3, ge=1, le=MAX_TEAM, description="agents, and landmarks")


@register_env("mpe_spread")
class MPESpreadBackend(MPELayout, Backend):
    """mpe2 simple_spread (cooperative navigation): N agents cover N landmarks.

    The registered name builds the engine `args.engine` names (`NumpySpreadBackend` or
    `MPE2SpreadBackend`, both subclasses), as `pathlib.Path` builds a `PosixPath`; the
    class-level contract below serves both.
    """

    Args = SpreadArgs
    Composition = SpreadComposition
    supports_autoreset = True  # both engines
    OBS_KINDS = 3  # self, agent, landmark
    STATE_KINDS = 2  # agent, landmark

    def __new__(cls, *args: Any, **kwargs: Any) -> MPESpreadBackend:
        if cls is MPESpreadBackend:  # subclasses (and unpickling) get the class they name
            spread_args = args[0] if args else kwargs["args"]
            cls = NumpySpreadBackend if spread_args.engine == "numpy" else MPE2SpreadBackend
        return super().__new__(cls)

    @classmethod
    def default_compositions(cls, args: SpreadArgs) -> list[SpreadComposition]:
        return [SpreadComposition()]

    @classmethod
    def composition_name(cls, args: SpreadArgs, composition: SpreadComposition) -> str:
        return f"{composition.n_agents} agents"

    @classmethod
    def missing_requirements(cls, args: SpreadArgs) -> str | None:
        if args.engine == "numpy":
            return None
        return requirement_problem(cls.name, *MPEBackend.requires)

    # The raw loop is mpe2's own, whichever engine the task runs.
    raw_loop_label = "mpe2 simple_spread_v3 parallel_env loop"

    @classmethod
    def raw_loop(cls, args: SpreadArgs, composition: SpreadComposition, num_envs: int, **options: Any) -> Loop:
        return library_loop(MPE2SpreadBackend(args.model_copy(update={"engine": "mpe2"}), [composition], 1, 0), num_envs)

    @classmethod
    def raw_loop_missing(cls, args: SpreadArgs) -> str | None:
        return requirement_problem(cls.name, *MPEBackend.requires)

    @classmethod
    def team_size(cls, composition: SpreadComposition) -> int:
        return composition.n_agents

    @classmethod
    def kinds(cls, composition: SpreadComposition) -> tuple[list[int], list[int]]:
        n = composition.n_agents
        return [0] + [1] * (n - 1) + [2] * n, [0] * n + [1] * n


class MPE2SpreadBackend(MPESpreadBackend, MPEBackend):
    """`engine: mpe2`: one mpe2 ParallelEnv per batch slot, its observations parsed into rows."""

    def build(self, composition_index: int) -> Any:
        a = self.args
        module = quiet_import("mpe2.simple_spread_v3")
        return module.parallel_env(
            N=self.compositions[composition_index].n_agents,
            local_ratio=a.local_ratio,
            max_cycles=a.max_cycles,
            continuous_actions=a.continuous_actions,
        )

    def split(self, slot: Slot) -> tuple[np.ndarray, ...]:
        """mpe2's layout: vel [n, 2], pos [n, 2], landmarks' and other agents' rel positions."""
        n = len(slot.team)
        raw = self.raw_obs(slot, slot.team)
        landmarks = raw[:, 4 : 4 + 2 * n].reshape(n, n, 2)
        others = raw[:, 4 + 2 * n : 4 + 2 * n + 2 * (n - 1)].reshape(n, n - 1, 2)
        return raw[:, 0:2], raw[:, 2:4], landmarks, others

    def parse(self, slot: Slot, composition_index: int) -> Frame:
        n = len(slot.team)
        vel, pos, landmarks, others = self.split(slot)
        rel = np.concatenate([np.zeros((n, 1, 2)), others, landmarks], axis=1)
        obs = entity_rows(slot.static["obs_template"], self.OBS_KINDS, rel, pos)
        obs[:, 0, -VEL:] = vel  # an agent observes only its own velocity
        # The landmarks' absolute positions, as agent 0 sees them.
        state_pos = np.concatenate([pos, pos[0] + landmarks[0]])
        state_vel = np.concatenate([vel, np.zeros((n, 2))])
        return self.frame(
            slot, obs, state_rows(slot.static["state_template"], self.STATE_KINDS, state_pos, state_vel)
        )

    def success(self, slot: Slot, composition_index: int, terminated: bool) -> bool:
        _, _, landmarks, _ = self.split(slot)
        nearest = np.linalg.norm(landmarks, axis=-1).min(axis=0)  # per landmark, over agents
        return bool((nearest < self.args.cover_radius).all())


@dataclass(frozen=True)
class SpreadRows:
    """Where a batch's observation and state rows come from, fixed for an episode: flat indices
    into `SpreadWorlds.offset`/`distance` (pairs, [B * N * 2N]) and `entities` ([B * 2N])."""

    obs_pair: np.ndarray  # [B, N, 2N]: the (agent, entity) pair row e of agent i describes
    obs_entity: np.ndarray  # [B, N, 2N]: the entity whose position row e holds
    state_entity: np.ndarray  # [B, 2N]
    obs_template: np.ndarray  # [B, N, 2N, F] float32: the kind one-hots, zeros on padding
    state_template: np.ndarray  # [B, 2N, G] float32
    masks: dict[str, np.ndarray]  # obs_mask, state_mask, avail_actions, agent_mask


def composition_rows(n: int, max_agents: int, discrete: bool) -> dict[str, np.ndarray]:
    """One composition's row sources, templates and masks, padded to max_agents (N) agents.

    Agent i's rows: itself, the other agents in slot order, then the landmarks (the mpe2
    engine's layout); the state lists the agents, then the landmarks. Padding rows read zeros:
    an agent's offset to itself, and the position of a padding entity (at the origin; when
    n < N, slot N - 1 is one; when n == N no row is padding).
    """
    big_n, rows = max_agents, 2 * max_agents
    entity = np.repeat(np.arange(big_n)[:, None], rows, axis=1)  # absent agents: their own slot
    entity[:n] = big_n - 1
    pair = entity.copy()
    for i in range(n):
        real = [i] + [j for j in range(n) if j != i] + list(range(big_n, big_n + n))
        entity[i, : 2 * n] = pair[i, : 2 * n] = real
        pair[i, 2 * n :] = i
    state_entity = np.full(rows, big_n - 1)
    state_entity[: 2 * n] = [*range(n), *range(big_n, big_n + n)]
    obs_kinds, state_kinds = MPESpreadBackend.kinds(SpreadComposition(n_agents=n))
    obs_template = np.zeros((big_n, rows, obs_features(MPESpreadBackend.OBS_KINDS)), np.float32)
    obs_template[:n, : 2 * n] = kind_rows(obs_kinds, MPESpreadBackend.OBS_KINDS, obs_template.shape[-1])
    state_template = np.zeros((rows, state_features(MPESpreadBackend.STATE_KINDS)), np.float32)
    state_template[: 2 * n] = kind_rows(state_kinds, MPESpreadBackend.STATE_KINDS, state_template.shape[-1])
    agent_mask = np.arange(big_n) < n
    avail = np.ones((big_n, N_MOVES), dtype=bool)
    if discrete:  # padded agent slots may "act", but only the no-op
        avail[n:, 1:] = False
    return {
        "obs_pair": np.arange(big_n)[:, None] * rows + pair,
        "obs_entity": entity,
        "state_entity": state_entity,
        "obs_template": obs_template,
        "state_template": state_template,
        "obs_mask": agent_mask[:, None] & (np.arange(rows) < 2 * n),
        "state_mask": np.arange(rows) < 2 * n,
        "avail_actions": avail,
        "agent_mask": agent_mask,
    }


class NumpySpreadBackend(EpisodeDraws, MPESpreadBackend):
    """`engine: numpy`: every slot's world in one `SpreadWorlds` batch, stepped in numpy.

    It draws compositions and per-episode seeds from `self.rng` exactly as the mpe2 engine
    (`PythonBatchBackend.reset`) does and saves that generator in the same JSON, so the two
    engines give the same Steps for a seed and a checkpoint of one resumes on the other.
    Episodes never end early (simple_spread has no terminal state), so every slot of a batch
    is at the same step and the batch ends at once, after max_cycles steps (and with
    auto-reset, starts its next episodes at once, as `reset` would).
    """

    def __init__(self, args: SpreadArgs, compositions: list[SpreadComposition], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        super().__init__(args, compositions, num_envs, seed, weights, training)
        self.worlds = SpreadWorlds(num_envs, self.spec.max_agents)
        self.team_sizes = np.array([c.n_agents for c in compositions], dtype=np.int64)
        per_composition = [composition_rows(c.n_agents, self.spec.max_agents, self.spec.discrete)
                           for c in compositions]
        self._tables = {k: np.stack([t[k] for t in per_composition]) for k in per_composition[0]}
        self.comp = np.zeros(num_envs, dtype=np.int64)
        self.t = 0
        self._rows: SpreadRows | None = None
        self._last: Step | None = None

    # ---- batched contract ----------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Step:
        self.restart_draws(seed)
        self.comp, env_seeds = self.draw_episodes(self.num_envs)
        sizes = self.team_sizes[self.comp]
        self.worlds.reset(sizes, env_seeds)
        self._rows = self._batch_rows()
        self.t = 0
        no = np.zeros(self.num_envs, dtype=bool)
        return self._step(np.zeros(self.num_envs, dtype=np.float32), no, no)

    def step(self, actions: np.ndarray) -> Step:
        actions = checked_actions(actions, self.spec, self.num_envs)
        if self._last is None:
            raise RuntimeError("mpe_spread: call reset() before step()")
        if self.t >= self.args.max_cycles:  # the batch has ended: done, zero reward, until reset
            return self.reset() if self.autoreset else self._after_end(self._last)
        self.worlds.step(self._control(actions))
        self.t += 1
        per_agent = self.worlds.rewards(self.args.local_ratio)
        reward = per_agent.sum(axis=1)
        if self.args.team_reward == "mean":
            reward = reward / self.team_sizes[self.comp]
        done = self.t >= self.args.max_cycles
        won = self.worlds.covered(self.args.cover_radius) if done else np.zeros(self.num_envs, dtype=bool)
        return self._step(reward.astype(np.float32), np.full(self.num_envs, done), won)

    def _control(self, actions: np.ndarray) -> np.ndarray:
        if self.spec.discrete:
            return discrete_forces(actions)
        # [-1, 1] onto mpe2's [0, 1] Box, rounded to float32 as the mpe2 engine hands it over.
        box = np.clip(actions, -1.0, 1.0).astype(np.float64)
        box += 1.0
        box *= 0.5
        return continuous_forces(box.astype(np.float32))

    # ---- observations ----------------------------------------------------------------------------
    def _batch_rows(self) -> SpreadRows:
        t, comp = self._tables, self.comp
        world = np.arange(self.num_envs)
        pairs, entities = self.spec.max_agents * self.spec.max_entities, self.spec.max_entities
        return SpreadRows(
            obs_pair=(world * pairs)[:, None, None] + t["obs_pair"][comp],
            obs_entity=(world * entities)[:, None, None] + t["obs_entity"][comp],
            state_entity=(world * entities)[:, None] + t["state_entity"][comp],
            obs_template=t["obs_template"][comp],
            state_template=t["state_template"][comp],
            masks={k: t[k][comp] for k in ("obs_mask", "state_mask", "avail_actions", "agent_mask")},
        )

    def _observations(self, rows: SpreadRows) -> tuple[np.ndarray, np.ndarray]:
        """obs [B, N, 2N, F] and state [B, 2N, G] in the mpe2 engine's layout (module docstring),
        gathered from what the worlds measured this step."""
        k, worlds = self.OBS_KINDS, self.worlds
        positions = worlds.entities.reshape(-1, 2)
        obs = rows.obs_template.copy()
        obs[..., k : k + 2] = worlds.offset.reshape(-1, 2)[rows.obs_pair]
        obs[..., k + 2] = worlds.distance.reshape(-1)[rows.obs_pair]
        obs[..., k + 3 : k + 5] = positions[rows.obs_entity]
        obs[:, :, 0, k + 5 :] = worlds.velocity  # an agent observes only its own velocity
        state = rows.state_template.copy()
        state[..., 2:4] = positions[rows.state_entity]
        # Agents' rows come first; padding agents (at rest) give the landmark rows after them zeros.
        state[:, : self.spec.max_agents, 4:] = worlds.velocity
        return obs, state

    def _step(self, reward: np.ndarray, done: np.ndarray, won: np.ndarray) -> Step:
        assert self._rows is not None
        obs, state = self._observations(self._rows)
        masks = self._rows.masks
        self._last = Step(
            obs=obs,
            obs_mask=masks["obs_mask"].copy(),
            state=state,
            state_mask=masks["state_mask"].copy(),
            avail_actions=masks["avail_actions"].copy(),
            agent_mask=masks["agent_mask"].copy(),
            reward=reward,
            done=done,
            terminated=np.zeros(self.num_envs, dtype=bool),
            won=won & done,
            composition=self.comp.copy(),
        )
        return self._last

    def _after_end(self, last: Step) -> Step:
        fresh = {f.name: getattr(last, f.name).copy() for f in dataclasses.fields(Step)}
        fresh["reward"] = np.zeros(self.num_envs, dtype=np.float32)
        return Step(**fresh)

    # ---- episodes in flight (continuous rollouts) ----------------------------------------------
    def env_state(self) -> dict[str, np.ndarray]:
        """The worlds mid-episode (continuous rollouts; the mpe2 engine cannot save its own)."""
        if self._last is None:
            raise RuntimeError("mpe_spread: call reset() before env_state()")
        worlds, last = self.worlds, self._last
        return {"entities": worlds.entities, "velocity": worlds.velocity, "present": worlds.present,
                "comp": self.comp, "t": np.array(self.t),
                **{f"last_{f.name}": getattr(last, f.name) for f in dataclasses.fields(Step)}}

    def load_env_state(self, state: dict[str, np.ndarray]) -> None:
        self.comp, self.t = state["comp"].copy(), int(state["t"])
        self.worlds.restore(state["entities"], state["velocity"], state["present"])
        self._rows = self._batch_rows()
        self._last = Step(**{f.name: state[f"last_{f.name}"].copy() for f in dataclasses.fields(Step)})


# ---------------------------------------------------------------------------------------------
# Predator-prey

# mpe2's simple_tag sizes: a contact is predator (0.075) and prey (0.05) radii overlapping.
CATCH_DISTANCE = 0.075 + 0.05
# The flee script turns back from the edge of the arena (mpe2 penalises prey beyond 0.9).
EDGE, EDGE_GAIN = 0.8, 10.0


class TagArgs(BaseModel):
    """`args:` of an mpe_tag task."""

    model_config = ConfigDict(extra="forbid")

    max_cycles: int = Field(default=25, ge=1, le=10_000, description="episode length in env steps")
    continuous_actions: bool = Field(
        default=False, description="5-d continuous moves instead of 5 discrete ones"
    )
    team_reward: Literal["sum", "mean"] = Field(
        default="mean",
        description="mean = the predators' shared reward (10 per contact); sum = x n_predators",
    )
    prey_policy: Literal["flee", "random", "still"] = Field(
        default="flee",
        description="scripted prey: flee the predators (weighted by closeness), move at random, or stay",
    )
    end_on_capture: bool = Field(
        default=False, description="end the episode once every prey is touched at once"
    )


class TagComposition(BaseModel):
    """Predators (the learning team), scripted prey and obstacles."""

    model_config = ConfigDict(extra="forbid")

    n_predators: int = Field(default=3, ge=1, le=MAX_TEAM)
    n_prey: int = Field(default=1, ge=1, le=MAX_TEAM)
    n_obstacles: int = Field(default=2, ge=0, le=MAX_TEAM)


@register_env("mpe_tag")
class MPETagBackend(MPEBackend):
    """mpe2 simple_tag as predator-prey: the predators learn, the prey follow a script."""

    Args = TagArgs
    Composition = TagComposition
    raw_loop_label = "mpe2 simple_tag_v3 parallel_env loop"
    OBS_KINDS = 4  # self, predator, prey, obstacle
    STATE_KINDS = 3  # predator, prey, obstacle

    @classmethod
    def default_compositions(cls, args: TagArgs) -> list[TagComposition]:
        return [TagComposition()]

    @classmethod
    def composition_name(cls, args: TagArgs, composition: TagComposition) -> str:
        c = composition
        return f"{c.n_predators}v{c.n_prey} obstacles={c.n_obstacles}"

    @classmethod
    def team_size(cls, composition: TagComposition) -> int:
        return composition.n_predators

    @classmethod
    def kinds(cls, composition: TagComposition) -> tuple[list[int], list[int]]:
        k, m, o = composition.n_predators, composition.n_prey, composition.n_obstacles
        return [0] + [1] * (k - 1) + [2] * m + [3] * o, [0] * k + [1] * m + [2] * o

    def build(self, composition_index: int) -> Any:
        a, c = self.args, self.compositions[composition_index]
        module = quiet_import("mpe2.simple_tag_v3")
        return module.parallel_env(
            num_good=c.n_prey,
            num_adversaries=c.n_predators,
            num_obstacles=c.n_obstacles,
            max_cycles=a.max_cycles,
            continuous_actions=a.continuous_actions,
            terminate_on_success=a.end_on_capture,
        )

    def team_of(self, env: Any, composition_index: int) -> list[str]:
        return [a for a in env.possible_agents if a.startswith("adversary_")]

    def make_env(self, composition_index: int) -> Slot:
        slot = super().make_env(composition_index)
        slot.static["prey"] = [a for a in slot.env.possible_agents if a not in slot.team]
        return slot

    def split(self, slot: Slot, composition_index: int) -> tuple[np.ndarray, ...]:
        """Predators' view in mpe2's layout: vel, pos [k, 2], obstacles [k, o, 2], other
        predators [k, k-1, 2], prey [k, m, 2] (relative positions) and prey velocities [k, m, 2]."""
        c = self.compositions[composition_index]
        k, m, o = c.n_predators, c.n_prey, c.n_obstacles
        raw = self.raw_obs(slot, slot.team)
        obstacles = raw[:, 4 : 4 + 2 * o].reshape(k, o, 2)
        others = raw[:, 4 + 2 * o : 4 + 2 * o + 2 * (k + m - 1)].reshape(k, k + m - 1, 2)
        prey_vel = raw[:, 4 + 2 * o + 2 * (k + m - 1) :].reshape(k, m, 2)
        return raw[:, 0:2], raw[:, 2:4], obstacles, others[:, : k - 1], others[:, k - 1 :], prey_vel

    def parse(self, slot: Slot, composition_index: int) -> Frame:
        vel, pos, obstacles, mates, prey, prey_vel = self.split(slot, composition_index)
        k, m, o = len(pos), prey.shape[1], obstacles.shape[1]
        rel = np.concatenate([np.zeros((k, 1, 2)), mates, prey, obstacles], axis=1)
        obs = entity_rows(slot.static["obs_template"], self.OBS_KINDS, rel, pos)
        obs[:, 0, -VEL:] = vel  # own velocity, and the prey's (mpe2 shows predators the prey's velocities)
        obs[:, k : k + m, -VEL:] = prey_vel
        # Others' absolute positions as predator 0 sees them.
        state_pos = np.concatenate([pos, pos[0] + prey[0], pos[0] + obstacles[0]])
        state_vel = np.concatenate([vel, prey_vel[0], np.zeros((o, 2))])
        return self.frame(
            slot, obs, state_rows(slot.static["state_template"], self.STATE_KINDS, state_pos, state_vel)
        )

    def track(self, slot: Slot, composition_index: int) -> None:
        _, _, _, _, prey, _ = self.split(slot, composition_index)
        caught = (np.linalg.norm(prey, axis=-1) < CATCH_DISTANCE).any(axis=0)  # per prey, over predators
        slot.episode["captured"] = slot.episode.get("captured", False) or bool(caught.all())

    def success(self, slot: Slot, composition_index: int, terminated: bool) -> bool:
        return bool(slot.episode.get("captured", False))

    # ---- the scripted prey --------------------------------------------------------------------
    def scripted_actions(self, slot: Slot, composition_index: int) -> dict[str, Any]:
        names = [a for a in slot.static["prey"] if a in slot.obs and a in slot.env.agents]
        if not names:
            return {}
        k = self.compositions[composition_index].n_predators
        o = self.compositions[composition_index].n_obstacles
        raw = self.raw_obs(slot, names)
        pos, predators = raw[:, 2:4], raw[:, 4 + 2 * o : 4 + 2 * o + 2 * k].reshape(len(names), k, 2)
        directions = self._prey_directions(slot, pos, predators)
        return {name: self._move(d) for name, d in zip(names, directions, strict=True)}

    def _prey_directions(self, slot: Slot, pos: np.ndarray, predators: np.ndarray) -> np.ndarray:
        """[m, 2] desired direction of each prey."""
        policy = self.args.prey_policy
        if policy == "still":
            return np.zeros_like(pos)
        if policy == "random":
            return MOVES[slot.rng.integers(0, N_MOVES, size=len(pos))]
        # Away from every predator, the closest weighing most (1 / distance), and back from the edge.
        dist2 = np.maximum((predators**2).sum(-1, keepdims=True), 1e-6)
        away = -(predators / dist2).sum(axis=1)
        return away - np.sign(pos) * np.clip(np.abs(pos) - EDGE, 0, None) * EDGE_GAIN

    def _move(self, direction: np.ndarray) -> Any:
        if not self.args.continuous_actions:
            return int(np.argmax(MOVES @ direction))  # ties (no preference) pick 0, the no-op
        # mpe2's continuous move is (a[2] - a[1], a[4] - a[3]) with each entry in [0, 1].
        scale = max(np.abs(direction).max(), 1e-9)
        x, y = direction / scale
        return np.array([0, max(-x, 0), max(x, 0), max(-y, 0), max(y, 0)], dtype=np.float32)
