"""What a running suite shows: on a terminal, rich progress bars (runs, env steps, one line per
active run); elsewhere (a log file, a pipe, CI, nohup) plain lines at intervals, since the live
display is off there and `run` and `tune` would otherwise print nothing between one finished run
and the next, often for minutes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.registry import took_no_gradient_step
from harness.run.plan import RunSpec
from harness.run.store import RunResult

# Seconds between two lines: often enough to show a job is alive, rare enough for a log file
# (HARNESS_PROGRESS_EVERY sets another interval).
EVERY_S = float(os.environ.get("HARNESS_PROGRESS_EVERY", "60"))


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Heartbeat:
    """Emits at most one line per `every` seconds: runs done, env steps, the rate of the steps
    trained since it started (runs already done before do not count) and the time left at that
    rate."""

    def __init__(self, what: str, total_runs: int, total_steps: int, emit: Callable[[str], None],
                 every: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total_runs, self.total_steps, self.emit = what, total_runs, total_steps, emit
        self.every = EVERY_S if every is None else every
        self.clock = clock
        self.started = self.last = clock()

    def tick(self, runs_done: int, steps_done: int, steps_trained: int) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = steps_trained / max(1e-9, now - self.started)
        left = self.total_steps - steps_done
        eta = f", about {duration(left / rate)} left" if rate > 0 and left > 0 else ""
        self.emit(f"{self.what}: {runs_done}/{self.total_runs} runs done, {steps_done:,}/{self.total_steps:,} env steps, "
                  f"{rate:,.0f} env steps/s{eta}")


class ProgressView:
    """Rich progress: runs done / total, env steps with ETA, and one line per active run."""

    def __init__(self, console: Console, specs: list[RunSpec]) -> None:
        self.console = console
        self.specs = {s.run_id: s for s in specs}
        self.total_steps = sum(s.budget["env_steps"] for s in specs)
        self.steps: dict[str, int] = {}
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal, transient=False,
        )
        self.runs_bar = self.progress.add_task("runs", total=len(specs))
        self.steps_bar = self.progress.add_task("env steps", total=self.total_steps)
        self.active: dict[str, Any] = {}
        self.runs_done = self.steps_done = self.steps_trained = 0
        self.heartbeat = None if console.is_terminal else Heartbeat(
            "progress", len(specs), self.total_steps, lambda line: console.print(line, markup=False, highlight=False))

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def started(self, run_id: str) -> None:
        spec = self.specs[run_id]
        if run_id not in self.active:
            self.active[run_id] = self.progress.add_task(f"  {spec.label}", total=spec.budget["env_steps"])

    def phase(self, run_id: str, what: str | None) -> None:
        """Show what long set-up work a run is doing ("compiling ..."), None when it is over."""
        if run_id in self.active:
            label = f"  {self.specs[run_id].label}"
            self.progress.update(self.active[run_id], description=f"{label} ({what})" if what else label)

    def advance(self, run_id: str, env_steps: int, trained: bool = True) -> None:
        """A run's env steps so far. Its first report is where it starts (0, or the step a
        resumed run's checkpoint holds): counted as done but not as trained, so the rate and
        the time left reflect this invocation's training only."""
        budget = self.specs[run_id].budget["env_steps"]
        env_steps = min(env_steps, budget)
        first = run_id not in self.steps
        delta = env_steps - self.steps.get(run_id, 0)
        self.steps[run_id] = env_steps
        self.progress.advance(self.steps_bar, delta)
        self.steps_done += delta
        self.steps_trained += max(delta, 0) if trained and not first else 0
        if run_id in self.active:
            self.progress.update(self.active[run_id], completed=env_steps)
        if self.heartbeat is not None:
            self.heartbeat.tick(self.runs_done, self.steps_done, self.steps_trained)

    def finished(self, result: RunResult) -> None:
        spec = self.specs[result.run_id]
        if result.status == "done":
            self.advance(result.run_id, spec.budget["env_steps"])
            self.progress.advance(self.runs_bar)
            self.runs_done += 1
        task = self.active.pop(result.run_id, None)
        if task is not None:
            self.progress.remove_task(task)
        style = {"done": "green", "failed": "red", "interrupted": "yellow"}[result.status]
        reason = f": {escape(result.reason.splitlines()[0])}" if result.reason else ""
        if result.status == "done" and took_no_gradient_step(spec.implementation, result.grad_steps):
            reason = " [yellow]but took no gradient step within the budget (untrained)[/]"
        self.console.print(f"[{style}]{result.status:>11}[/] {spec.label} ({result.seconds:.1f}s"
                           f"{evaluation_share(result.timings, result.seconds)}){reason}", highlight=False)

    def skip(self, spec: RunSpec) -> None:
        self.advance(spec.run_id, spec.budget["env_steps"], trained=False)
        self.progress.advance(self.runs_bar)
        self.runs_done += 1


def evaluation_share(timings: dict[str, float] | None, seconds: float) -> str:
    """", 12% evaluating" (nothing when the run recorded no timings)."""
    if not timings or not seconds or "evaluation" not in timings:
        return ""
    return f", {timings['evaluation'] / seconds:.0%} evaluating"

