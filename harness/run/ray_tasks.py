"""executor=ray: each run is a Ray task; the coordinator alone writes the store.

The coordinator (the `harness run` process, Ray's driver) keeps only as many tasks in flight
as the cluster can run at once, claiming each run in the store just before submitting it:
`running` in the store means a worker has it (or is about to), coordinators sharing the
store split the suite, and Ctrl-C has hardly any queued task to cancel. Tasks report
start and progress through a small actor (`Mailbox`) that the coordinator drains; a task's
return value is its `RunResult`, which the coordinator records exactly as the local executor
does, so the store cannot tell the two executors apart.

Faults: a worker process or node that dies makes Ray run the task again (`max_retries`), and
the new attempt resumes from the run's last checkpoint, which therefore must be on storage
every node reaches (checkpoint paths are made absolute before they are shipped). When the
retries are spent the run is recorded as failed with Ray's reason. Ctrl-C sets the mailbox's
stop flag: each task checkpoints at its next rollout boundary and returns `interrupted`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from harness.config import COMMAND_LINE, RaySettings, Suite
from harness.errors import ConfigError
from harness.run.dispatch import settle_stopped
from harness.run.plan import RunSpec
from harness.run.store import RunResult, Store

STOP_POLL_S = 1.0  # how often a task asks whether the coordinator wants it to stop
PROGRESS_EVERY_S = 0.5  # at most this often a task posts its env-step count
CAPACITY_EVERY_S = 5.0  # how often the coordinator re-reads the cluster size (it may grow)

WithCheckpoints = TypeVar("WithCheckpoints", RunSpec, Suite)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError.single(("executor",), "executor=ray needs Ray: pip install 'teamgen-harness[ray]'",
                                 found="ray", file=COMMAND_LINE) from None
    return ray


def connect(settings: RaySettings) -> str:
    """Join the cluster at `settings.address`, or start a private instance on this machine;
    returns a description for the progress header. Reuses a connection made by the caller."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
        if settings.address:
            _check_reachable(settings.address)
            kwargs["address"] = settings.address
        else:
            kwargs["num_cpus"] = settings.local_cpus
        # A new local instance has token authentication on, which is what we want; Ray says so
        # in a warning that reads like a problem on every run.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        try:
            ray.init(**kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ray's own AuthenticationError, ...
            first = first_line(exc)
            if settings.address:
                raise ConfigError.single(("ray_address",), f"cannot connect to a Ray cluster there ({first})",
                                         found=settings.address, file=COMMAND_LINE) from None
            raise ConfigError.single(("executor",), f"could not start a local Ray instance ({first})",
                                     found="ray", file=COMMAND_LINE) from None
    _check_feasible(ray, settings)
    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    gpus = f", {total.get('GPU', 0):g} GPUs" if settings.gpus_per_run else ""
    return (f"Ray ({nodes} node{'s' if nodes != 1 else ''}, {total.get('CPU', 0):g} CPUs{gpus}; "
            f"{settings.cpus_per_run:g} CPU{'s' if settings.cpus_per_run != 1 else ''} per run)")


def _check_reachable(address: str) -> None:
    """Ray keeps retrying an address where nothing listens for minutes: fail in seconds."""
    if address == "auto":
        return  # Ray looks up the local cluster itself and says at once when there is none
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError.single(("ray_address",), "expected auto or HOST:PORT (e.g. 10.0.0.5:6379)",
                                 found=address, file=COMMAND_LINE)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError.single(("ray_address",), f"no Ray cluster answers there ({exc.strerror or exc})",
                                 found=address, file=COMMAND_LINE) from None


def _check_feasible(ray: Any, settings: RaySettings) -> None:
    """A run no node can host would wait forever in Ray's queue: say so now instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for key, need in (("CPU", settings.cpus_per_run), ("GPU", settings.gpus_per_run)):
        if need and not any(r.get(key, 0) >= need for r in nodes):
            most = max((r.get(key, 0) for r in nodes), default=0)
            name = "cpus_per_run" if key == "CPU" else "gpus_per_run"
            raise ConfigError.single((name,), f"no node of the Ray cluster has that many {key}s (at most {most:g})",
                                     found=need, file=COMMAND_LINE)


def capacity(settings: RaySettings) -> int:
    """Runs the cluster can hold at once with each run's declared resources."""
    total = import_ray().cluster_resources()
    fits = [int(total.get("CPU", 0) // settings.cpus_per_run)]
    if settings.gpus_per_run:
        fits.append(int(total.get("GPU", 0) // settings.gpus_per_run))
    return max(1, min(fits))


def shared_paths(item: WithCheckpoints) -> WithCheckpoints:
    """Absolute checkpoint paths: a worker's working directory is not the coordinator's on
    another node (and a relative path would silently split a run's checkpoints)."""
    return dataclasses.replace(item, checkpoint_dir=str(Path(item.checkpoint_dir).resolve()))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def task_threads(settings: RaySettings) -> int:
    return max(1, int(settings.cpus_per_run))


def as_tasks(fn: Callable[..., Any], settings: RaySettings) -> Any:
    """`fn` as a Ray task holding one run's declared resources. Ray retries it only when its
    worker dies; an exception is the work's own failure, reported, not retried."""
    return import_ray().remote(fn).options(num_cpus=settings.cpus_per_run, num_gpus=settings.gpus_per_run,
                                     max_retries=settings.max_retries, retry_exceptions=False)


def new_mailbox() -> Any:
    return import_ray().remote(num_cpus=0)(Mailbox).remote()


# ---------------------------------------------------------------------------------------------
# Worker side


class Mailbox:
    """Messages from tasks to the coordinator, and the coordinator's stop flag. A Ray actor
    that takes no CPU, so it never holds back a run."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, Any]] = []
        self.stopping = False

    def post(self, kind: str, key: str, value: Any) -> None:
        self.messages.append((kind, key, value))

    def drain(self) -> list[tuple[str, str, Any]]:
        out, self.messages = self.messages, []
        return out

    def stop(self) -> None:
        self.stopping = True

    def is_stopping(self) -> bool:
        return self.stopping


def watch_stop(mailbox: Any) -> threading.Event:
    """An event set once the coordinator asks to stop or can no longer be reached."""
    ray = import_ray()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                if ray.get(mailbox.is_stopping.remote(), timeout=30):
                    stop.set()
            except Exception:  # the mailbox died with its coordinator: checkpoint and leave
                stop.set()
            time.sleep(STOP_POLL_S)

    threading.Thread(target=poll, daemon=True).start()
    return stop


def where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def harness_run(spec: RunSpec, mailbox: Any, threads: int) -> RunResult:
    """One run inside a Ray worker (the process title reads `ray::harness_run`)."""
    import torch

    from harness.run.runner import execute_run

    torch.set_num_threads(threads)
    # Waited for: a message still queued in this process when it is killed is lost, and the
    # start must reach the coordinator for `attempts` to count this try.
    ray = import_ray()
    ray.get(mailbox.post.remote("start", spec.run_id, where()))
    last = [0.0]

    def report(env_steps: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            mailbox.post.remote("progress", spec.run_id, env_steps)

    def phase(what: str | None) -> None:
        mailbox.post.remote("phase", spec.run_id, what)

    stop = watch_stop(mailbox)
    try:
        return execute_run(spec, report, should_stop=stop.is_set, on_phase=phase)
    finally:
        stop.set()


# ---------------------------------------------------------------------------------------------
# Coordinator side


def _failure(spec: RunSpec, exc: Exception, settings: RaySettings) -> RunResult:
    ray = import_ray()
    detail = first_line(exc)
    if isinstance(exc, ray.exceptions.RayTaskError):  # raised inside the task (e.g. cannot import a plugin)
        reason = f"{type(exc.cause).__name__ if exc.cause else 'error'} in its Ray task: {detail}"
    else:  # worker process or node died, out of memory, ...
        tries = settings.max_retries + 1
        which = f"on all {tries} attempts" if tries > 1 else "and max_retries=0"
        reason = f"its Ray worker died ({type(exc).__name__}) {which}: {detail}"
    return RunResult(spec.run_id, "failed", reason)


def run_tasks(todo: list[RunSpec], store: Store, view: Any, claim: Callable[[RunSpec], bool],
              record: Callable[[RunResult], None], settings: RaySettings) -> None:
    ray = import_ray()
    mailbox = new_mailbox()
    task = as_tasks(harness_run, settings)
    threads = task_threads(settings)
    queued = deque(shared_paths(s) for s in todo)
    inflight: dict[Any, RunSpec] = {}
    started: set[str] = set()

    def in_flight_ids() -> set[str]:  # a late message must not mark a recorded run running again
        return {s.run_id for s in inflight.values()}

    def pump() -> None:
        for kind, run_id, value in ray.get(mailbox.drain.remote()):
            if kind == "start" and run_id in in_flight_ids():  # a retry starts again: attempts counts both
                started.add(run_id)
                store.mark_running(run_id)
                view.started(run_id)
            elif kind == "progress":
                view.advance(run_id, value)
            elif kind == "phase":
                view.phase(run_id, value)

    window, sized_at = capacity(settings), time.monotonic()
    try:
        while queued or inflight:
            if time.monotonic() - sized_at > CAPACITY_EVERY_S:
                window, sized_at = capacity(settings), time.monotonic()
            while queued and len(inflight) < window:
                spec = queued.popleft()
                if claim(spec):
                    inflight[task.remote(spec, mailbox, threads)] = spec
            if not inflight:
                break  # every remaining run was taken by another coordinator
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25)
            pump()  # before results, so a run's start is in the store before its end
            for ref in ready:
                spec = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    result = _failure(spec, exc, settings)
                record(result)
    except KeyboardInterrupt:
        ray.get(mailbox.stop.remote())
        pump()
        for ref, spec in inflight.items():
            if spec.run_id not in started:
                ray.cancel(ref)  # still queued in Ray: it never starts (run_plan releases it)
        deadline = time.monotonic() + 60
        for ref, spec in inflight.items():
            try:
                result = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                result = RunResult(spec.run_id, "interrupted", "stopped by the user")
            if spec.run_id in started:
                settle_stopped(result, store, record)
        raise
