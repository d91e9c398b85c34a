"""The two contracts every plugin keeps: the batched entity environment and the algorithm.

Array layout (B parallel environments, A agent slots, E entity slots per observation,
N state entities, U discrete actions):

    obs            float32 [B, A, E, F]  row 0 is the observing agent itself
    obs_mask       bool    [B, A, E]     True = entity exists and is visible
    state          float32 [B, N, G]     global entity list, for centralised training only
    state_mask     bool    [B, N]
    avail_actions  bool    [B, A, U]     True = action may be taken
    agent_mask     bool    [B, A]        True = agent slot is present and alive
    reward         float32 [B]           shared team reward of the last step
    done           bool    [B]           episode over (terminated or truncated)
    terminated     bool    [B]           episode over for a reason that forbids bootstrapping
    won            bool    [B]           meaningful where done: the task's success criterion
    composition    int64   [B]           index of the team composition each env is playing

Episodes are synchronous across the batch: `reset` starts B episodes; an env whose episode
has ended keeps returning done=True with zero reward until the next `reset`. A backend that
`supports_autoreset` can instead play episodes back to back (`enable_autoreset`, used by the
runner's continuous rollouts): `step` then starts a new episode in every env that was
already done when it was called (see `Backend.enable_autoreset`). Team sizes may differ
between compositions: arrays are padded to the largest composition the backend was built
with, and the masks say what is real.
"""

from __future__ import annotations

import abc
import ast
import contextlib
import dataclasses
import inspect
import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel


@dataclass(frozen=True)
class EnvSpec:
    """Sizes an algorithm needs to build its networks.

    `max_agents` and `max_entities` are the padded sizes over *every* composition of a task
    (train, validation and test), so an algorithm may size buffers with them, but network
    weights must not depend on them: the same weights run on any team size.
    """

    obs_features: int  # F
    state_features: int  # G
    n_actions: int  # U (discrete) or action dimension (continuous)
    max_agents: int  # A
    max_entities: int  # E
    max_state_entities: int  # N
    episode_limit: int  # longest possible episode, in env steps
    discrete: bool = True
    n_unit_types: int = 0  # size of the unit-type one-hot inside the features, if any
    # obs_entity[a][e]: the state-entity row that agent slot a's observation row e describes
    # (-1: none). Lets methods that partition entities into groups (REFIL, MIPI) treat an
    # entity the same in every agent's view and in the state. None: the backend cannot say.
    obs_entity: tuple[tuple[int, ...], ...] | None = None


