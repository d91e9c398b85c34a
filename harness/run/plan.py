"""From a suite to the list of runs it asks for, each with a stable id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from harness.config import Suite


def stable_hash(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run; plain data so it pickles and serialises."""

    run_id: str
    suite: str
    task: str
    algorithm: str
    seed: int
    params: dict[str, Any]
    budget: dict[str, int]
    task_config: dict[str, Any]
    metric: str
    device: str
    checkpoint_dir: str
    checkpoint_every: float = 0.0  # seconds between periodic checkpoints (0 = every evaluation)
    plugin: str = ""  # the registered algorithm that runs a named configuration ("": `algorithm` itself)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def implementation(self) -> str:
        """The registered algorithm whose class runs this."""
        return self.plugin or self.algorithm

    @property
    def label(self) -> str:
        return f"{self.task}/{self.algorithm}/seed{self.seed}"


def plan(suite: Suite) -> list[RunSpec]:
    """Task x algorithm x seed, in an order that spreads algorithms and seeds evenly."""
    runs = []
    for seed in suite.seeds:
        for task in suite.tasks:
            task_config = task.config_dict()
            for algorithm in task.algorithms:
                params = task.params[algorithm]
                identity = {
                    "suite": suite.name,
                    "task": task.name,
                    "task_config": task_config,
                    "algorithm": algorithm,
                    "params": params,
                    "budget": task.budget,
                    "seed": seed,
                }
                plugin = suite.plugin(algorithm)
                if plugin != algorithm:  # only then, so the ids of plain algorithms' runs stay as they were
                    identity["plugin"] = plugin
                runs.append(
                    RunSpec(
                        run_id=stable_hash(identity),
                        suite=suite.name,
                        task=task.name,
                        algorithm=algorithm,
                        seed=seed,
                        params=params,
                        budget=task.budget,
                        task_config=task_config,
                        metric=suite.metric,
                        device=suite.device,
                        checkpoint_dir=suite.checkpoint_dir,
                        checkpoint_every=suite.checkpoint_every,
                        plugin="" if plugin == algorithm else plugin,
                    )
                )
    return runs
