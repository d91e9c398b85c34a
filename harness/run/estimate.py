"""How long a plan will take, before it runs (`harness show`).

Two sources, best first:
- **finished runs** of the same algorithm on the same environment in this store (whole-run env
  steps per second, evaluation included);
- **a calibration**: each remaining (task, algorithm) pair is trained for a few seconds on this
  machine with the worker's thread count. It measures the fixed cost (start to the first
  training round: environments, networks, compilation), one evaluation at the budget's episode
  count, and the training rate over the later half of the rounds (replay warm-up and the first
  updates excluded). A run's estimate is fixed + env_steps / rate + its evaluations.
  Calibrations are cached in the checkpoint folder, keyed by everything that sets their cost, so a
  second `show` is instant.

Both are estimates: learners whose updates start late (`learning_starts`) or whose episodes
lengthen as they learn run slower than the first seconds suggest, and the message says which
source each estimate came from.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.run.plan import RunSpec, stable_hash
from harness.run.progress import duration

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """One (task, algorithm) pair measured on this machine."""

    fixed_s: float  # run start to the first training round, the first evaluation excluded
    steps_per_s: float  # training env steps per second (rollout and update), later rounds only
    eval_s: float  # one evaluation of every composition at the budget's eval_episodes

    def run_seconds(self, budget: dict[str, int]) -> float:
        """A whole run: fixed cost, training, the curve evaluations and the absolute one."""
        evaluations = budget["env_steps"] // budget["eval_every"] + 1
        absolute = budget["absolute_episodes"] / max(1, budget["eval_episodes"])
        return self.fixed_s + budget["env_steps"] / self.steps_per_s + self.eval_s * (evaluations + absolute)


def calibration_key(spec: RunSpec, threads: int) -> str:
    """Everything that sets a run's speed but the seed and the step budget."""
    return stable_hash([spec.task_config, spec.algorithm, spec.params, spec.budget["eval_episodes"], spec.device,
                        threads, platform.node()])


def calibrate(spec: RunSpec, seconds: float = 4.0, min_rounds: int = 6) -> Calibration | None:
    """Train `spec` for about `seconds` past its first round (at least `min_rounds` rounds) in a
    throw-away checkpoint folder; None when the run ended or failed before enough rounds."""
    from harness.run.runner import Run

    marks: list[tuple[float, int]] = []

    def enough() -> bool:
        return len(marks) >= min_rounds and marks[-1][0] - marks[0][0] >= seconds

    with tempfile.TemporaryDirectory(prefix="harness-calibration-") as folder:
        # No evaluation but the first one: it is timed once and multiplied out.
        budget = {**spec.budget, "env_steps": 10**12, "eval_every": 10**12}
        trial = replace(spec, budget=budget, checkpoint_dir=folder, checkpoint_every=float("inf"))
        run = Run(trial, on_progress=lambda steps: marks.append((time.monotonic(), steps)), should_stop=enough)
        result = run.execute()
    if result.status == "failed" or len(marks) < 4:
        return None
    timings = result.timings or {}
    half = marks[len(marks) // 2:]
    rate = (half[-1][1] - half[0][1]) / max(1e-9, half[-1][0] - half[0][0])
    evaluation = timings.get("evaluation", 0.0)
    fixed = max(0.0, timings.get("to_first_update", 0.0) - evaluation)
    return Calibration(fixed_s=fixed, steps_per_s=rate, eval_s=evaluation) if rate > 0 else None


class CalibrationCache:
    """Calibrations by key, in CHECKPOINT_DIR/calibration.json (unreadable files start over)."""

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / CALIBRATION_FILE
        try:
            raw = json.loads(self.path.read_text())
            self.entries = {k: Calibration(**v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError):
            self.entries = {}

    def get(self, key: str) -> Calibration | None:
        return self.entries.get(key)

    def put(self, key: str, calibration: Calibration) -> None:
        self.entries[key] = calibration
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in self.entries.items()}, indent=1))
        tmp.replace(self.path)


@dataclass
class Estimate:
    """Seconds for the remaining runs, and how each run's figure was obtained."""

    seconds: float = 0.0
    sources: Counter[str] = field(default_factory=Counter)  # "finished runs" / "calibration" / "unknown" -> runs

    def add(self, source: str, seconds: float = 0.0) -> None:
        self.sources[source] += 1
        self.seconds += seconds


def estimate(remaining: list[RunSpec], throughput: Callable[[RunSpec], float | None], cache: CalibrationCache,
             threads: int, calibrate_missing: bool,
             announce: Callable[[str], None] = lambda _line: None) -> Estimate:
    """Summed run seconds of `remaining` (divide by the workers for wall time)."""
    result = Estimate()
    measured: dict[str, Calibration | None] = {}
    for spec in remaining:
        rate = throughput(spec)
        if rate:
            result.add("finished runs", spec.budget["env_steps"] / rate)
            continue
        key = calibration_key(spec, threads)
        if key not in measured:
            measured[key] = cache.get(key)
            if measured[key] is None and calibrate_missing:
                announce(f"calibrating {spec.task}/{spec.algorithm} (a few seconds of training)")
                fresh = calibrate(spec)
                if fresh is not None:
                    cache.put(key, fresh)
                measured[key] = fresh
        calibration = measured[key]
        if calibration is None:
            result.add("unknown")
        else:
            result.add("calibration", calibration.run_seconds(spec.budget))
    return result


def describe(est: Estimate, runs: int, workers: int) -> str:
    """The estimate line of `harness show`: wall time and where the figures came from."""
    sources = est.sources
    known = runs - sources.get("unknown", 0)
    if known == 0:
        return ("estimated time: unknown (no finished runs of these algorithms in this store; "
                "pass calibrate=true to measure each task and algorithm for a few seconds)")
    wall = est.seconds / max(1, workers) * runs / known
    how = ", ".join(f"{n} run(s) from {source}" for source, n in sorted(sources.items()) if source != "unknown")
    extra = f"; {sources['unknown']} unknown, scaled from the rest" if sources.get("unknown") else ""
    return f"estimated time: {duration(wall)} with {max(1, workers)} worker(s) ({how}{extra})"

