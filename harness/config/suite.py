"""A resolved suite: what `load_suite` returns and every command reads (tasks with parsed
args and compositions, params per algorithm, claims, budgets, executor settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


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
