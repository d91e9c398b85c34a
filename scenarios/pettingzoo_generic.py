"""PettingZoo environments as harness backends: the shared driver and the generic adapter.

`ParallelEnvBackend` runs one PettingZoo `ParallelEnv` per batch slot (on top of
`PythonBatchBackend`): it turns the harness's action rows into the env's action dict,
steps, and folds the per-agent rewards and end flags into the batched contract. Its
subclasses say which agents form the learning team and how an observation becomes an entity
list (`scenarios.mpe`, `scenarios.multiwalker`).

`pettingzoo` (registered here) wraps any ParallelEnv by import path:

    env: pettingzoo
    args: {env: pettingzoo.sisl.multiwalker_v9, kwargs: {terrain_length: 100}, team_reward: mean}
    train: [{kwargs: {n_walkers: 3}}]

`env` names a module with a `parallel_env()` factory, or `module:factory` for any callable
returning a ParallelEnv (an AEC env marked parallelizable is converted). Every agent of the
env is on the learning team, in `possible_agents` order. No entity structure is known, so
each agent's flattened observation is its one entity (E = 1; agents whose observations are
shorter are zero-padded to the longest), and the state lists every agent's observation row
in slot order (N = number of agents, G = F). The available actions come from
`infos[agent]["action_mask"]`, or from a dict observation's "action_mask" entry (whose
"observation" entry is then the features). Discrete and Box action spaces are supported;
Box actions arrive in [-1, 1] and are mapped onto the Box's finite bounds. Compositions that
change the observation size are refused: this adapter cannot align their features, which
takes a backend with its own entity parser.

The team reward is the sum (default) or mean of the team's rewards at each step. An episode
ends when the env has no agents left (or none of the team); it counts as truncated when the
agents left by truncation and none by termination, and the adapter itself truncates at
`episode_limit` (default: the env's `max_cycles`). An agent that leaves while others play on
is masked off (agent_mask False) from that step; at the episode's last step every agent that
acted keeps its final observation (a truncated episode bootstraps from it).

Each episode reseeds its env (and any scripted opponents) from the seed the base class draws,
so the same seed gives the same Steps, and a checkpoint needs nothing beyond the base class's
random state (rollouts always start with a reset). Heavy libraries are imported inside
methods only: the harness imports every scenarios module at startup.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.api import EnvSpec, Loop, Step
from harness.errors import ConfigError, closest
from harness.registry import check_import_allowed, register_env
from scenarios.python_batch import Frame, Outcome, PythonBatchBackend

INSTALL_HINT = "pip install -e '.[pettingzoo]' -c constraints.txt"


def quiet_import(module: str) -> Any:
    # pygame (imported by mpe2 and the SISL envs) prints a banner on import unless told not to.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    return importlib.import_module(module)


def requirement_problem(backend: str, module: str, what: str) -> str | None:
    """None if `module` imports, else a message saying what to install."""
    try:
        quiet_import(module)
    except ImportError as exc:
        return f"backend {backend} needs {what}: {INSTALL_HINT} ({exc})"
    return None


# ---------------------------------------------------------------------------------------------
# Actions and observations of one agent


@dataclass(frozen=True)
class ActionCodec:
    """Maps one harness action row onto an agent's PettingZoo action space."""

    discrete: bool
    size: int  # number of actions (discrete) or flat action dimension (continuous)
    start: int = 0
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, space: Any) -> ActionCodec:
        from gymnasium import spaces

        if isinstance(space, spaces.Discrete):
            return cls(True, int(space.n), int(space.start))
        if isinstance(space, spaces.Box):
            low, high = space.low.astype(np.float64).ravel(), space.high.astype(np.float64).ravel()
            return cls(False, int(low.size), low=low, high=high, shape=tuple(space.shape))
        raise TypeError(f"unsupported action space {space} (Discrete and Box are supported)")

    def decode(self, row: np.ndarray) -> Any:
        if self.discrete:
            return int(row) + self.start
        assert self.low is not None and self.high is not None
        a = np.clip(np.asarray(row[: self.size], dtype=np.float64), -1.0, 1.0)
        # [-1, 1] -> [low, high] where the bounds are finite; an unbounded dimension gets a as is.
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        scaled = np.where(finite, self.low + (a + 1.0) * 0.5 * (self.high - self.low), a)
        return scaled.astype(np.float32).reshape(self.shape)


