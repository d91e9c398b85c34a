"""Suite files: schema, command-line overrides and validation.

A suite is checked completely before any run starts. Every problem is reported with the
file, the line, the key path, what was expected and what was found, plus the closest valid
key when a name looks like a typo.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import registry
from harness.api import action_spaces_of
from harness.errors import ConfigError, Problem, closest
from harness.yaml_lines import LineIndex, Refused, load_yaml, parse_text

SPLITS = ("train", "validation", "test")
METRICS = ("return", "win_rate")
PROFILES = ("smoke", "short", "standard", "paper")
COMMAND_LINE = "<command line>"

# Generic budget profiles; suites redefine them to suit their tasks (a one-step matrix game
# needs far fewer env steps than StarCraft-like combat).
DEFAULT_BUDGETS: dict[str, dict[str, int]] = {
    "smoke": {"env_steps": 2_000, "eval_every": 1_000, "eval_episodes": 8},
    "short": {"env_steps": 50_000, "eval_every": 10_000, "eval_episodes": 32},
    "standard": {"env_steps": 2_000_000, "eval_every": 50_000, "eval_episodes": 32},
    "paper": {"env_steps": 10_000_000, "eval_every": 100_000, "eval_episodes": 32},
}


# ---------------------------------------------------------------------------------------------
# Schema (pydantic models; `extra="forbid"` so typos are caught)

# Upper bounds far above real use, so that a huge value is refused at validate rather than
# allocating until MemoryError once runs start.
MAX_ENV_STEPS = 10**10
MAX_SEEDS = 1000
MAX_LIST = 1000  # tasks, algorithms, compositions of a split
MAX_WORKERS = 4096
MAX_NUMBER = 10**15  # no setting of any algorithm or backend needs an integer larger than this
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetModel(Strict):
    env_steps: int = Field(gt=0, le=MAX_ENV_STEPS, description="environment steps of training, summed over parallel envs")
    eval_every: int = Field(gt=0, le=MAX_ENV_STEPS, description="evaluate every this many env steps")
    eval_episodes: int = Field(gt=0, le=100_000, description="greedy evaluation episodes per composition")
    absolute_episodes: int | None = Field(
        None, gt=0, le=1_000_000, description="episodes for the absolute metric (default 10 x eval_episodes)"
    )

    @model_validator(mode="after")
    def _interval_fits(self) -> BudgetModel:
        if self.eval_every > self.env_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed env_steps ({self.env_steps})")
        return self


ParamTable = dict[str, dict[str, Any]]  # algorithm name or "*" -> config field -> value


class ReferenceModel(Strict):
    """Reference scores of a task in the suite's metric, for normalised cross-task aggregates:
    normalised = (score - random) / (best - random), so 0 is a uniform-random team, 1 the best known."""

    random: float = Field(allow_inf_nan=False, description="expected score of a uniform-random policy")
    best: float = Field(allow_inf_nan=False, description="best known score (the optimum when known)")

    @model_validator(mode="after")
    def _distinct(self) -> ReferenceModel:
        if self.best == self.random:
            raise ValueError(f"best ({self.best}) must differ from random ({self.random})")
        return self


class TaskModel(Strict):
    env: str = Field(description="environment backend name (harness list envs)")
    args: dict[str, Any] = Field(default_factory=dict)
    num_envs: int = Field(8, gt=0, le=4096, description="parallel environments for training")
    rollout: Literal["episodes", "continuous"] = Field(
        "episodes", description="training rollouts: episodes (synchronous batches, all envs reset together) or "
        "continuous (each env starts its next episode as soon as one ends; needs a backend with auto-reset)")
    rollout_steps: int | None = Field(
        None, gt=0, le=1_000_000, description="rollout: continuous only: batched env steps between updates "
        "(default: the env's episode_limit)")
    train: Annotated[list[dict[str, Any]], Field(max_length=MAX_LIST)] | None = None
    validation: Annotated[list[dict[str, Any]], Field(max_length=MAX_LIST)] | None = None
    test: Annotated[list[dict[str, Any]], Field(max_length=MAX_LIST)] | None = None
    budgets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    params: ParamTable = Field(default_factory=dict)
    algorithms: list[str] | None = Field(
        None, max_length=MAX_LIST, description="run only these of the suite's algorithms on this task (default: every one "
        "whose action space fits the task)")
    description: str = ""
    reference: ReferenceModel | None = Field(
        None, description="random and best-known scores for normalised aggregates across tasks")


class ConfigurationModel(Strict):
    """A named setting of a registered algorithm, run and reported under its own name."""

    algorithm: str = Field(description="the registered algorithm it configures")
    params: dict[str, Any] = Field(default_factory=dict, description="its fields, over the suite's params for that algorithm")
    description: str = ""


class ClaimModel(Strict):
    """A paper's claim, pre-registered: what is compared, on which runs, with which test."""

    source: str = Field(min_length=1, description="the paper and its table or figure")
    statement: str = Field(min_length=1, description="the claim in one sentence")
    task: str = Field(description="the suite task it is checked on (any text when `unrunnable`)")
    split: Literal["train", "validation", "test"] = "test"
    composition: str | None = Field(None, description="one composition of the split (default: their mean)")
    metric: Literal["return", "win_rate"] | None = Field(None, description="default: the suite's metric")
    better: str = Field(description="the algorithm or configuration claimed better")
    than: Annotated[list[str], Field(min_length=1, max_length=MAX_LIST)] = Field(
        description="the algorithms it is claimed better than (one comparison each, Holm-corrected)")
    direction: Literal["greater", "less"] = Field("greater", description="greater: higher scores are better")
    seeds: Annotated[int, Field(gt=0, le=MAX_SEEDS)] | Annotated[
        list[Annotated[int, Field(ge=0, lt=2**32)]], Field(min_length=1, max_length=MAX_SEEDS)] = Field(
        description="pre-registered: a count (seeds 0..n-1) or a list of distinct seeds")
    test: Literal["fisher", "binomial", "mann_whitney", "wilcoxon", "bootstrap"] = Field(
        description="fisher or binomial (paired) for per-seed yes/no outcomes; mann_whitney, wilcoxon (paired) "
        "or bootstrap (difference of means) for scores")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the claim, Holm over its comparisons")
    min_effect: float = Field(0.0, ge=0, description="smallest difference (success rate or mean) that counts")
    budget: str | None = Field(None, description="budget profile of its runs (default: the suite's)")
    success_at: float | None = Field(None, description="fisher/binomial on scores: a seed succeeds at this score or above")
    unrunnable: str | None = Field(None, description="why this harness cannot check it; declared, reported, never run")
    reported: dict[str, float] = Field(
        default_factory=dict, description="the paper's figure for each algorithm it compares (same metric), printed "
        "beside ours; for reading only, no test uses it")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"expected distinct seeds, found {v}")
        return v


