"""The suite file's schema: pydantic models with `extra="forbid"` (typos are caught), the
bounds that refuse absurd values at validation, and the generic budget profiles."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