@dataclass(frozen=True)
class ObsCodec:
    """Flattens one agent's observation (a dict observation's "observation" entry if it has one)."""

    space: Any
    size: int
    key: str | None = None

    @classmethod
    def of(cls, space: Any) -> ObsCodec:
        from gymnasium import spaces

        key = None
        if isinstance(space, spaces.Dict) and "observation" in space.spaces:
            key, space = "observation", space["observation"]
        return cls(space, int(spaces.flatdim(space)), key)

    def encode(self, obs: Any) -> np.ndarray:
        from gymnasium import spaces

        if self.key is not None:
            obs = obs[self.key]
        if isinstance(self.space, spaces.Box):
            return np.asarray(obs, dtype=np.float32).reshape(-1)
        return np.asarray(spaces.flatten(self.space, obs), dtype=np.float32)


def action_mask(obs: Any, info: Any) -> np.ndarray | None:
    """The PettingZoo conventions for masks: in the info dict or in a dict observation."""
    if isinstance(info, dict) and info.get("action_mask") is not None:
        return np.asarray(info["action_mask"], dtype=bool)
    if isinstance(obs, dict) and obs.get("action_mask") is not None:
        return np.asarray(obs["action_mask"], dtype=bool)
    return None


# ---------------------------------------------------------------------------------------------
# The shared driver


@dataclass
class Slot:
    """One PettingZoo env of the batch and what the backend tracks of its current episode."""

    env: Any
    team: list[str]  # the learning agents, in slot order
    actions: list[ActionCodec]
    static: dict[str, Any] = field(default_factory=dict)  # backend data fixed for this env
    t: int = 0
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # [len(team)]
    obs: dict[str, Any] = field(default_factory=dict)
    infos: dict[str, Any] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # scripted opponents
    episode: dict[str, Any] = field(default_factory=dict)  # per-episode extras (e.g. a success flag)


class ParallelEnvBackend(PythonBatchBackend):
    """Batched backend over PettingZoo ParallelEnvs; subclasses implement `build` and `parse`."""

    requires: ClassVar[tuple[str, str]] = ("pettingzoo", "the pettingzoo package")

    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        return requirement_problem(cls.name, *cls.requires)

    @classmethod
    def raw_loop(cls, args: Any, composition: Any, num_envs: int, **options: Any) -> Loop:
        return library_loop(cls(args, [composition], 1, 0), num_envs)

    # ---- hooks -------------------------------------------------------------------------------
    def build(self, composition_index: int) -> Any:
        """A new PettingZoo ParallelEnv playing that composition."""
        raise NotImplementedError

    def team_of(self, env: Any, composition_index: int) -> list[str]:
        return list(env.possible_agents)

    def parse(self, slot: Slot, composition_index: int) -> Frame:
        """The current observation of `slot` (slot.obs, slot.infos, slot.alive) as a Frame."""
        raise NotImplementedError

    def scripted_actions(self, slot: Slot, composition_index: int) -> dict[str, Any]:
        """Actions of the env's agents outside the learning team (none by default)."""
        return {}

    def track(self, slot: Slot, composition_index: int) -> None:
        """Called after every reset and step, to follow per-episode facts (e.g. success)."""

    def success(self, slot: Slot, composition_index: int, terminated: bool) -> bool:
        return False

    def reward_mode(self) -> str:
        return str(getattr(self.args, "team_reward", "sum"))

    def team_reward(self, slot: Slot, rewards: dict[str, Any]) -> float:
        values = [float(rewards[a]) for a in slot.team if a in rewards]
        total = sum(values)
        return total / len(values) if values and self.reward_mode() == "mean" else total

    def episode_end(
        self, slot: Slot, terminations: dict[str, bool], truncations: dict[str, bool]
    ) -> tuple[bool, bool]:
        """(terminated, truncated) after a step."""
        if not slot.env.agents or not slot.alive.any():
            truncated = any(truncations.values()) and not any(terminations.values())
            return not truncated, truncated
        # A time limit the env does not enforce itself (rollouts must end within episode_limit).
        return False, slot.t >= self.spec.episode_limit

    # ---- PythonBatchBackend hooks ------------------------------------------------------------
    def make_env(self, composition_index: int) -> Slot:
        env = self.build(composition_index)
        team = self.team_of(env, composition_index)
        return Slot(env, team, [ActionCodec.of(env.action_space(a)) for a in team])

    def _refresh(self, slot: Slot, obs: dict[str, Any], infos: dict[str, Any]) -> None:
        slot.obs, slot.infos = obs, infos
        live = set(slot.env.agents)
        if live or not len(slot.alive):
            slot.alive = np.array([a in live for a in slot.team], dtype=bool)
        else:
            # The episode's last step: PettingZoo has removed every agent, but those that acted
            # still show their final observation (a truncated episode bootstraps from it).
            slot.alive = slot.alive & np.array([a in obs for a in slot.team], dtype=bool)

    def reset_env(self, slot: Slot, composition_index: int, seed: int) -> Frame:
        obs, infos = slot.env.reset(seed=seed)
        slot.t, slot.episode = 0, {}
        slot.rng = np.random.default_rng(seed)
        self._refresh(slot, obs, infos)
        self.track(slot, composition_index)
        return self.parse(slot, composition_index)

    def step_env(self, slot: Slot, composition_index: int, actions: np.ndarray) -> Outcome:
        joint = {
            name: codec.decode(actions[i])
            for i, (name, codec) in enumerate(zip(slot.team, slot.actions, strict=True))
            if slot.alive[i]
        }
        joint.update(self.scripted_actions(slot, composition_index))
        obs, rewards, terminations, truncations, infos = slot.env.step(joint)
        slot.t += 1
        self._refresh(slot, obs, infos)
        self.track(slot, composition_index)
        terminated, truncated = self.episode_end(slot, terminations, truncations)
        won = self.success(slot, composition_index, terminated) if terminated or truncated else False
        return Outcome(
            self.parse(slot, composition_index), self.team_reward(slot, rewards), terminated, truncated, won
        )

    def step(self, actions: np.ndarray) -> Step:
        """The base class's step, after checking the actions' shape and range."""
        return super().step(checked_actions(actions, self.spec, self.num_envs))