class SuiteModel(Strict):
    name: str | None = None
    description: str = ""
    metric: Literal["return", "win_rate"] = "return"
    seeds: Annotated[int, Field(gt=0, le=MAX_SEEDS)] | Annotated[
        list[Annotated[int, Field(ge=0, lt=2**32)]], Field(max_length=MAX_SEEDS)] = Field(
        5, description="a count (seeds 0..n-1) or a list of distinct non-negative seeds")
    budget: str | dict[str, Any] = "short"
    budgets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    algorithms: list[str | dict[str, Any]] = Field(min_length=1, max_length=MAX_LIST)
    params: ParamTable = Field(default_factory=dict)
    tasks: dict[str, TaskModel] = Field(min_length=1, max_length=MAX_LIST)
    backend: str | None = Field(
        None, description="swap the backend of every task of the same family (backend=smacv2 runs the "
        "SMAX tasks on StarCraft II)")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: one Ray task per run")
    workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] | Literal["auto"] = Field(
        "auto", description="runs at once (0 = in this process); with executor=ray and no ray_address, the "
        "size of the private Ray instance in runs")
    ray_address: str | None = Field(
        None, description="executor=ray: auto (the cluster `ray start` runs here) or HOST:PORT; unset starts "
        "a private Ray instance on this machine")
    cpus_per_run: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False)] = Field(1.0, description="executor=ray: CPUs each run reserves")
    gpus_per_run: Annotated[float, Field(ge=0, le=64, allow_inf_nan=False)] = Field(0.0, description="executor=ray: GPUs each run reserves")
    max_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        2, description="executor=ray: times a run whose worker process or node died is retried from its "
        "last checkpoint before it is recorded as failed")
    allow_imports: list[str] = Field(
        default_factory=list, description="modules whose code the suite may import through 'module:Class' "
        "names or factories, beyond this project's own, the wrapped environment libraries and installed plugins")
    store: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: Annotated[float, Field(ge=0, le=10**7, allow_inf_nan=False)] = Field(
        300.0, description="seconds between periodic checkpoints of a run (0 = at every evaluation); a run "
        "stopped by Ctrl-C or its coordinator always checkpoints first")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    retry_failed: bool = False
    reclaim_running: bool = Field(
        False, description="take over the runs that a coordinator on another machine left running "
        "(only when that coordinator is gone: this machine cannot check it)")
    tuning: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="harness tune search-space overrides: ALGORITHM -> FIELD -> "
        "{low, high, log} or [low, high] (null leaves the field out of the search)")
    configurations: dict[str, ConfigurationModel] = Field(
        default_factory=dict, description="named settings of registered algorithms (NAME -> {algorithm, params}), "
        "usable wherever an algorithm name is")
    claims: dict[str, ClaimModel] = Field(
        default_factory=dict, description="the papers' claims this suite checks (harness claims)")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct seeds, found {v}")
        return v


# ---------------------------------------------------------------------------------------------
# Resolved suite


@dataclass
class Composition:
    name: str
    weight: float
    spec: BaseModel  # the backend's validated composition

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, **self.spec.model_dump()}


@dataclass
class Task:
    name: str
    env: str
    args: BaseModel
    num_envs: int
    splits: dict[str, list[Composition]]
    budget: dict[str, int]
    params: dict[str, dict[str, Any]]  # algorithm -> resolved config overrides (the task's algorithms only)
    skipped: dict[str, str] = field(default_factory=dict)  # suite algorithm -> why it does not run here
    rollout: str = "episodes"  # or "continuous"
    rollout_steps: int | None = None  # continuous: batched steps per round (None: the episode limit)
    # Reporting only, so not part of `config_dict` (changing them must not change run ids).
    description: str = ""
    reference: dict[str, float] | None = None  # {"random": r, "best": b} in the suite's metric
    # Algorithms that only the suite's claims run here, with their params layered exactly as if
    # they were listed, so a claim's runs and a board's are the same runs (same ids).
    claimed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def algorithms(self) -> list[str]:
        return list(self.params)

    def config_dict(self) -> dict[str, Any]:
        """Plain, JSON-able description of the task (part of every run id)."""
        config = {
            "env": self.env,
            "args": self.args.model_dump(),
            "num_envs": self.num_envs,
            "splits": {s: [c.as_dict() for c in comps] for s, comps in self.splits.items()},
        }
        # Only when not the default, so the run ids of synchronous runs stay what they were.
        if self.rollout != "episodes":
            config["rollout"] = self.rollout
            if self.rollout_steps is not None:
                config["rollout_steps"] = self.rollout_steps
        return config


def default_store(name: str) -> str:
    return f"sqlite:///runs/{name}.db"


