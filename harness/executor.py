"""Run a plan: worker processes execute runs, the coordinator alone writes the store.

Workers are long-lived processes (torch is imported once per worker, not once per run),
one run at a time each. They report progress through a queue; the coordinator shows it and
records each run's result as it arrives. A run that raises is recorded as failed with its
reason and the others go on. Ctrl-C asks every worker to checkpoint; the runs are marked
interrupted and resume on the next invocation.

Each run is claimed in the store just before it is dispatched (one per free worker), so
coordinators sharing a store split a suite. `executor=ray` swaps the worker processes for
Ray tasks (harness/ray_executor.py) and keeps everything else here.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, ClassVar

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

from harness.config import RaySettings
from harness.heartbeat import Heartbeat
from harness.plan import RunSpec
from harness.report import took_no_gradient_step
from harness.runner import execute_run
from harness.store import RunResult, Store

# ---------------------------------------------------------------------------------------------
# Worker side

_progress_queue: Any = None
_parent_pid: int | None = None
_stopping = threading.Event()  # set by the first Ctrl-C a worker receives; stays set
_running = threading.Event()  # a run is in progress in this worker


def _init_worker(progress_queue: Any, parent_pid: int, threads: int, stop_all: Any) -> None:
    global _progress_queue, _parent_pid
    _progress_queue, _parent_pid = progress_queue, parent_pid
    signal.signal(signal.SIGINT, lambda *_: _stopping.set())
    # A terminal's Ctrl-C reaches every worker, but a SIGINT sent to the coordinator alone
    # (`kill -INT`, a scheduler, `timeout -s INT`) does not: the coordinator then sets `stop_all`.
    threading.Thread(target=_stop_when_told, args=(stop_all,), daemon=True).start()
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    import torch

    # Each worker gets its share of the cores; letting every worker use all of them makes
    # the processes fight over the same cores and slows everything down.
    torch.set_num_threads(threads)


def _stop_when_told(stop_all: Any) -> None:
    stop_all.wait()
    _stopping.set()


def worker_threads(workers: int) -> int:
    """Torch threads per worker: OMP_NUM_THREADS when the user set it (several coordinators
    or other jobs may share the machine), else an equal share of the cores. Oversubscribed
    cores make torch's small-matrix kernels spin and run many times slower. `workers=0` (runs in
    the calling process, one at a time) gets every core, like one worker."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _coordinator_gone() -> bool:
    return _parent_pid is not None and os.getppid() != _parent_pid


def _exit_when_orphaned() -> None:
    """An idle worker whose coordinator was killed would wait for work forever: leave.
    A busy one first lets its run checkpoint (the run polls `_coordinator_gone`)."""
    while True:
        time.sleep(0.5)
        if _coordinator_gone():
            _stopping.set()
            if not _running.is_set():
                os._exit(0)


def _worker_run(spec: RunSpec) -> RunResult:
    q = _progress_queue
    last = [0.0]

    def report(env_steps: int) -> None:
        now = time.monotonic()
        if q is not None and now - last[0] > 0.25:
            last[0] = now
            q.put(("progress", spec.run_id, env_steps))

    if _stopping.is_set():  # queued before the Ctrl-C: leave it pending for the next invocation
        return RunResult(spec.run_id, "interrupted", "not started: the suite was interrupted")
    def phase(what: str | None) -> None:
        if q is not None:
            q.put(("phase", spec.run_id, what))

    if q is not None:
        q.put(("start", spec.run_id, os.getpid()))
    _running.set()
    try:
        return execute_run(spec, report, _coordinator_gone, _stopping, on_phase=phase)
    finally:
        _running.clear()


# ---------------------------------------------------------------------------------------------
# Coordinator side


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
        from harness import ray_executor

        where = ray_executor.connect(ray) if todo else "Ray"  # nothing to run: no need to start it
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
                    ray_executor.run_tasks(todo, store, view, claim, record, ray)
            elif workers <= 0:
                _run_inline(todo, store, view, claim, record)
            else:
                _run_pool(todo, store, workers, view, claim, record)
        except KeyboardInterrupt:
            # Whatever the interrupt caught half-way (a claim, a run not yet settled) must not
            # stay `running`: it would wait for this coordinator's death to be noticed.
            store.release_owned("not finished: the suite was interrupted")
            raise
    return summary