def checked_actions(actions: np.ndarray, spec: EnvSpec, num_envs: int) -> np.ndarray:
    """`actions` as an array, or ValueError if its shape or values break the batched contract."""
    actions = np.asarray(actions)
    shape = (num_envs, spec.max_agents) + (() if spec.discrete else (spec.n_actions,))
    if actions.shape != shape:
        raise ValueError(f"actions must have shape {shape}, got {actions.shape}")
    if spec.discrete and actions.size and (actions.min() < 0 or actions.max() >= spec.n_actions):
        raise ValueError(f"actions must lie in [0, {spec.n_actions}), got {actions.min()}..{actions.max()}")
    if not spec.discrete and not np.isfinite(actions).all():
        raise ValueError("continuous actions must be finite")
    return actions


# ---------------------------------------------------------------------------------------------
# The generic adapter

_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")


class PettingZooArgs(BaseModel):
    """`args:` of a generic PettingZoo task."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(
        description="module with parallel_env() (pettingzoo.sisl.multiwalker_v9) or 'module:factory'"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    team_reward: Literal["sum", "mean"] = Field(
        default="sum", description="team reward: sum or mean of the agents' rewards"
    )
    episode_limit: int | None = Field(
        default=None, ge=1, le=1_000_000, description="truncate episodes here (default: the env's max_cycles)"
    )

    @field_validator("env")
    @classmethod
    def _looks_like_import_path(cls, v: str) -> str:
        if not _IMPORT_PATH.match(v):
            raise ValueError(
                "expected a module path like 'pettingzoo.sisl.multiwalker_v9' or 'package.module:factory'"
            )
        return v


class PettingZooComposition(BaseModel):
    """A team: keyword arguments of the factory that differ from `args.kwargs` (e.g. n_walkers)."""

    model_config = ConfigDict(extra="forbid")

    kwargs: dict[str, Any] = Field(default_factory=dict)


def _module_problem(path: str) -> str | None:
    """Why `path`'s module cannot be imported: a typo (returned here) or a missing package
    (None here; `missing_requirements` reports it)."""
    module_name = path.partition(":")[0]
    try:
        quiet_import(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        # The path itself, or a sub-package on it, does not exist: a typo. A missing top-level
        # package or dependency is a requirement instead.
        if missing == module_name or (module_name.startswith(missing + ".") and "." in missing):
            parent, _, leaf = module_name.rpartition(".")
            hint = _sibling_hint(parent, leaf)
            return f"no module '{missing}'" + (f" (did you mean '{hint}'?)" if hint else "")
    except ImportError:
        pass  # the module exists but a dependency of it fails: a requirement too
    return None


def _sibling_hint(parent: str, leaf: str) -> str | None:
    try:
        package = importlib.import_module(parent)
    except ImportError:
        return None
    names = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
    found = closest(leaf, names)
    return f"{parent}.{found}" if found else None


def _import_allowed(path: str) -> bool:
    try:
        check_import_allowed(path.partition(":")[0], path, ("args", "env"))
    except ConfigError:
        return False  # check_task reports it, naming the key
    return True


def resolve_factory(path: str) -> Any:
    """The callable named by `path` (ConfigError at args.env if there is none, or if its module
    is not one the user allowed to be imported)."""
    check_import_allowed(path.partition(":")[0], path, ("args", "env"))
    problem = _module_problem(path)
    if problem:
        raise ConfigError.single(
            ("args", "env"), f"cannot import the environment module: {problem}", found=path
        )
    module_name, _, attr = path.partition(":")
    module = quiet_import(module_name)
    attr = attr or "parallel_env"
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError.single(
            ("args", "env"), f"module '{module_name}' has no callable '{attr}'", found=path
        )
    return factory


def make_parallel_env(path: str, kwargs: dict[str, Any]) -> Any:
    from pettingzoo import AECEnv
    from pettingzoo.utils.conversions import aec_to_parallel

    env = resolve_factory(path)(**kwargs)
    if isinstance(env, AECEnv):
        env = aec_to_parallel(env)
    if not all(hasattr(env, name) for name in ("reset", "step", "possible_agents", "action_space")):
        raise ConfigError.single(
            ("args", "env"), "the factory did not return a PettingZoo ParallelEnv", found=type(env).__name__
        )
    return env


@dataclass(frozen=True)
class Probe:
    """What describe() needs from one composition's env."""

    agents: tuple[str, ...]
    obs_size: int  # longest flat observation over the agents
    discrete: bool
    n_actions: int  # most actions (discrete) or largest action dimension (continuous)
    max_cycles: int | None


