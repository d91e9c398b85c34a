"""Run a plan: executors run the runs, the coordinator alone writes the store.

Runs execute in local worker processes (harness.run.local) or as Ray tasks
(harness.run.ray_tasks). They report progress; the coordinator shows it and records each
run's result as it arrives. A run that raises is recorded as failed with its
reason and the others go on. Ctrl-C asks every worker to checkpoint; the runs are marked
interrupted and resume on the next invocation.

Each run is claimed in the store just before it is dispatched (one per free worker), so
coordinators sharing a store split a suite. `executor=ray` swaps the worker processes for
Ray tasks and keeps everything else here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from harness.config import RaySettings
from harness.run import ray_tasks
from harness.run.local import run_inline, run_pool
from harness.run.plan import RunSpec
from harness.run.progress import ProgressView
from harness.run.store import RunResult, Store


@dataclass
class Summary:
    planned: int
    skipped_done: int = 0
    skipped_failed: int = 0
    skipped_elsewhere: int = 0  # running under another live coordinator sharing the store
    done: int = 0
    failed: int = 0
    interrupted: int = 0
    failures: list[tuple[RunSpec, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.skipped_failed else 0




def _select(specs: list[RunSpec], store: Store, retry_failed: bool, summary: Summary) -> list[RunSpec]:
    statuses = store.statuses(s.run_id for s in specs)
    todo = []
    for spec in specs:
        status = statuses.get(spec.run_id, "pending")
        if status == "done":
            summary.skipped_done += 1
        elif status == "failed" and not retry_failed:
            summary.skipped_failed += 1
        elif status == "running":  # recover_stale ran first: its coordinator is alive
            summary.skipped_elsewhere += 1
        else:
            todo.append(spec)
    return todo


def run_plan(specs: list[RunSpec], store: Store, workers: int, console: Console | None = None,
             retry_failed: bool = False, ray: RaySettings | None = None, reclaim_running: bool = False) -> Summary:
    """Run what the store does not have yet; `ray` set runs each run as a Ray task instead of
    in local worker processes (same store semantics, same numbers)."""
    console = console or Console(stderr=True)
    summary = Summary(planned=len(specs))
    store.register(specs)
    recovered = store.recover_stale(other_hosts=reclaim_running)
    if recovered:
        console.print(f"{recovered} run(s) left running by a stopped coordinator will resume from their checkpoints")
    todo = _select(specs, store, retry_failed, summary)
    if ray is not None:
        where = ray_tasks.connect(ray) if todo else "Ray"  # nothing to run: no need to start it
    else:
        where = f"{workers or 'no'} worker process{'es' if workers != 1 else ''}"
    elsewhere = (f"{summary.skipped_elsewhere} in progress under another coordinator (if it is gone, "
                 "reclaim_running=true takes them over), " if summary.skipped_elsewhere else "")
    console.print(
        f"{len(specs)} planned runs: {summary.skipped_done} already done, {elsewhere}"
        f"{summary.skipped_failed} failed earlier{' (retry with retry_failed=true)' if summary.skipped_failed else ''}, "
        f"{len(todo)} to run with {where}"
    )
    with ProgressView(console, specs) as view:
        todo_ids = {s.run_id for s in todo}
        for spec in specs:
            if spec.run_id not in todo_ids:
                view.skip(spec)

        def claim(spec: RunSpec) -> bool:
            if store.claim(spec.run_id, retry_failed):
                return True
            summary.skipped_elsewhere += 1
            view.skip(spec)
            console.print(f"    skipped {spec.label}: another coordinator took it first", highlight=False)
            return False

        def record(result: RunResult) -> None:
            store.finish(result)
            view.finished(result)
            setattr(summary, result.status, getattr(summary, result.status) + 1)
            if result.status == "failed":
                summary.failures.append((view.specs[result.run_id], result.reason or ""))

        try:
            if ray is not None:
                if todo:
                    ray_tasks.run_tasks(todo, store, view, claim, record, ray)
            elif workers <= 0:
                run_inline(todo, store, view, claim, record)
            else:
                run_pool(todo, store, workers, view, claim, record)
        except KeyboardInterrupt:
            # Whatever the interrupt caught half-way (a claim, a run not yet settled) must not
            # stay `running`: it would wait for this coordinator's death to be noticed.
            store.release_owned("not finished: the suite was interrupted")
            raise
    return summary