Claim = Callable[[RunSpec], bool]
Record = Callable[[RunResult], None]


def _run_inline(todo: list[RunSpec], store: Store, view: ProgressView, claim: Claim, record: Record) -> None:
    for spec in todo:
        if not claim(spec):
            continue
        store.mark_running(spec.run_id)
        view.started(spec.run_id)
        result = execute_run(spec, functools.partial(view.advance, spec.run_id),
                             on_phase=functools.partial(view.phase, spec.run_id))
        record(result)
        if result.status == "interrupted":
            raise KeyboardInterrupt


def settle_stopped(result: RunResult, store: Store, record: Record) -> None:
    """After Ctrl-C: a run that finished anyway is recorded; any other is left interrupted
    (it resumes from its checkpoint next time) without a line of its own on the display."""
    if result.status == "done":
        record(result)
    else:
        store.finish(RunResult(result.run_id, "interrupted", result.reason, env_steps=result.env_steps,
                               seconds=result.seconds))


@dataclass
class _Deaths:
    """Worker deaths seen by one coordinator. A pool whose worker dies (a signal, os._exit, the
    OOM killer) breaks as a whole, and the pool shuts the other workers down with SIGTERM. The
    run whose own worker died is retried once (the death may have come from outside, or from a
    neighbour's memory), and a second death is final; runs that were only shut down with the
    pool resume from their checkpoints. When every worker of a break ended by SIGTERM, the one
    that broke it cannot be told apart (a run that SIGTERMs itself, or a kill from outside), so
    each of them counts a stop, and `MAX_STOPS` stops fail a run: never retried forever."""

    MAX_STOPS: ClassVar[int] = 5

    count: Counter[str] = field(default_factory=Counter)
    stops: Counter[str] = field(default_factory=Counter)

    def settle(self, spec: RunSpec, exitcode: int | None, culprit_known: bool) -> str | None:
        """None: run it again; else the reason it failed. `culprit_known`: another worker of the
        same break died of something other than SIGTERM."""
        if exitcode == -signal.SIGTERM:
            if culprit_known:
                return None
            self.stops[spec.run_id] += 1
            if self.stops[spec.run_id] < self.MAX_STOPS:
                return None
            return (f"its worker process was stopped {self.MAX_STOPS} times by SIGTERM (sent by the run itself, or "
                    "by something outside the harness); run it again with retry_failed=true")
        self.count[spec.run_id] += 1
        if self.count[spec.run_id] < 2:
            return None
        return f"its worker process died twice ({_death_cause(exitcode)})"


def _death_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "cause unknown"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        extra = ": killed, or out of memory" if -exitcode == signal.SIGKILL else ""
        return f"signal {-exitcode} {name}{extra}"
    return f"exit code {exitcode}: the process exited during the run (os._exit?)"