@functools.lru_cache(maxsize=128)
def _probe(path: str, kwargs_json: str) -> Probe:
    """Build the env once to read its spaces (cached per env path and kwargs)."""
    kwargs = json.loads(kwargs_json)
    env = make_parallel_env(path, kwargs)
    try:
        agents = tuple(env.possible_agents)
        codecs = [ActionCodec.of(env.action_space(a)) for a in agents]
        if len({c.discrete for c in codecs}) > 1:
            raise TypeError("the agents mix Discrete and Box action spaces")
        sizes = [ObsCodec.of(env.observation_space(a)).size for a in agents]
        return Probe(
            agents,
            max(sizes),
            codecs[0].discrete,
            max(c.size for c in codecs),
            kwargs.get("max_cycles", _max_cycles(env)),
        )
    finally:
        env.close()


def _max_cycles(env: Any) -> int | None:
    """The env's own episode limit: PettingZoo envs keep `max_cycles` on the raw env or, like
    the SISL ones, on the simulation object it wraps (`.env`)."""
    raw = env.unwrapped
    for holder in (raw, getattr(raw, "env", None)):
        cycles = getattr(holder, "max_cycles", None)
        if isinstance(cycles, int) and cycles > 0:
            return cycles
    return None


@register_env("pettingzoo")
class PettingZooBackend(ParallelEnvBackend):
    """Any PettingZoo ParallelEnv by import path, one entity per agent (module docstring)."""

    Args = PettingZooArgs
    Composition = PettingZooComposition
    raw_loop_label = "the module's parallel_env loop"

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def default_compositions(cls, args: PettingZooArgs) -> list[PettingZooComposition]:
        return [PettingZooComposition()]

    @classmethod
    def composition_name(cls, args: PettingZooArgs, composition: PettingZooComposition) -> str:
        kw = composition.kwargs
        return ",".join(f"{k}={v}" for k, v in sorted(kw.items())) if kw else "default"

    @classmethod
    def missing_requirements(cls, args: PettingZooArgs) -> str | None:
        problem = requirement_problem(cls.name, "pettingzoo", "the pettingzoo package")
        if problem or not _import_allowed(args.env) or _module_problem(args.env):
            return problem  # a typo in args.env is a config error (check_task), not a missing package
        try:
            quiet_import(args.env.partition(":")[0])
        except ImportError as exc:
            return (
                f"backend pettingzoo: module '{args.env}' needs a package that is not installed here ({exc})"
            )
        return None

    @classmethod
    def check_task(cls, args: PettingZooArgs, splits: dict[str, list[PettingZooComposition]]) -> None:
        if cls.missing_requirements(args):
            return  # reported by the harness as a missing requirement
        resolve_factory(args.env)
        cls._probe_all(args, [(("args", "kwargs"), PettingZooComposition())])
        cls._probe_all(
            args, [((split, i, "kwargs"), c) for split, comps in splits.items() for i, c in enumerate(comps)]
        )

    @classmethod
    def _probe_all(
        cls, args: PettingZooArgs, labelled: list[tuple[tuple[Any, ...], PettingZooComposition]]
    ) -> list[Probe]:
        """One probe per composition; ConfigError (at the composition's path) if they disagree."""
        probes: list[Probe] = []
        for path, comp in labelled:
            kwargs = {**args.kwargs, **comp.kwargs}
            try:
                probe = _probe(args.env, json.dumps(kwargs, sort_keys=True, default=str))
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError.single(
                    path, f"building {args.env} with kwargs {kwargs} failed: {type(exc).__name__}: {exc}"
                ) from None
            if probes and probe.obs_size != probes[0].obs_size:
                raise ConfigError.single(
                    path,
                    f"observation size {probe.obs_size} differs from {probes[0].obs_size} of "
                    f"{labelled[0][0]}: the generic adapter treats each flat observation as one entity and "
                    "cannot align different sizes; write a backend with an entity parser for this env "
                    "(see scenarios/mpe.py)",
                )
            if probes and probe.discrete != probes[0].discrete:
                raise ConfigError.single(path, "compositions mix discrete and continuous action spaces")
            if args.episode_limit is None and probe.max_cycles is None:
                raise ConfigError.single(
                    ("args", "episode_limit"),
                    f"cannot tell how long episodes of {args.env} last: set episode_limit",
                )
            probes.append(probe)
        return probes

    @classmethod
    def describe(cls, args: PettingZooArgs, compositions: list[PettingZooComposition]) -> EnvSpec:
        probes = cls._probe_all(
            args, [(("compositions", i, "kwargs"), c) for i, c in enumerate(compositions)]
        )
        limit = args.episode_limit or max(int(p.max_cycles or 0) for p in probes)
        agents = max(len(p.agents) for p in probes)
        return EnvSpec(
            obs_features=probes[0].obs_size,
            state_features=probes[0].obs_size,
            n_actions=max(p.n_actions for p in probes),
            max_agents=agents,
            max_entities=1,
            max_state_entities=agents,
            episode_limit=limit,
            discrete=probes[0].discrete,
        )

    # ---- environments -----------------------------------------------------------------------
    def build(self, composition_index: int) -> Any:
        return make_parallel_env(
            self.args.env, {**self.args.kwargs, **self.compositions[composition_index].kwargs}
        )

    def make_env(self, composition_index: int) -> Slot:
        slot = super().make_env(composition_index)
        slot.static["obs"] = [ObsCodec.of(slot.env.observation_space(a)) for a in slot.team]
        return slot

    def parse(self, slot: Slot, composition_index: int) -> Frame:
        a, spec = len(slot.team), self.spec
        rows = np.zeros((a, spec.obs_features), dtype=np.float32)
        avail = np.zeros((a, spec.n_actions), dtype=bool)
        for i, name in enumerate(slot.team):
            if not slot.alive[i] or name not in slot.obs:
                continue
            obs = slot.obs[name]
            row = slot.static["obs"][i].encode(obs)
            rows[i, : row.size] = row
            n = slot.actions[i].size
            mask = action_mask(obs, slot.infos.get(name)) if spec.discrete else None
            avail[i, :n] = True if mask is None else mask[:n]
        alive = slot.alive.copy()
        return Frame(
            obs=rows[:, None, :],
            obs_mask=alive[:, None].copy(),
            state=rows.copy(),
            state_mask=alive.copy(),
            avail_actions=avail,
            agent_mask=alive,
        )


# ---------------------------------------------------------------------------------------------
# The library's own loop (`harness bench`'s raw side)


class PettingZooLoop(Loop):
    """The library's ParallelEnvs stepped directly with sampled actions, each reset when its agents
    are gone. A Python loop over the envs: that is how the library runs a batch."""

    def __init__(self, make: Callable[[], Any], num_envs: int, seed: int = 0) -> None:
        self.envs = [make() for _ in range(num_envs)]
        for i, env in enumerate(self.envs):
            for agent in env.possible_agents:
                env.action_space(agent).seed(seed + i)
            env.reset(seed=seed + i)

    def advance(self) -> int:
        for env in self.envs:
            env.step({agent: env.action_space(agent).sample() for agent in env.agents})
            if not env.agents:
                env.reset()
        return len(self.envs)

    def close(self) -> None:
        for env in self.envs:
            env.close()



def library_loop(backend: ParallelEnvBackend, num_envs: int) -> PettingZooLoop:
    """The very ParallelEnv `backend.build` makes (same game, same settings), `num_envs` of
    them stepped by the library alone."""
    return PettingZooLoop(lambda: backend.build(0), num_envs)
