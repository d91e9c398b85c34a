"""Local worker processes: each runs one run at a time and reports progress through a queue;
the coordinator (harness.run.coordinator) records every result. Workers are long-lived
(torch is imported once per worker, not once per run). Ctrl-C asks every worker to checkpoint;
a worker whose coordinator died checkpoints and leaves. `workers=0` runs in the calling process.
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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.run.dispatch import Claim, Record, settle_stopped
from harness.run.plan import RunSpec
from harness.run.progress import ProgressView
from harness.run.runner import execute_run
from harness.run.store import RunResult, Store

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




def run_inline(todo: list[RunSpec], store: Store, view: ProgressView, claim: Claim, record: Record) -> None:
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


def run_pool(todo: list[RunSpec], store: Store, workers: int, view: ProgressView, claim: Claim,
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