def _run_pool(todo: list[RunSpec], store: Store, workers: int, view: ProgressView, claim: Claim,
              record: Record) -> None:
    ctx = mp.get_context("spawn")  # fork would copy torch/JAX thread pools in a broken state
    progress_queue = ctx.Queue()  # a plain queue: no manager process to outlive a killed coordinator
    threads = worker_threads(workers)
    stop = threading.Event()
    stop_all = ctx.Event()  # asks every worker to checkpoint and stop (see _init_worker)
    pending = {s.run_id: s for s in todo}  # submitted, result not yet recorded
    worker_of: dict[str, int] = {}  # run id -> pid of the worker that started it

    def pump() -> None:  # progress messages -> store + display, on the coordinator only
        while not stop.is_set():
            try:
                kind, run_id, value = progress_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if kind == "start" and run_id in pending:
                worker_of[run_id] = value
                store.mark_running(run_id)
                view.started(run_id)
            elif kind == "phase":
                view.phase(run_id, value)
            else:
                view.advance(run_id, value)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    slots = min(workers, max(1, len(todo)))

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=slots, mp_context=ctx, initializer=_init_worker,
                                   initargs=(progress_queue, os.getpid(), threads, stop_all))

    pool = new_pool()

    def replace_pool() -> None:
        """Drop a broken pool (its processes are gone already) for a fresh one."""
        nonlocal pool
        pool.shutdown(wait=False, cancel_futures=True)
        pool = new_pool()
        pool_pids.clear()

    queued = deque(todo)
    owned: set[str] = set()  # claimed by this coordinator already (a run sent back after a death)
    deaths = _Deaths()
    futures: dict[Future[RunResult], RunSpec] = {}

    def refill() -> None:  # one run per worker: a run is claimed only when a worker is free for it
        while queued and len(futures) < slots:
            spec = queued.popleft()
            if spec.run_id in owned or claim(spec):
                owned.add(spec.run_id)
                try:
                    futures[pool.submit(_worker_run, spec)] = spec
                except BrokenProcessPool:
                    # A worker died since the last wait: with runs in flight, their futures report
                    # the break and after_break settles them; with none (it died after returning
                    # its result), there is nothing to settle, only a pool to replace.
                    queued.appendleft(spec)
                    if futures:
                        return
                    replace_pool()

    def after_break(broken: list[RunSpec]) -> None:
        """The pool broke: settle each run it was running and start a fresh pool."""
        time.sleep(0.5)  # let the pump read the last "start" messages (which worker ran what)
        exitcodes = {}
        for spec in broken:
            process = processes.get(worker_of.get(spec.run_id, -1))
            exitcodes[spec.run_id] = process.exitcode if process is not None else None
        # Any worker of this pool, running a run or idle after returning one, that ended other
        # than by the pool's SIGTERM is the one that broke it.
        culprit_known = any(code != -signal.SIGTERM for code in exitcodes.values()) or any(
            processes[pid].exitcode not in (None, -signal.SIGTERM) for pid in pool_pids)
        for spec in broken:
            exitcode = exitcodes[spec.run_id]
            reason = deaths.settle(spec, exitcode, culprit_known)
            if reason is None:
                view.console.print(f"    {spec.label}: its worker stopped ({_death_cause(exitcode)}); "
                                   "running it again from its last checkpoint", highlight=False, markup=False)
                queued.appendleft(spec)
            else:
                pending.pop(spec.run_id, None)
                record(RunResult(spec.run_id, "failed", reason))
        replace_pool()

    processes: dict[int, Any] = {}  # every worker process seen, by pid
    pool_pids: set[int] = set()  # those of the current pool
    try:
        refill()
        while futures or queued:
            # Every worker process seen so far (the pool forgets a dead one before it reports the
            # break): after a break, their exit codes say whose worker died.
            current = getattr(pool, "_processes", None) or {}
            processes.update(current)
            pool_pids.update(current)
            done, _ = wait(futures, return_when=FIRST_COMPLETED, timeout=1.0)
            broken: list[RunSpec] = []
            for fut in done:
                spec = futures.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken.append(spec)
                    continue
                pending.pop(spec.run_id, None)
                record(result)
            if broken:
                wait(futures, timeout=30)  # a broken pool fails every future in flight at once
                broken += [futures.pop(f) for f in list(futures)]
                after_break(broken)
            refill()
    except KeyboardInterrupt:
        # Every worker (told through stop_all, whether or not the signal reached it) finishes
        # its rollout, checkpoints and returns "interrupted". Runs that never started stay pending.
        stop_all.set()
        for fut in futures:
            fut.cancel()  # not started: released below in run_plan
        deadline = time.monotonic() + 60
        for fut, spec in list(futures.items()):
            if fut.cancelled():
                continue
            try:
                result = fut.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                result = RunResult(spec.run_id, "interrupted", "stopped by the user")
            settle_stopped(result, store, record)
        raise
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
