"""Plain progress lines for output that is not a terminal (a log file, a pipe, CI, nohup):
the live display is off there, so without these `run` and `tune` would print nothing between
one finished run and the next, often for minutes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

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
