"""executor=ray on a real local Ray instance: same numbers as the local executor, a killed
worker's run retried from its checkpoint, bounded retries, clear errors for bad settings."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import eval_keys, eval_values, evals_by_run, spec_for

from harness.cli import main
from harness.config import load_suite
from harness.run.coordinator import run_plan
from harness.run.plan import plan
from harness.run.runner import execute_run
from harness.run.store import Store

ray = pytest.importorskip("ray")

# A run long enough (~10 s here) to be killed in the middle, checkpointing at every evaluation.
LONG_RUN = ["budgets.smoke.env_steps=6000", "budgets.smoke.eval_every=500", "checkpoint_every=0",
            "tasks=[climbing]", "algorithms=[vdn]"]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _ray_run_processes() -> list[psutil.Process]:
    """Ray worker processes executing a run: their title reads `ray::harness_run`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::harness_run"):
            found.append(proc)
    return found


def _kill_worker_once_checkpointed(run_dir: Path, evaluations: int = 3, timeout: float = 120) -> None:
    """SIGKILL the worker running the run in `run_dir` once it has a checkpoint and a few
    evaluations behind it (so the retry has something to resume from)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = run_dir / "metrics.jsonl"
        curve = [line for line in metrics.read_text().splitlines() if '"curve/' in line] if metrics.exists() else []
        if (run_dir / "last.pt").exists() and len(curve) >= 2 * evaluations:
            workers = _ray_run_processes()
            assert len(workers) == 1, f"expected one run in progress, found {len(workers)}"
            workers[0].send_signal(signal.SIGKILL)
            return
        time.sleep(0.05)
    raise AssertionError(f"the run made no checkpoint with {evaluations} evaluations in {timeout}s")


def _run_in_thread(suite, store: Store) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        out["summary"] = run_plan(plan(suite), store, workers=suite.workers, ray=suite.ray)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


@pytest.mark.parametrize(("extra", "key", "message"), [
    (["ray_address=127.0.0.1:1"], "ray_address", "no Ray cluster answers there"),
    (["ray_address=not-an-address"], "ray_address", "expected auto or HOST:PORT"),
    (["cpus_per_run=0"], "cpus_per_run", "greater than 0"),
    (["executor=dask"], "executor", "'local' or 'ray'"),
])
def test_bad_ray_settings_are_clear_errors(smoke_suite, capsys, extra: list[str], key: str, message: str) -> None:
    assert not ray.is_initialized()  # these run before the module's instance starts (and start none)
    path = smoke_suite(algorithms="[vdn]", seeds=1)
    assert main(["run", f"suite={path}", "executor=ray", *extra]) == 2
    err = capsys.readouterr().err
    assert key in err and message in err and "Traceback" not in err
    assert not ray.is_initialized()


def test_ray_gives_the_local_executor_numbers(smoke_suite, ray_instance) -> None:
    results = []
    for name, executor in (("local", "local"), ("on_ray", "ray")):
        suite = load_suite(str(smoke_suite(algorithms="[vdn, qmix]", name=name)), [f"executor={executor}"])
        store = Store(suite.store)
        summary = run_plan(plan(suite), store, workers=suite.workers, ray=suite.ray if executor == "ray" else None)
        assert summary.done == len(plan(suite)) and summary.exit_code == 0
        assert {r["status"] for r in store.runs(suite.name)} == {"done"}
        results.append(evals_by_run(suite, store))
    assert results[0] == results[1]
    assert all(rows for rows in results[1].values())


def test_killed_worker_run_is_retried_from_its_checkpoint(smoke_suite, ray_instance, tmp_path: Path) -> None:
    path = smoke_suite(algorithms="[vdn]", seeds=1)
    overrides = [*LONG_RUN, "executor=ray", "max_retries=1"]
    suite = load_suite(str(path), overrides)
    (spec,) = plan(suite)
    reference = execute_run(spec_for(path, "climbing", "vdn", checkpoint_dir=tmp_path / "ref", overrides=overrides))
    store = Store(suite.store)
    thread, out = _run_in_thread(suite, store)
    _kill_worker_once_checkpointed(Path(suite.checkpoint_dir) / spec.run_id)
    thread.join(timeout=180)
    assert not thread.is_alive()
    (run,) = store.runs(suite.name)
    assert (run["status"], run["attempts"]) == ("done", 2), run
    assert out["summary"].done == 1
    assert eval_values(store.evals([spec.run_id])) == eval_values(reference.evals)
    keys = eval_keys(store, [spec.run_id])
    assert len(keys) == len(set(keys))
    # The retry resumed: the untrained step-0 evaluation was logged by the first attempt only.
    lines = [json.loads(line) for line in (Path(suite.checkpoint_dir) / spec.run_id / "metrics.jsonl").open()]
    assert sum(1 for r in lines if r["kind"].startswith("curve/") and r["env_steps"] == 0) == 2  # return, win_rate


def test_a_run_whose_worker_dies_past_its_retries_fails_and_the_suite_goes_on(smoke_suite, ray_instance) -> None:
    # 1.5 CPUs per run on a two-CPU instance: one run at a time (still one torch thread), so
    # the first is the one killed.
    suite = load_suite(str(smoke_suite(algorithms="[vdn]", seeds=2)),
                       [*LONG_RUN, "executor=ray", "max_retries=0", "cpus_per_run=1.5"])
    first, second = plan(suite)
    store = Store(suite.store)
    thread, out = _run_in_thread(suite, store)
    _kill_worker_once_checkpointed(Path(suite.checkpoint_dir) / first.run_id, evaluations=1)
    thread.join(timeout=180)
    runs = {r["run_id"]: r for r in store.runs(suite.name)}
    assert runs[first.run_id]["status"] == "failed"
    assert "its Ray worker died" in runs[first.run_id]["reason"]
    assert runs[second.run_id]["status"] == "done"
    assert out["summary"].exit_code == 1 and out["summary"].failed == 1
    # The failed run kept its checkpoint: retry_failed=true resumes it instead of starting over.
    assert (Path(suite.checkpoint_dir) / first.run_id / "last.pt").exists()
    again = run_plan([first], store, workers=0, retry_failed=True, ray=suite.ray)
    assert again.done == 1 and store.runs(run_ids=[first.run_id])[0]["status"] == "done"


def test_a_run_no_node_can_host_is_refused_before_anything_runs(smoke_suite, ray_instance, capsys) -> None:
    path = smoke_suite(algorithms="[vdn]", seeds=1)
    assert main(["run", f"suite={path}", "executor=ray", "cpus_per_run=3"]) == 2
    err = capsys.readouterr().err
    assert "cpus_per_run" in err and "no node of the Ray cluster has that many CPUs (at most 2)" in err
    suite = load_suite(str(path))
    assert {r["status"] for r in Store(suite.store).runs(suite.name)} == {"pending"}


def test_tuning_on_ray_fills_the_study_exactly(smoke_suite, ray_instance, tmp_path: Path, capsys,
                                                monkeypatch) -> None:
    import optuna
    from optuna.trial import TrialState

    monkeypatch.chdir(tmp_path)  # the best params land in runs/tuning/ here
    path = smoke_suite(algorithms="[vdn]", seeds=2)
    journal = tmp_path / "study.journal"
    code = main(["tune", f"suite={path}", "algorithm=vdn", "trials=4", "executor=ray", f"storage={journal}",
                 "tasks=[climbing]"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "running trials on Ray (1 node, 2 CPUs; 1 CPU per run), 2 at a time" in err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="smoke:vdn:smoke", storage=storage)
    states = [t.state for t in study.trials]
    # Two workers, yet no fifth trial: each starts a trial only while the study has room.
    assert len(states) == 4 and all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), states
    assert all(t.user_attrs["owner"]["pid"] != os.getpid() for t in study.trials)  # trained in Ray workers
    assert (tmp_path / "runs" / "tuning" / "smoke" / "vdn.json").exists()