def default_checkpoint_dir(name: str, store: str | None) -> str:
    """runs/checkpoints/NAME for the default store; a folder of its own for any other store, so
    that two stores holding runs of the same suite (same run ids) never share run folders."""
    if store is None or store == default_store(name):
        return f"runs/checkpoints/{name}"
    import hashlib

    return f"runs/checkpoints/{name}-{hashlib.sha256(store.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Claim:
    """A resolved claim (see `ClaimModel` for each field)."""

    name: str
    source: str
    statement: str
    task: str
    split: str
    composition: str | None
    metric: str
    better: str
    than: tuple[str, ...]
    direction: str
    seeds: tuple[int, ...]
    test: str
    alpha: float
    min_effect: float
    budget_name: str
    budget: dict[str, int]  # resolved for the claim's task ({} when unrunnable)
    success_at: float | None = None
    unrunnable: str | None = None
    reported: tuple[tuple[str, float], ...] = ()  # the paper's figures, per algorithm

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.better, *self.than)


@dataclass(frozen=True)
class RaySettings:
    """Where and how executor=ray runs (see SuiteModel for each field's meaning)."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 2
    local_cpus: int | None = None  # size of a private instance (workers x cpus_per_run)


@dataclass
class Suite:
    name: str
    path: str
    description: str
    metric: str
    seeds: list[int]
    budget_name: str
    algorithms: list[str]
    tasks: list[Task]
    store: str
    checkpoint_dir: str
    checkpoint_every: float
    workers: int
    device: str
    executor: str
    retry_failed: bool
    reclaim_running: bool = False
    ray: RaySettings = field(default_factory=RaySettings)
    overrides: list[str] = field(default_factory=list)
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)  # checked by harness.tune
    # params=tuned: algorithm -> its `harness tune` record (None: no record, runs with defaults);
    # None when the suite runs its own params (params=default, the default).
    tuned_params: dict[str, dict[str, Any] | None] | None = None
    claims: list[Claim] = field(default_factory=list)
    # Named configurations -> the registered algorithm that runs them.
    plugins: dict[str, str] = field(default_factory=dict)

    def plugin(self, algorithm: str) -> str:
        """The registered algorithm that runs `algorithm` (itself, or a configuration's)."""
        return self.plugins.get(algorithm, algorithm)


# ---------------------------------------------------------------------------------------------
# Loading


def suite_path(ref: str) -> Path:
    """A built-in suite name (scenarios/suites/NAME.yaml) or a path to a YAML file."""
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ConfigError.single(("suite",), "no such suite file", found=ref, file=COMMAND_LINE)
        return candidate
    builtin = registry.builtin_suites_dir() / f"{ref}.yaml"
    if builtin.exists():
        return builtin
    names = sorted(p.stem for p in registry.builtin_suites_dir().glob("*.yaml"))
    raise ConfigError.single(
        ("suite",),
        f"unknown suite; expected a path to a YAML file or one of {', '.join(names)}",
        found=ref,
        choices=names,
        file=COMMAND_LINE,
    )


def parse_value(text: str, key: tuple[str, ...] = ()) -> Any:
    """Command-line values use YAML syntax: 3, 1e-3, true, [qmix, vdn], {a: 1}; text that is not
    YAML stays a string. Read as strictly as a suite file (no duplicate keys or alias bombs)."""
    if text == "":
        return ""
    try:
        return parse_text(text)[0]
    except yaml.YAMLError:
        return text
    except Refused as exc:
        raise ConfigError.single(key + exc.path, exc.message, found=text, file=COMMAND_LINE) from None


def parse_overrides(tokens: list[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    out = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError.single((), "expected key=value", found=token, file=COMMAND_LINE)
        path = tuple(key.split("."))
        out.append((path, parse_value(value, path), token))
    return out


def apply_overrides(raw: dict[str, Any], tokens: list[str]) -> set[tuple[str, ...]]:
    """Apply `a.b.c=value` tokens in place; returns the overridden key paths."""
    touched: set[tuple[str, ...]] = set()
    for path, value, _token in parse_overrides(tokens):
        if path == ("tasks",) and isinstance(value, list):
            raw["tasks"] = _select_tasks(raw.get("tasks") or {}, value)
            _drop_claims_on_other_tasks(raw)
            touched.add(path)
            continue
        if path[0] not in SuiteModel.model_fields:
            raise ConfigError.single(
                path[:1], "unknown suite key", found=path[0], choices=SuiteModel.model_fields, file=COMMAND_LINE
            )
        _check_task_exists(raw, path)
        node = raw
        for depth, part in enumerate(path[:-1], start=1):
            nxt = node.get(part) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
                # Made by the override (a task or algorithm the file lacks, a value replaced by a
                # mapping): whatever is wrong beneath it is the command line's doing.
                touched.add(path[:depth])
            node = nxt
        node[path[-1]] = value
        touched.add(path)
    return touched


MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _allowed_imports(raw: dict[str, Any], resolver: Any) -> tuple[str, ...]:
    """The suite's allow_imports: module names whose code the user trusts (see registry)."""
    value = raw.get("allow_imports", [])
    if not isinstance(value, list) or not all(isinstance(m, str) and MODULE_NAME.fullmatch(m) for m in value):
        raise resolver.error([Problem(("allow_imports",), "expected a list of module names such as [mypkg, "
                                      "mypkg.envs]", value, True)])
    return tuple(value)


def _check_task_exists(raw: dict[str, Any], path: tuple[str, ...]) -> None:
    """`tasks.NAME.key=value` sets a key of an existing task; a typo in NAME would otherwise make a
    half-defined new task whose errors read as if the file were wrong."""
    tasks = raw.get("tasks")
    if len(path) > 2 and path[0] == "tasks" and isinstance(tasks, dict) and path[1] not in tasks:
        raise ConfigError.single(path[:2], f"unknown task; expected one of {', '.join(map(str, tasks))}",
                                 found=path[1], choices=map(str, tasks), file=COMMAND_LINE)


def _drop_claims_on_other_tasks(raw: dict[str, Any]) -> None:
    """`tasks=[...]` runs a part of the suite: its claims on the other tasks go with them."""
    claims = raw.get("claims")
    if isinstance(claims, dict):
        raw["claims"] = {k: c for k, c in claims.items() if not isinstance(c, dict) or c.get("task") in raw["tasks"]}


def _select_tasks(tasks: dict[str, Any], names: list[Any]) -> dict[str, Any]:
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise ConfigError.single(
            ("tasks",), f"unknown task; expected some of {', '.join(tasks)}", found=unknown[0],
            choices=tasks, file=COMMAND_LINE,
        )
    return {n: tasks[n] for n in names}


TUNING_DIR = Path("runs/tuning")  # harness tune writes <suite>/<algorithm>.json here
PARAMS_MODES = ("default", "tuned")


def load_suite(ref: str, overrides: list[str] | None = None) -> Suite:
    path = suite_path(ref)
    raw, lines = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError.single((), "a suite file must be a mapping of keys", found=type(raw).__name__, file=str(path))
    overrides, mode = _params_mode(list(overrides or []))
    touched = apply_overrides(raw, overrides)
    resolver = _Resolver(path, lines, touched)
    problems = number_problems(raw)
    if problems:
        raise resolver.error(problems)
    gate = registry.ALLOWED_IMPORTS.set(_allowed_imports(raw, resolver))
    try:
        suite = resolver.resolve(raw, overrides)
    finally:
        registry.ALLOWED_IMPORTS.reset(gate)
    if mode == "tuned":
        apply_tuned_params(suite)
        suite.overrides.append("params=tuned")
    return suite


def number_problems(data: Any) -> list[Problem]:
    """NaN, infinities and absurdly large integers anywhere in the suite: no setting takes them,
    and further on they would crash a computation (infinite CPUs) or allocate without end."""
    problems: list[Problem] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:  # a loop, not recursion: aliases may share values, but the reader bounded the total
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(path, "expected a finite number", value, True))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            problems.append(Problem(path, f"expected a number no larger than {MAX_NUMBER:.0e}", value, True))
    return problems


def _params_mode(overrides: list[str]) -> tuple[list[str], str]:
    """`params=tuned` / `params=default` choose where parameters come from; every other
    `params...` token is an ordinary override of the suite's params table."""
    mode, rest = "default", []
    for token in overrides:
        key, _, value = token.partition("=")
        if key == "params" and value.strip() in PARAMS_MODES:
            mode = value.strip()
        else:
            rest.append(token)
    return rest, mode


def tuned_params_path(suite_name: str, algorithm: str) -> Path:
    return TUNING_DIR / suite_name / f"{algorithm}.json"


def apply_tuned_params(suite: Suite) -> None:
    """Lay each algorithm's best `harness tune` parameters over its params on every task.
    An algorithm without a record keeps its params and is flagged as untuned on the leaderboard."""
    import json

    suite.tuned_params = {}
    claimed = [a for t in suite.tasks for a in t.claimed if a not in suite.algorithms]
    for algorithm in dict.fromkeys([*suite.algorithms, *claimed]):
        path = tuned_params_path(suite.name, algorithm)
        if not path.is_file():
            suite.tuned_params[algorithm] = None
            continue
        try:
            record = json.loads(path.read_text())
            params = dict(record["params"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError.single(("params",), f"unreadable tuning record ({exc}); expected the JSON "
                                     "written by harness tune", found=str(path), file=str(path)) from None
        known = {f.name for f in dataclasses.fields(registry.get_algorithm(suite.plugin(algorithm)).Config)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError.single(("params", unknown[0]), f"not a parameter of {algorithm}; expected one of "
                                     f"{', '.join(sorted(known))}", found=unknown[0], file=str(path))
        for task in suite.tasks:
            for table in (task.params, task.claimed):
                if algorithm in table:
                    table[algorithm] = {**table[algorithm], **params}
        suite.tuned_params[algorithm] = {**record, "file": str(path)}


# ---------------------------------------------------------------------------------------------
# Validation


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model class reached by walking `loc` from `model` (None if not a model)."""
    current: Any = _unwrap_optional(model)
    parts = list(loc)
    while parts and current is not None:
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(parts.pop(0))
            current = None if f is None else _unwrap_optional(f.annotation)
        elif typing.get_origin(current) in (dict, list):
            parts.pop(0)
            current = _unwrap_optional(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_optional(hint: Any) -> Any:
    """`Model | None` (or any union holding a model) -> Model; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else None
    return hint


def _expected(msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("Input should be"):
        return "expected" + msg[len("Input should be") :]
    if msg == "Field required":
        return "missing required key"
    return msg


def _data_path(loc: tuple[Any, ...], data: Any, kind: str = "") -> tuple[Any, ...]:
    """The part of a pydantic error location that indexes the user's data: drops the tags pydantic
    adds for union members and validators ('constrained-int', 'list[...]', 'function-after[...]').
    A last part that is not in the data stays only where it names a key (missing or unknown)."""
    path: list[Any] = []
    for i, part in enumerate(loc):
        indexes = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if indexes:
            data = data[part]
        elif not (isinstance(data, dict) and i == len(loc) - 1 and kind in ("missing", "extra_forbidden")):
            continue
        path.append(part)
    return tuple(path)


def pydantic_problems(exc: ValidationError, model: type[BaseModel], data: Any = None) -> list[Problem]:
    problems: dict[tuple[Any, ...], Problem] = {}
    for err in exc.errors():
        loc = _data_path(tuple(err["loc"]), data, err["type"]) if data is not None else tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            expected = f"expected one of {', '.join(valid)}" if valid else "this mapping takes no such keys"
            problem = Problem(loc, f"unknown key; {expected}", loc[-1], True, closest(str(loc[-1]), valid))
        elif err["type"] == "missing":
            problem = Problem(loc, "missing required key")
        else:
            msg = _expected(err["msg"])
            # Messages that already say what was found don't repeat the raw input.
            problem = Problem(loc, msg, err.get("input"), "input" in err and "found" not in msg)
        if loc in problems:  # a union reports one error per alternative: say them together
            first = problems[loc]
            first.message += ", or " + problem.message.removeprefix("expected ")
        else:
            problems[loc] = problem
    return list(problems.values())


class _Resolver:
    """Turns the raw mapping into a `Suite`, collecting located errors."""

    def __init__(self, path: Path, lines: LineIndex, touched: set[tuple[str, ...]]) -> None:
        self.file = str(path)
        self.lines = lines
        self.touched = touched
        self.inline_paths: dict[str, tuple[Any, ...]] = {}  # algorithm -> where its inline params are
        self.configurations: dict[str, ConfigurationModel] = {}

    def error(self, problems: list[Problem], prefix: tuple[Any, ...] = ()) -> ConfigError:
        located = []
        for p in problems:
            full = tuple(prefix) + p.path
            from_cli = any(full[: len(t)] == t for t in self.touched)
            file = COMMAND_LINE if from_cli else self.file
            line = None if from_cli else self.lines.line_of(full)
            located.append(dataclasses.replace(p, path=full, file=file, line=line))
        return ConfigError(located)

    def validate(self, model: type[BaseModel], data: Any, prefix: tuple[Any, ...]) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self.error(pydantic_problems(exc, model, data), prefix) from None

    def relocate(self, exc: ConfigError, prefix: tuple[Any, ...]) -> ConfigError:
        return self.error(exc.problems, prefix)

    def resolve(self, raw: dict[str, Any], overrides: list[str]) -> Suite:
        model = self.validate(SuiteModel, raw, ())
        name = self.suite_name(model)
        seeds = list(range(model.seeds)) if isinstance(model.seeds, int) else list(model.seeds)
        problems: list[Problem] = []
        self.configurations = self.checked_configurations(model)

        def attempt(fn: Any, *args: Any) -> Any:
            """Run one independent check, keeping its problems so all are reported at once."""
            try:
                return fn(*args)
            except ConfigError as exc:
                problems.extend(exc.problems)
                return None

        algorithms = attempt(self.algorithms, model)
        attempt(self.check_param_tables, model, algorithms or {})
        choice = attempt(self.budget_choice, model)
        tasks: list[Task] = []
        if choice is not None:
            for tname, t in model.tasks.items():
                budget = attempt(self.budget, tname, t, *choice)  # reported even where the task has other problems
                tasks.append(attempt(self.task, tname, t, model, algorithms or {}, budget or {}))
        claims = attempt(self.claims, model, [t for t in tasks if t is not None], choice, algorithms or {}) \
            if choice and not problems else None
        if problems:
            unique = {(p.path, p.message): p for p in problems}
            raise ConfigError(list(unique.values()))
        budget_name = choice[0]
        workers = (os.cpu_count() or 1) if model.workers == "auto" else model.workers
        return Suite(
            name=name,
            path=self.file,
            description=model.description,
            metric=model.metric,
            seeds=seeds,
            budget_name=budget_name,
            algorithms=list(algorithms),
            tasks=tasks,
            store=model.store or default_store(name),
            checkpoint_dir=model.checkpoint_dir or default_checkpoint_dir(name, model.store),
            checkpoint_every=model.checkpoint_every,
            workers=int(workers),
            device=model.device,
            executor=model.executor,
            retry_failed=model.retry_failed,
            reclaim_running=model.reclaim_running,
            ray=RaySettings(model.ray_address, model.cpus_per_run, model.gpus_per_run, model.max_retries,
                            local_cpus=max(1, math.ceil(int(workers) * model.cpus_per_run))),
            overrides=overrides,
            tuning=model.tuning,
            claims=claims or [],
            plugins={name: c.algorithm for name, c in self.configurations.items()},
        )

    def checked_configurations(self, model: SuiteModel) -> dict[str, ConfigurationModel]:
        """Each configuration names a registered algorithm, under a name of its own."""
        registered = set(registry.algorithm_names())
        problems = []
        for name, c in model.configurations.items():
            path = ("configurations", name)
            if not NAME_PATTERN.fullmatch(name):
                problems.append(Problem(path, "expected an identifier: letters, digits, _ or -", name, True))
            elif name in registered:
                problems.append(Problem(path, "a registered algorithm has this name; expected a name of its own",
                                        name, True))
            try:
                registry.get_algorithm(c.algorithm, path + ("algorithm",))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise self.error(problems)
        return dict(model.configurations)

    def algorithm_class(self, name: str, path: tuple[Any, ...] = ("algorithms",)) -> Any:
        """The registered class that runs `name`: an algorithm's own, or a configuration's."""
        configuration = self.configurations.get(name)
        try:
            if configuration is not None:
                return registry.get_algorithm(configuration.algorithm, ("configurations", name, "algorithm"))
            return registry.get_algorithm(name, path)
        except ConfigError as exc:
            if configuration is None and exc.problems and exc.problems[0].message.startswith("unknown algorithm"):
                names = [*registry.algorithm_names(), *self.configurations]
                raise self.error([Problem(path, "unknown algorithm; expected a registered algorithm or one of the "
                                          "suite's configurations", name, True, closest(name, names))]) from None
            raise self.relocate(exc, ()) from None

    def claims(self, model: SuiteModel, tasks: list[Task], choice: tuple[str, dict[str, dict[str, Any]]],
               algorithms: dict[str, dict[str, Any]]) -> list[Claim]:
        by_name = {t.name: t for t in tasks}
        out, problems = [], []
        for name, c in model.claims.items():
            try:
                out.append(self.claim(name, c, model, by_name, choice, algorithms))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        return out

    def claim(self, name: str, c: ClaimModel, model: SuiteModel, tasks: dict[str, Task],
              choice: tuple[str, dict[str, dict[str, Any]]], algorithms: dict[str, dict[str, Any]]) -> Claim:
        from harness import comparisons

        path = ("claims", name)
        if not NAME_PATTERN.fullmatch(name):
            raise self.error([Problem(path, "expected an identifier: letters, digits, _ or -", name, True)])
        for where, algorithm in [(("better",), c.better), *((("than", i), a) for i, a in enumerate(c.than))]:
            self.algorithm_class(algorithm, path + where)
        if c.better in c.than or len(set(c.than)) != len(c.than):
            raise self.error([Problem(path + ("than",), f"expected distinct algorithms other than {c.better}",
                                      c.than, True)])
        compared = (c.better, *c.than)
        for algorithm in c.reported:
            if algorithm not in compared:
                raise self.error([Problem(path + ("reported", algorithm), "not an algorithm the claim compares; "
                                          f"expected one of {', '.join(compared)}", algorithm, True,
                                          closest(algorithm, compared))])
        seeds = tuple(range(c.seeds)) if isinstance(c.seeds, int) else tuple(c.seeds)
        level = c.alpha / len(c.than)
        need = comparisons.fewest_seeds(c.test, level)
        if need is None or len(seeds) < need:
            holm = f"alpha {c.alpha:g} over {len(c.than)} comparisons, Holm" if len(c.than) > 1 else f"alpha {c.alpha:g}"
            raise self.error([Problem(path + ("seeds",), f"{c.test} with {len(seeds)} seeds per algorithm cannot reach "
                                      f"p <= {level:g} ({holm}); expected at least {need} seeds", len(seeds), True)])
        if c.budget is not None and c.budget not in PROFILES:
            raise self.error([Problem(path + ("budget",), f"unknown budget profile; expected one of {', '.join(PROFILES)}",
                                      c.budget, True, closest(c.budget, PROFILES))])
        budget_name = c.budget or choice[0]
        metric = c.metric or model.metric
        budget: dict[str, int] = {}
        if not c.unrunnable:
            task = tasks.get(c.task)
            if task is None:
                raise self.error([Problem(path + ("task",), f"unknown task; expected one of {', '.join(tasks)} (or "
                                          "say why it cannot run with unrunnable:)", c.task, True, closest(c.task, tasks))])
            self.check_claim_target(c, task, metric, path)
            budget = task.budget if budget_name == choice[0] else self.budget(task.name, model.tasks[task.name],
                                                                             budget_name, choice[1])
            self.add_claimed(task, c, model, algorithms, path)
        return Claim(name=name, source=c.source, statement=c.statement, task=c.task, split=c.split,
                     composition=c.composition, metric=metric, better=c.better, than=tuple(c.than),
                     direction=c.direction, seeds=seeds, test=c.test, alpha=c.alpha, min_effect=c.min_effect,
                     budget_name=budget_name, budget=budget, success_at=c.success_at, unrunnable=c.unrunnable,
                     reported=tuple(c.reported.items()))

    def check_claim_target(self, c: ClaimModel, task: Task, metric: str, path: tuple[Any, ...]) -> None:
        """The split and composition exist; a yes/no test gets yes/no outcomes."""
        from harness import comparisons

        if c.split not in task.splits:
            raise self.error([Problem(path + ("split",), f"task {task.name} has no {c.split} split; expected one of "
                                      f"{', '.join(task.splits)}", c.split, True)])
        names = [comp.name for comp in task.splits[c.split]]
        if c.composition is not None and c.composition not in names:
            raise self.error([Problem(path + ("composition",), f"not a {c.split} composition of {task.name}; expected "
                                      f"one of {', '.join(names)}", c.composition, True, closest(c.composition, names))])
        outcomes = registry.get_env(task.env).per_run_outcomes
        if c.test in comparisons.BINARY_TESTS and c.success_at is None and metric not in outcomes:
            raise self.error([Problem(path + ("test",), f"{c.test} compares per-seed yes/no outcomes and {metric} on "
                                      f"{task.name} is a score; set success_at or use mann_whitney, wilcoxon or "
                                      "bootstrap", c.test, True)])

    def add_claimed(self, task: Task, c: ClaimModel, model: SuiteModel, algorithms: dict[str, dict[str, Any]],
                    path: tuple[Any, ...]) -> None:
        """Params for the claim's algorithms that the task does not run, as if it ran them."""
        missing = [a for a in (c.better, *c.than) if a not in task.params and a not in task.claimed]
        if not missing:
            return
        backend = registry.get_env(task.env)
        discrete = backend.describe(task.args, [x.spec for comps in task.splits.values() for x in comps]).discrete
        space = "discrete" if discrete else "continuous"
        for algorithm in missing:
            if space not in action_spaces_of(self.algorithm_class(algorithm)):
                raise self.error([Problem(path, f"{algorithm} cannot act in task {task.name}'s {space} action space",
                                          algorithm, True)])
            task.claimed[algorithm] = self.params(algorithm, model, model.tasks[task.name], task.name,
                                                  algorithms.get(algorithm, {}))

    def suite_name(self, model: SuiteModel) -> str:
        """The name becomes part of paths (runs/NAME.db, runs/checkpoints/NAME): an identifier only,
        so that `name: ../../x` cannot point the store or checkpoints elsewhere."""
        name = model.name if model.name is not None else Path(self.file).stem
        if NAME_PATTERN.fullmatch(name):
            return name
        if model.name is None:
            message = ("the suite is named after its file, whose name is not an identifier; expected "
                       "letters, digits, _ or - (or set name:)")
        else:
            message = "expected an identifier: letters, digits, _ or - (no path)"
        raise self.error([Problem(("name",), message, name, True)])

    def algorithms(self, model: SuiteModel) -> dict[str, dict[str, Any]]:
        """name -> suite-level params given inline ({name: qmix, params: {...}} or {qmix: {...}})."""
        out: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(model.algorithms):
            path = ("algorithms", i)
            params: dict[str, Any]
            if isinstance(entry, str):
                name, params = entry, {}
            elif len(entry) == 1 and "name" not in entry:
                (name, params), = entry.items()
                params = params or {}
                self.inline_paths[str(name)] = path + (str(name),)
            else:
                unknown = set(entry) - {"name", "params"}
                if unknown or "name" not in entry:
                    raise self.error([Problem(path, "expected an algorithm name, {name: NAME, params: {...}} or {NAME: {...}}", entry, True)])
                name, params = entry["name"], entry.get("params") or {}
                self.inline_paths[str(name)] = path + ("params",)
            self.algorithm_class(str(name), path)
            if name in out:
                raise self.error([Problem(path, "algorithm listed twice", name, True)])
            out[str(name)] = dict(params)
        return out

    def budget_choice(self, model: SuiteModel) -> tuple[str, dict[str, dict[str, Any]]]:
        unknown = [k for k in model.budgets if k not in PROFILES]
        if unknown:
            raise self.error([Problem(("budgets", unknown[0]), f"unknown budget profile; expected one of {', '.join(PROFILES)}",
                                      unknown[0], True, closest(unknown[0], PROFILES))])
        profiles = {p: {**DEFAULT_BUDGETS[p], **model.budgets.get(p, {})} for p in PROFILES}
        if isinstance(model.budget, dict):
            return "custom", {**profiles, "custom": dict(model.budget)}
        if model.budget not in PROFILES:
            raise self.error([Problem(("budget",), f"expected a profile ({', '.join(PROFILES)}) or a mapping with env_steps, eval_every, eval_episodes",
                                      model.budget, True, closest(model.budget, PROFILES))])
        return model.budget, profiles

    def budget(self, tname: str, task: TaskModel, name: str, profiles: dict[str, dict[str, Any]]) -> dict[str, int]:
        merged = {**profiles[name], **task.budgets.get(name, {})}
        prefix: tuple[Any, ...] = ("tasks", tname, "budgets", name) if name in task.budgets else (
            ("budget",) if name == "custom" else ("budgets", name))
        b = self.validate(BudgetModel, merged, prefix)
        out = b.model_dump()
        out["absolute_episodes"] = out["absolute_episodes"] or 10 * b.eval_episodes
        return out

    def task(self, tname: str, task: TaskModel, model: SuiteModel, algorithms: dict[str, dict[str, Any]],
             budget: dict[str, int]) -> Task:
        prefix = ("tasks", tname)
        env = self.backend_name(task.env, model.backend, prefix)
        try:
            backend = registry.get_env(env, prefix + ("env",))
        except ConfigError as exc:
            raise self.relocate(exc, ()) from None
        args = self.validate(backend.Args, task.args, prefix + ("args",))
        missing = backend.missing_requirements(args)
        if missing:
            where = ("backend",) if env != task.env else prefix + ("env",)
            raise self.error([Problem(where, missing, env, True)])
        splits = self.splits(backend, args, task, prefix)
        try:
            backend.check_task(args, {s: [c.spec for c in comps] for s, comps in splits.items()})
        except ConfigError as exc:
            raise self.relocate(exc, prefix) from None
        discrete = backend.describe(args, [c.spec for comps in splits.values() for c in comps]).discrete
        self.check_rollout(task, env, backend, prefix)
        chosen, skipped = self.task_algorithms(task, tname, algorithms, discrete)
        params = {a: self.params(a, model, task, tname, algorithms[a]) for a in chosen}
        reference = task.reference.model_dump() if task.reference else None
        return Task(tname, env, args, task.num_envs, splits, budget, params, skipped, task.rollout,
                    task.rollout_steps, task.description, reference)

    def check_rollout(self, task: TaskModel, env: str, backend: Any, prefix: tuple[Any, ...]) -> None:
        """`rollout: continuous` needs a backend that resets its envs one by one."""
        if task.rollout == "continuous" and not getattr(backend, "supports_autoreset", False):
            raise self.error([Problem(prefix + ("rollout",), f"backend {env} cannot reset its environments one by "
                                      "one (no auto-reset); expected episodes", task.rollout, True)])
        if task.rollout == "episodes" and task.rollout_steps is not None:
            raise self.error([Problem(prefix + ("rollout_steps",), "only applies to rollout: continuous; "
                                      "remove it or set rollout: continuous", task.rollout_steps, True)])

    def backend_name(self, env: str, swap: str | None, prefix: tuple[Any, ...]) -> str:
        """`backend=NAME` replaces the env of every task whose backend is of NAME's family."""
        if swap is None:
            return env
        try:
            target = registry.get_env(swap, ("backend",))
            current = registry.get_env(env, prefix + ("env",))
        except ConfigError as exc:
            raise self.relocate(exc, ()) from None
        family = getattr(target, "family", None)
        return swap if family is not None and getattr(current, "family", None) == family else env

    def task_algorithms(self, task: TaskModel, tname: str, algorithms: dict[str, Any],
                        discrete: bool) -> tuple[list[str], dict[str, str]]:
        """The suite's algorithms this task runs, and why the others do not."""
        space = "discrete" if discrete else "continuous"
        fits = {a: space in action_spaces_of(self.algorithm_class(a)) for a in algorithms}
        if task.algorithms is None:
            skipped = {a: f"{space} actions are not supported by {a}" for a, ok in fits.items() if not ok}
            return [a for a, ok in fits.items() if ok], skipped
        problems = []
        for i, name in enumerate(task.algorithms):
            path = ("tasks", tname, "algorithms", i)
            if name not in algorithms:
                problems.append(Problem(path, f"not one of the suite's algorithms ({', '.join(algorithms)})",
                                        name, True, closest(name, algorithms)))
            elif not fits[name]:
                problems.append(Problem(path, f"{name} does not support this task's {space} actions", name, True))
        if problems:
            raise self.error(problems)
        chosen = [a for a in algorithms if a in task.algorithms]
        return chosen, {a: "not in the task's algorithms list" for a in algorithms if a not in chosen}

    def splits(self, backend: Any, args: Any, task: TaskModel, prefix: tuple[Any, ...]) -> dict[str, list[Composition]]:
        splits: dict[str, list[Composition]] = {}
        for split in SPLITS:
            entries = getattr(task, split)
            if entries is None:
                continue
            if not entries:
                raise self.error([Problem(prefix + (split,), "expected at least one composition (or leave the key out)")])
            splits[split] = [self.composition(backend, args, e, prefix + (split, i)) for i, e in enumerate(entries)]
        if "train" not in splits:
            try:
                defaults = backend.default_compositions(args)
            except ConfigError as exc:
                raise self.relocate(exc, prefix) from None
            splits = {"train": [Composition(backend.composition_name(args, c), 1.0, c) for c in defaults], **splits}
        self.check_disjoint(splits, prefix)
        return splits

    def composition(self, backend: Any, args: Any, entry: Any, path: tuple[Any, ...]) -> Composition:
        if not isinstance(entry, dict):
            raise self.error([Problem(path, "expected a mapping describing a team composition", entry, True)])
        entry = dict(entry)
        name, weight = entry.pop("name", None), entry.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise self.error([Problem(path + ("weight",), "expected a positive finite number", weight, True)])
        spec = self.validate(backend.Composition, entry, path)
        return Composition(str(name) if name else backend.composition_name(args, spec), float(weight), spec)

    def check_disjoint(self, splits: dict[str, list[Composition]], prefix: tuple[Any, ...]) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for split, comps in splits.items():
            for i, comp in enumerate(comps):
                key = comp.spec.model_dump_json()
                if key in seen and seen[key][0] != split:
                    other, j = seen[key]
                    raise self.error([Problem(prefix + (split, i), f"composition '{comp.name}' is also in {other}[{j}]: "
                                              "train, validation and test compositions must be disjoint")])
                seen.setdefault(key, (split, i))
            names = [c.name for c in comps]
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup:
                raise self.error([Problem(prefix + (split,), f"composition '{dup}' appears twice")])

    def params(self, algorithm: str, model: SuiteModel, task: TaskModel, tname: str, inline: dict[str, Any]) -> dict[str, Any]:
        """Merge defaults < suite '*' < suite per-algorithm < task '*' < task per-algorithm. A
        configuration is its algorithm as this suite runs it, changed by its own params:
        '*' < the algorithm's < the configuration's < its own tables, suite then task."""
        cls = self.algorithm_class(algorithm)
        merged: dict[str, Any] = {}
        configuration = self.configurations.get(algorithm)
        base = [] if configuration is None else [
            (("params", configuration.algorithm), model.params.get(configuration.algorithm, {})),
            (("configurations", algorithm, "params"), configuration.params)]
        task_base = [] if configuration is None else [
            (("tasks", tname, "params", configuration.algorithm), task.params.get(configuration.algorithm, {}))]
        layers = [
            (("params", "*"), model.params.get("*", {})),
            *base,
            (self.inline_paths.get(algorithm, ("algorithms",)), inline),
            (("params", algorithm), model.params.get(algorithm, {})),
            (("tasks", tname, "params", "*"), task.params.get("*", {})),
            *task_base,
            (("tasks", tname, "params", algorithm), task.params.get(algorithm, {})),
        ]
        known = {f.name: f for f in dataclasses.fields(cls.Config)}
        hints = typing.get_type_hints(cls.Config)
        for path, layer in layers:
            for key, value in layer.items():
                if key not in known:
                    if path[-1] == "*":
                        continue  # '*' applies to every algorithm that has the field
                    raise self.error([Problem(path + (key,), f"unknown parameter of {algorithm}; expected one of {', '.join(known)}",
                                              key, True, closest(key, known))])
                merged[key] = self.coerce(hints.get(key, Any), value, path + (key,))
        return merged

    def check_param_tables(self, model: SuiteModel, algorithms: dict[str, Any]) -> None:
        """Typos in `params` must not be ignored silently: every table names a known algorithm
        (or '*'), and every '*' field belongs to at least one algorithm."""
        names = set(registry.algorithm_names()) | set(algorithms) | set(self.configurations)
        fields = {f.name for n in names for f in dataclasses.fields(self.algorithm_class(n).Config)}
        tables = [(("params",), model.params)] + [(("tasks", t, "params"), task.params) for t, task in model.tasks.items()]
        problems = []
        for prefix, table in tables:
            for name, values in table.items():
                if name == "*":
                    problems += [Problem(prefix + ("*", k), "no algorithm has this parameter", k, True, closest(k, fields))
                                 for k in values if k not in fields]
                elif name not in names:
                    problems.append(Problem(prefix + (name,), f"unknown algorithm; expected '*' or one of {', '.join(sorted(names))}",
                                            name, True, closest(name, names)))
        if problems:
            raise self.error(problems)

    def coerce(self, hint: Any, value: Any, path: tuple[Any, ...]) -> Any:
        try:
            return TypeAdapter(hint).validate_python(value)
        except ValidationError as exc:
            msg = _expected(exc.errors()[0]["msg"])
            raise self.error([Problem(path, msg, value, True)]) from None


def build_config(cls: Any, params: dict[str, Any]) -> Any:
    """The algorithm's Config with validated overrides applied."""
    return cls.Config(**params)