@dataclass
class Step:
    """What the environment batch returns after `reset` or `step` (see module docstring)."""

    obs: np.ndarray
    obs_mask: np.ndarray
    state: np.ndarray
    state_mask: np.ndarray
    avail_actions: np.ndarray
    agent_mask: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    terminated: np.ndarray
    won: np.ndarray
    composition: np.ndarray

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    def validate(self, spec: EnvSpec) -> None:
        """Check shapes and dtypes against the spec (used by backend tests)."""
        b, a, e, f = self.obs.shape
        expect = {
            "obs": ((b, a, e, spec.obs_features), np.float32),
            "obs_mask": ((b, a, e), np.bool_),
            "state": ((b, self.state.shape[1], spec.state_features), np.float32),
            "state_mask": ((b, self.state.shape[1]), np.bool_),
            "avail_actions": ((b, a, spec.n_actions), np.bool_),
            "agent_mask": ((b, a), np.bool_),
            "reward": ((b,), np.float32),
            "done": ((b,), np.bool_),
            "terminated": ((b,), np.bool_),
            "won": ((b,), np.bool_),
            "composition": ((b,), np.int64),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise AssertionError(
                    f"Step.{name}: expected {dtype.__name__}{shape}, got {arr.dtype}{arr.shape}"
                )
        if a > spec.max_agents or e > spec.max_entities:
            raise AssertionError(f"obs {self.obs.shape} exceeds spec {spec}")


@dataclass
class Transition:
    """One batched environment step as an algorithm sees it in `observe`.

    `active[b]` is False for envs whose episode had already ended before this step: their
    entries are padding and must not be learned from.

    `first` is None in synchronous batches (every episode starts at the batch's first
    transition). Continuous rollouts (auto-resetting backends) set it: `first[b]` says that
    `step` row b is the first observation of an episode, so episodes start and end at any
    transition; an inactive row is then the env's reset step (its `next` row is the new
    episode's first observation, which the following transition carries with first=True).
    """

    step: Step  # what the agents saw when acting
    actions: np.ndarray  # [B, A] int64 (discrete) or [B, A, D] float32 (continuous)
    next: Step  # what the environment returned
    active: np.ndarray  # [B] bool
    first: np.ndarray | None = None  # [B] bool, continuous rollouts only


class Loop(abc.ABC):
    """A loop `harness bench` times, advanced one unit of work at a time (a batch step, or a
    batch of episodes); a backend's `raw_loop` is one."""

    @abc.abstractmethod
    def advance(self) -> int:
        """Do one unit of work; return the env steps it took."""

    def warm_up(self) -> None:
        """Work done before any timing: compilation, lazy set-up, a learner's first batch."""
        self.advance()

    def settle(self) -> None:  # noqa: B027 - optional hook
        """Wait for work queued asynchronously (JAX dispatch) before the clock stops."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the environments."""


class Backend(abc.ABC):
    """An environment backend: a batch of B environments playing compositions from one list.

    Class-level contract (used by suite validation before anything runs):
    - `Args`: pydantic model of the task's `args:` mapping.
    - `Composition`: pydantic model of one team composition (the harness strips the generic
      keys `name` and `weight` first).
    - `default_compositions(args)`: the compositions used when a task declares no `train`.
    - `check_task(args, splits)`: cross-field checks (raise ConfigError with paths relative
      to the task, e.g. ("train", 0, "types")).
    - `describe(args, compositions)`: the EnvSpec covering every composition of the task.
    - `composition_name(args, composition)`: a short readable id ("A,B", "5v5 stalker").

    - `missing_requirements(args)`: None when the backend can run here, else a message saying
      what to install (checked by `harness validate` / `run` before anything trains). Heavy
      libraries are imported lazily, so the harness starts fast without them.

    Instances: `Backend(args, compositions, num_envs, seed, weights=None, training=False)`;
    each episode of each env draws a composition with probability proportional to `weights`.
    `training` is True only for the environments the algorithm learns from (a backend may
    shape or anneal rewards there; evaluation always sees the task's true reward).

    Discrete actions: `actions` is int64 [B, A]. Continuous actions (`spec.discrete` False):
    float32 [B, A, D] in [-1, 1], rescaled by the backend to the environment's bounds;
    `avail_actions` is then all True with shape [B, A, D].
    """

    name: ClassVar[str]
    Args: ClassVar[type[BaseModel]]
    Composition: ClassVar[type[BaseModel]]
    # Backends of one family run the same suites (`backend=NAME` swaps between them).
    family: ClassVar[str | None] = None
    # Printed under every results table of a suite that uses this backend.
    leaderboard_note: ClassVar[str | None] = None
    # Whether `step` can reset finished envs itself (see `enable_autoreset`): what
    # `rollout: continuous` needs.
    supports_autoreset: ClassVar[bool] = False
    # Whether `reset_compositions` can give each env the composition the caller names:
    # evaluation then plays every composition of a task in one batch.
    supports_assigned_compositions: ClassVar[bool] = False
    # Metrics that are a yes/no outcome of each run by construction (a deterministic game's
    # greedy play reaches the optimum or not): reports give their means Wilson intervals, which
    # hold for binomial counts where a bootstrap of 0s and 1s is far too narrow.
    per_run_outcomes: ClassVar[tuple[str, ...]] = ()
    # `harness bench` times `step` against the library's own loop on the same game (`raw_loop`):
    # that loop in words, None where the backend has none.
    raw_loop_label: ClassVar[str | None] = None
    autoreset: bool = False  # this instance's mode, switched on by `enable_autoreset`
    spec: EnvSpec

    def __init__(self, args: Any, compositions: list[Any], num_envs: int, seed: int,  # noqa: B027 - a declaration
                 weights: list[float] | None = None, training: bool = False) -> None:
        """The batch's constructor, as the harness calls it (see the class docstring): each
        backend builds its envs here; the base class keeps nothing."""

    @classmethod
    def default_compositions(cls, args: Any) -> list[Any]:
        raise NotImplementedError(f"{cls.__name__} needs explicit train compositions")

    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        """None if this backend can run on this machine, else what to install."""
        return None

    @classmethod
    def raw_loop(cls, args: Any, composition: Any, num_envs: int, **options: Any) -> Loop:
        """The library's own loop playing `composition` with random actions in `num_envs`
        environments: what `harness bench` compares `step` with (see `raw_loop_label`)."""
        raise NotImplementedError(f"backend {cls.__name__} has no raw library loop")

    @classmethod
    def raw_loop_missing(cls, args: Any) -> str | None:
        """None if `raw_loop` can run here, else what to install (beyond `missing_requirements`)."""
        return None

    @classmethod
    def check_task(cls, args: Any, splits: dict[str, list[Any]]) -> None:
        """Raise ConfigError if compositions and args disagree (default: nothing to check)."""
        return None

    @classmethod
    @abc.abstractmethod
    def describe(cls, args: Any, compositions: list[Any]) -> EnvSpec: ...

    @classmethod
    def composition_name(cls, args: Any, composition: Any) -> str:
        return ",".join(f"{k}={v}" for k, v in composition.model_dump().items())

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> Step:
        """Start a new episode in every env, each drawing its composition by weight."""

    def reset_compositions(self, seed: int | None, compositions: np.ndarray) -> Step:
        """`reset`, env b playing composition `compositions[b]` (an index into the backend's
        compositions): backends that `supports_assigned_compositions`."""
        raise NotImplementedError(f"backend {type(self).__name__} cannot assign compositions to envs")

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> Step: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (processes, devices)."""

    def enable_autoreset(self) -> None:
        """Next-step auto-reset from now on: `step` resets every env that was done when it was
        called instead of stepping it, and returns as its row the new episode's first
        observation (reward 0, done, terminated and won False, its new composition). Envs not
        done step as usual. A done row thus still carries the final observation (a truncated
        episode bootstraps from it), and the caller never needs `reset` mid-training."""
        if not self.supports_autoreset:
            raise ValueError(f"backend {type(self).__name__} cannot reset finished environments itself "
                             "(supports_autoreset is False)")
        self.autoreset = True

    def env_state(self) -> dict[str, np.ndarray] | None:
        """Everything the batch needs to go on stepping its episodes in flight (numpy arrays),
        for checkpoints of continuous rollouts; the random state is `rng_state`'s. None: this
        backend cannot save it (a resumed run then starts new episodes)."""
        return None

    def load_env_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `env_state` returned (after `set_rng_state`)."""
        raise NotImplementedError(f"backend {type(self).__name__} cannot restore its episodes in flight")

    def rng_state(self) -> str:
        """The backend's random state as text, for checkpoints (default: a numpy `self.rng`)."""
        rng = getattr(self, "rng", None)
        return json.dumps(rng.bit_generator.state) if rng is not None else ""

    def set_rng_state(self, state: str) -> None:
        rng = getattr(self, "rng", None)
        if rng is not None and state:
            rng.bit_generator.state = json.loads(state)


def tunable(default: Any, low: float, high: float, log: bool = False, **kwargs: Any) -> Any:
    """A config dataclass field that `harness tune` may search over (range and scale)."""
    metadata = dict(kwargs.pop("metadata", {}))
    metadata["tune"] = {"low": low, "high": high, "log": log}
    return field(default=default, metadata=metadata, **kwargs)


def tunable_fields(config_cls: type) -> dict[str, dict[str, Any]]:
    """Name -> search range of every field declared with `tunable`."""
    return {
        f.name: dict(f.metadata["tune"])
        for f in dataclasses.fields(config_cls)
        if "tune" in f.metadata
    }


@dataclass(frozen=True)
class FieldDoc:
    """One field of an algorithm's Config, as `harness show algorithm=NAME` prints it."""

    name: str
    type: str  # the annotation as written
    default: Any
    tune: dict[str, Any] | None  # `tunable`'s search range, or None
    doc: str  # the attribute docstring (the string literal under the field), or ""
    owner: str  # the Config class that declares it last


def config_fields(config_cls: type) -> list[FieldDoc]:
    """Every field of a Config dataclass in declaration order, with its attribute docstring:
    the string literal written under the field, as cleanrl's Args dataclasses document theirs.
    A subclass that redeclares a field without a docstring keeps the base class's."""
    docs: dict[str, tuple[str, str, str]] = {}  # name -> (annotation, doc, owner)
    for cls in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        for name, annotation, doc in _attribute_docs(cls):
            inherited = docs.get(name, ("", "", ""))[1]
            docs[name] = (annotation, doc or inherited, cls.__name__)
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        annotation, doc, owner = docs.get(f.name, (str(f.type), "", config_cls.__name__))
        out.append(FieldDoc(f.name, annotation, default, f.metadata.get("tune"), doc, owner))
    return out


def _attribute_docs(cls: type) -> list[tuple[str, str, str]]:
    """(name, annotation, docstring) of each annotated field in `cls`'s own body."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # defined where no source can be read
        return []
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found = []
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                doc = inspect.cleandoc(after.value.value)
            found.append((node.target.id, ast.unparse(node.annotation), doc))
    return found


class Algorithm(Protocol):
    """What the runner needs from an algorithm plugin.

    The runner owns the environment, the budget, evaluation, checkpoints and seeding; the
    algorithm owns its networks, optimiser, exploration schedule and buffer.

    - `Config`: a dataclass whose defaults reproduce the algorithm's paper; fields made with
      `tunable(...)` are searched by `harness tune`.
    - `act(step, memory, explore)`: actions for the whole batch in one forward pass.
      `memory` is None at the start of a batch of episodes (the algorithm creates its
      recurrent state) and whatever `act` returned afterwards (see `reset_memory`).
    - `observe(transition)`: feed one batched step to the algorithm's own storage.
    - `update()`: called by the runner after each batch of episodes ends (continuous
      rollouts: after every `rollout_steps` batched steps, with episodes in flight); returns
      scalar metrics (losses...). Returning {} means "nothing to learn from yet".
    - optional `reset_memory(memory, rows)`: continuous rollouts call it after a step that
      started new episodes in the envs `rows` ([B] bool); it returns the memory with those
      rows as at an episode start. Without it the runner zeroes, in every tensor of the
      memory whose first dimension is B, those rows (right for zero initial states).
    - `state_dict()` / `load_state_dict()`: everything needed to resume (networks, optimiser,
      schedules, buffer), made only of tensors, numbers, strings, lists and dicts so
      `torch.load(weights_only=True)` can read it back.
    - `grad_steps`: gradient steps taken so far (recorded with the run).
    - optional `policy_state_dict()` / `load_policy_state_dict()`: only what acting needs
      (network weights; no optimiser or replay). `best.pt` and checkpoint partners use it;
      without it they fall back to the full state.
    - optional class attributes, read through `action_spaces_of` and `learns`:
      `action_spaces`, the kinds of action it handles ("discrete", "continuous"; default
      discrete only), and `learns`, False for a fixed policy (random) whose runs never take a
      gradient step by design (default True).
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    grad_steps: int

    def __init__(self, env_spec: EnvSpec, config: Any, seed: int, device: Any) -> None: ...

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]: ...

    def observe(self, transition: Transition) -> None: ...

    def update(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


DEFAULT_ACTION_SPACES = ("discrete",)


def action_spaces_of(algorithm: Any) -> tuple[str, ...]:
    """The kinds of action an algorithm (class or instance) handles: its `action_spaces`, or
    discrete only."""
    return tuple(getattr(algorithm, "action_spaces", DEFAULT_ACTION_SPACES))


def learns(algorithm: Any) -> bool:
    """Whether an algorithm (class or instance) learns: its `learns`, or True."""
    return bool(getattr(algorithm, "learns", True))


def policy_state(algorithm: Any) -> dict[str, Any]:
    """What greedy acting needs: the algorithm's policy state, or its full state."""
    getter = getattr(algorithm, "policy_state_dict", None)
    return getter() if getter is not None else algorithm.state_dict()


def load_policy_state(algorithm: Any, state: dict[str, Any]) -> None:
    loader = getattr(algorithm, "load_policy_state_dict", None)
    (loader if loader is not None else algorithm.load_state_dict)(state)


# ---------------------------------------------------------------------------------------------
# Announcing long set-up work (a compilation): the run's progress line shows it.

_busy_listeners: list[Callable[[str | None], None]] = []


@contextlib.contextmanager
def busy(what: str) -> Iterator[None]:
    """Say, for the duration of the block, what long piece of set-up work this process is
    doing ("compiling SMAX 8v8 programs for 256 envs"), so progress displays can show it
    instead of a bar that stands still."""
    for listener in list(_busy_listeners):
        listener(what)
    try:
        yield
    finally:
        for listener in list(_busy_listeners):
            listener(None)


@contextlib.contextmanager
def watching_busy(listener: Callable[[str | None], None]) -> Iterator[None]:
    """Call `listener(what)` when `busy` work starts in this process and `listener(None)` when
    it ends, for the duration of the block."""
    _busy_listeners.append(listener)
    try:
        yield
    finally:
        _busy_listeners.remove(listener)
