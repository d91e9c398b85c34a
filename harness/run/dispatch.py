"""What a coordinator hands an executor (local worker processes or Ray tasks): the callbacks
that claim a run in the store and record its result, and how a run stopped by Ctrl-C is settled.
Both executors import this; neither imports the other or the coordinator."""

from __future__ import annotations

from collections.abc import Callable

from harness.run.plan import RunSpec
from harness.run.store import RunResult, Store

Claim = Callable[[RunSpec], bool]
Record = Callable[[RunResult], None]



def settle_stopped(result: RunResult, store: Store, record: Record) -> None:
    """After Ctrl-C: a run that finished anyway is recorded; any other is left interrupted
    (it resumes from its checkpoint next time) without a line of its own on the display."""
    if result.status == "done":
        record(result)
    else:
        store.finish(RunResult(result.run_id, "interrupted", result.reason, env_steps=result.env_steps,
                               seconds=result.seconds))


