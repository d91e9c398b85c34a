"""Runs end to end on the real matrix backend, SQLite store and worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import eval_keys, eval_values, evals_by_run, spec_for, store_url

from harness.cli import main
from harness.config import load_suite
from harness.run.coordinator import run_plan
from harness.run.plan import plan
from harness.run.runner import execute_run
from harness.run.store import Store


def test_same_seed_gives_identical_evaluation_numbers(smoke_suite, tmp_path: Path) -> None:
    path = smoke_suite()
    first = execute_run(spec_for(path, "two_type", "qmix", checkpoint_dir=tmp_path / "a"))
    second = execute_run(spec_for(path, "two_type", "qmix", checkpoint_dir=tmp_path / "b"))
    assert first.status == second.status == "done"
    assert eval_values(first.evals) == eval_values(second.evals)
    assert {r["kind"] for r in first.evals} == {"curve", "absolute"}
    assert {r["split"] for r in first.evals} == {"train", "test"}


def test_interrupted_run_resumes_to_the_uninterrupted_result(smoke_suite, tmp_path: Path) -> None:
    path = smoke_suite()
    reference = execute_run(spec_for(path, "climbing", "vdn", checkpoint_dir=tmp_path / "ref"))
    spec = spec_for(path, "climbing", "vdn", checkpoint_dir=tmp_path / "resumed")
    calls = []
    stopped = execute_run(spec, on_progress=calls.append, should_stop=lambda: len(calls) >= 20)
    assert stopped.status == "interrupted"
    assert 0 < stopped.env_steps < spec.budget["env_steps"]
    assert (Path(spec.checkpoint_dir) / spec.run_id / "last.pt").exists()
    progress: list[int] = []
    resumed = execute_run(spec, on_progress=progress.append)
    assert resumed.status == "done"
    # Its first report is where it resumed: the checkpoint, not 0 (a start from scratch).
    assert progress[0] == stopped.env_steps > 0 and progress[1] > stopped.env_steps
    assert eval_values(resumed.evals) == eval_values(reference.evals)
    assert resumed.grad_steps == reference.grad_steps
    run_dir = Path(spec.checkpoint_dir) / spec.run_id
    assert not (run_dir / "last.pt").exists()  # done: the replay-laden resume checkpoint is dropped
    assert (run_dir / "best.pt").exists() and (run_dir / "metrics.jsonl").exists()


def test_failing_runs_are_recorded_and_the_others_go_on(smoke_suite, capsys: pytest.CaptureFixture[str]) -> None:
    path = smoke_suite(algorithms="[vdn, 'plugins:ExplodingVDN', 'plugins:CrashingVDN']", seeds=1)
    code = main(["run", f"suite={path}", "tasks=[climbing]"])
    assert code == 1
    suite = load_suite(str(path), ["tasks=[climbing]"])
    runs = {r["algorithm"]: r for r in Store(suite.store).runs(suite.name)}
    assert runs["vdn"]["status"] == "done"
    assert runs["plugins:ExplodingVDN"]["status"] == "failed"
    assert "non-finite loss" in runs["plugins:ExplodingVDN"]["reason"]
    assert runs["plugins:CrashingVDN"]["status"] == "failed"
    assert "boom: a bug in the plugin" in runs["plugins:CrashingVDN"]["reason"]
    capsys.readouterr()
    assert main(["status", f"suite={path}", "tasks=[climbing]"]) == 0
    printed = capsys.readouterr().out
    assert "failed 2" in printed
    # The finished run's time: wall seconds, env steps/s, evaluation's share, its fixed cost.
    assert "climbing/vdn:" in printed and "evaluating, first training step after" in printed
    assert main(["status", f"suite={path}", "tasks=[climbing]", "format=json"]) == 0
    (timed,) = json.loads(capsys.readouterr().out)["done"]
    assert timed["run"].startswith("climbing/vdn") and {"evaluation", "update"} <= set(timed["timings"])


def test_rerun_skips_done_runs_and_duplicates_nothing(smoke_suite) -> None:
    suite = load_suite(str(smoke_suite(algorithms="[vdn]")))
    store = Store(suite.store)
    specs = plan(suite)
    first = run_plan(specs, store, workers=0)
    assert first.done == len(specs) and first.exit_code == 0
    rows_before = len(store.evals([s.run_id for s in specs]))
    second = run_plan(specs, store, workers=0)
    assert second.done == 0 and second.skipped_done == len(specs)
    assert len(store.evals([s.run_id for s in specs])) == rows_before
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == len(specs)


def test_worker_processes_give_the_inline_numbers(smoke_suite) -> None:
    inline = load_suite(str(smoke_suite(algorithms="[qmix]", name="inline")))
    pooled = load_suite(str(smoke_suite(algorithms="[qmix]", name="pooled", workers=2)))
    results = []
    for suite in (inline, pooled):
        store = Store(suite.store)
        summary = run_plan(plan(suite), store, workers=suite.workers)
        assert summary.done == len(plan(suite))
        results.append(evals_by_run(suite, store))
    assert results[0] == results[1]


def _status_counts(path: Path) -> Counter:
    suite = load_suite(str(path))
    rows = {r["run_id"]: r["status"] for r in Store(suite.store).runs(suite.name)}
    return Counter(rows.get(s.run_id, "missing") for s in plan(suite))


def _wait_for_done(path: Path, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(load_suite(str(path)).store.removeprefix("sqlite:///")).exists() and _status_counts(path)["done"] >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} runs finished in {timeout}s: {_status_counts(path)}")


def _wait_until_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of the killed coordinator are still alive after {timeout}s")


@pytest.mark.parametrize(("how", "extra"), [("kill -9", []), ("ctrl-c", []), ("sigint", []),
                                           ("ctrl-c", ["executor=ray"])],
                         ids=["kill -9", "ctrl-c", "sigint to the coordinator alone", "ctrl-c on ray"])
def test_stopped_suite_resumes_with_one_done_run_per_planned_run(smoke_suite, how: str, extra: list[str]) -> None:
    if extra:
        pytest.importorskip("ray")
    # On Ray the runs start together once the instance is up: longer runs keep the suite from
    # finishing between the second result and the signal on a busy machine.
    path = smoke_suite(algorithms="[iql, vdn, qmix]", seeds=2, workers=2, env_steps=1024 if extra else 256)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", f"suite={path}", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_done(path, at_least=2, timeout=120)
        if how == "kill -9":
            proc.send_signal(signal.SIGKILL)  # the coordinator only; workers notice and stop
        elif how == "sigint":
            proc.send_signal(signal.SIGINT)  # `kill -INT`, a scheduler: the workers are not signalled
        else:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole job on Ctrl-C
        _, stderr = proc.communicate(timeout=90)
        code = proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if how == "kill -9":
        _wait_until_group_gone(proc.pid, timeout=30)  # orphaned workers checkpoint and leave
    before = _status_counts(path)
    planned = sum(before.values())
    suite = load_suite(str(path))
    finished_before = {r["run_id"]: r["finished_at"] for r in Store(suite.store).runs(suite.name) if r["status"] == "done"}
    assert before["done"] < planned, f"the suite finished before it was stopped: {before}"
    assert before["running"] == 0, before  # a killed coordinator's runs read as interrupted, not running
    if how in ("ctrl-c", "sigint"):
        assert code == 130
        # The message says what was checkpointed, and it is so.
        checkpointed = sum((Path(suite.checkpoint_dir) / r["run_id"] / "last.pt").exists()
                           for r in Store(suite.store).runs(suite.name) if r["status"] == "interrupted")
        said = re.search(r"(\d+) run\(s\) in progress checkpointed", stderr)
        assert (int(said.group(1)) if said else 0) == checkpointed, stderr[-1000:]
        assert before["interrupted"] == checkpointed or "stopped without a checkpoint" in stderr, stderr[-1000:]
    assert main(["run", f"suite={path}"]) == 0
    after = _status_counts(path)
    assert after == Counter({"done": planned}), after
    finished_after = {r["run_id"]: r["finished_at"] for r in Store(suite.store).runs(suite.name)}
    assert all(finished_after[k] == v for k, v in finished_before.items()), "finished runs were run again"
    ids = [s.run_id for s in plan(suite)]
    keys = eval_keys(Store(suite.store), ids)
    assert len(keys) == len(set(keys))


def _open_store_at(args: tuple[str, float]) -> str:
    url, start = args
    while time.time() < start:  # both processes open the brand-new file at the same moment
        pass
    try:
        Store(url)
    except Exception as exc:  # returned, not raised: a pool cannot always unpickle our errors
        return str(exc)
    return "ok"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_opening_a_new_store_at_once_both_succeed(tmp_path: Path, kind: str,
                                                                 request: pytest.FixtureRequest) -> None:
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_open_store_at, [("sqlite:///" + str(tmp_path / "warm.db"), 0.0)] * 2)  # start both workers
        for i in range(8):
            url = store_url(kind, request, tmp_path, f"race{i}")
            start = time.time() + 0.2
            assert pool.map(_open_store_at, [(url, start), (url, start)]) == ["ok", "ok"]


def test_evaluating_every_composition_in_one_batch_gives_the_per_composition_numbers(smoke_suite) -> None:
    """A backend that `supports_assigned_compositions` plays every composition of every split
    in one batch (one environment); on a deterministic game the numbers equal those of a batch
    per composition, and every evaluation plays the same episodes."""
    import torch

    from harness import registry
    from harness.config import build_config
    from harness.run.runner import Evaluator, TaskEnvs

    spec = spec_for(smoke_suite(), "two_type", "vdn")
    envs = TaskEnvs.from_spec(spec)
    cls = registry.get_algorithm("vdn")
    algorithm = cls(envs.spec, build_config(cls, spec.params), 0, torch.device("cpu"))
    together = Evaluator(envs, 0, episodes=5)
    assert together.together and together.together_batch == 16  # 3 compositions x 5 episodes
    first, again = together.evaluate(algorithm, 5, 0, "curve"), together.evaluate(algorithm, 37, 0, "curve")
    assert not together._cache and "_together_env" in vars(together)  # one environment for the whole task
    apart = Evaluator(envs, 0, episodes=5)
    apart.together = False
    expected = apart.evaluate(algorithm, 5, 0, "curve")
    assert eval_values(first) == eval_values(expected)
    assert [r["episodes"] for r in again] == [37] * len(again)
    assert [(r["split"], r["composition"], r["metric"]) for r in again] == [
        (r["split"], r["composition"], r["metric"]) for r in expected]


def test_runs_record_their_time_by_phase_and_announced_compilations(smoke_suite, tmp_path: Path) -> None:
    """Every run records wall seconds by phase (evaluation's share among them), with set-up work
    that a backend announces through `harness.api.busy` shown to the progress callback and timed."""
    from harness.api import busy
    from harness.run.runner import Run

    spec = spec_for(smoke_suite(), "climbing", "vdn", checkpoint_dir=tmp_path / "ck")
    phases: list[str | None] = []
    run = Run(spec, on_phase=phases.append)
    original = run._train

    def train_announcing(stop):  # what SMAX does while it compiles a program
        with busy("compiling something"):
            time.sleep(0.05)
        return original(stop)

    run._train = train_announcing  # type: ignore[method-assign]
    result = run.execute()
    assert result.status == "done"
    assert phases == ["compiling something", None]
    timings = result.timings
    assert {"setup", "evaluation", "rollout", "update", "to_first_update", "compile"} <= set(timings)
    assert timings["compile"] >= 0.05
    assert sum(timings[k] for k in ("setup", "evaluation", "rollout", "update")) <= result.seconds
    assert 0 < timings["to_first_update"] < result.seconds


def test_a_store_made_before_the_timings_column_gains_it(tmp_path: Path) -> None:
    """Opening a store an older harness made adds the columns it lacks (old rows read NULL)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE runs (run_id VARCHAR(32) PRIMARY KEY, suite VARCHAR(200) NOT NULL, "
                             "task VARCHAR(200) NOT NULL, algorithm VARCHAR(200) NOT NULL, seed INTEGER NOT NULL, "
                             "params TEXT NOT NULL, budget TEXT NOT NULL, task_config TEXT NOT NULL, "
                             "metric VARCHAR(50) NOT NULL, status VARCHAR(20) NOT NULL, reason TEXT, "
                             "env_steps BIGINT, grad_steps BIGINT, seconds FLOAT, attempts INTEGER, "
                             "owner VARCHAR(200), versions TEXT, created_at FLOAT, started_at FLOAT, finished_at FLOAT)"))
        conn.execute(sa.text("INSERT INTO runs (run_id, suite, task, algorithm, seed, params, budget, task_config, "
                             "metric, status) VALUES ('r1', 's', 't', 'vdn', 0, '{}', '{}', '{}', 'return', 'done')"))
    store = Store(url)
    (row,) = store.runs("s")
    assert row["timings"] == {} and row["status"] == "done"
    Store(url)  # opening it again finds nothing to add


def test_the_progress_line_shows_a_runs_announced_compilation_then_its_label_again(smoke_suite) -> None:
    """What a worker reports through `on_phase` ("compiling ...") replaces the run's progress
    description while it lasts; None puts the plain label back."""
    from rich.console import Console

    from harness.run.progress import ProgressView

    spec = spec_for(smoke_suite(), "climbing", "vdn")
    view = ProgressView(Console(file=open(os.devnull, "w")), [spec])  # noqa: SIM115
    view.started(spec.run_id)
    task = view.active[spec.run_id]

    def description() -> str:
        return next(t.description for t in view.progress.tasks if t.id == task)

    view.phase(spec.run_id, "compiling SMAX 8v8 for 256 envs")
    assert description() == f"  {spec.label} (compiling SMAX 8v8 for 256 envs)"
    view.phase(spec.run_id, None)
    assert description() == f"  {spec.label}"


def test_progress_counts_a_resumed_runs_earlier_steps_as_done_not_as_trained(smoke_suite) -> None:
    """The rate and time left of a resumed suite come from this invocation's training: the
    checkpoint's steps (a run's first report) would otherwise look like seconds' work."""
    from rich.console import Console

    from harness.run.progress import ProgressView

    spec = spec_for(smoke_suite(), "climbing", "vdn")
    view = ProgressView(Console(file=open(os.devnull, "w")), [spec])  # noqa: SIM115
    view.started(spec.run_id)
    view.advance(spec.run_id, 100)  # resumed from a checkpoint at 100 (the budget is 256)
    view.advance(spec.run_id, 150)
    view.advance(spec.run_id, 200)
    assert (view.steps_done, view.steps_trained) == (200, 100)


def test_two_stores_of_one_suite_never_share_checkpoint_folders(smoke_suite) -> None:
    """Runs of the same suite in two stores have the same run ids: the default checkpoint
    folder is keyed by the store, the default store keeping the plain runs/checkpoints/NAME."""
    from harness.config import default_checkpoint_dir

    a, b = (load_suite("matrix_games", [f"store=sqlite:///{name}.db"]) for name in ("a", "b"))
    assert a.checkpoint_dir != b.checkpoint_dir and a.checkpoint_dir.startswith("runs/checkpoints/matrix_games-")
    assert load_suite("matrix_games").checkpoint_dir == "runs/checkpoints/matrix_games"
    assert default_checkpoint_dir("smoke", "sqlite:///runs/smoke.db") == "runs/checkpoints/smoke"
    assert load_suite(str(smoke_suite()), ["store=sqlite:///c.db"]).checkpoint_dir.endswith("/checkpoints")  # given: kept


@pytest.mark.parametrize("workers", [2, 0])
def test_plugins_that_exit_or_kill_their_worker_fail_alone(smoke_suite, workers: int) -> None:
    """sys.exit and KeyboardInterrupt from plugin code fail their run like any exception; a plugin
    that ends its worker process (os._exit, as a native crash would) fails after one retry, one that
    SIGTERMs itself after five, the pool is rebuilt and the other runs finish. A subprocess with a timeout: a hang fails the test."""
    plugins = ["'plugins:ExitingVDN'", "'plugins:InterruptingVDN'"] + (["'plugins:HardExitingVDN'", "'plugins:TerminatingVDN'"] if workers else [])
    path = smoke_suite(algorithms=f"[vdn, {', '.join(plugins)}]", seeds=1, workers=workers)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", f"suite={path}", "tasks=[climbing]"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    suite = load_suite(str(path), ["tasks=[climbing]"])
    runs = {r["algorithm"]: r for r in Store(suite.store).runs(suite.name)}
    assert runs["vdn"]["status"] == "done"
    assert runs["plugins:ExitingVDN"]["status"] == "failed" and "sys.exit(3)" in runs["plugins:ExitingVDN"]["reason"]
    assert "KeyboardInterrupt raised inside the run" in runs["plugins:InterruptingVDN"]["reason"]
    if workers:
        hard = runs["plugins:HardExitingVDN"]
        assert hard["status"] == "failed" and "worker process died twice (exit code 7" in hard["reason"]
        assert "running it again from its last checkpoint" in proc.stderr
        stopped = runs["plugins:TerminatingVDN"]
        assert stopped["status"] == "failed" and "was stopped 5 times by SIGTERM" in stopped["reason"]


def test_a_killed_worker_costs_no_run(smoke_suite) -> None:
    """kill -9 of one worker (the OOM killer's way): its run is retried once from its checkpoint,
    the pool is rebuilt, the neighbour resumes, and every run ends done exactly once."""
    psutil = pytest.importorskip("psutil")
    path = smoke_suite(algorithms="[iql, vdn, qmix]", seeds=2, workers=2, env_steps=1024)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", f"suite={path}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_done(path, at_least=1, timeout=120)
        workers = [c for c in psutil.Process(proc.pid).children() if "multiprocessing.spawn" in " ".join(c.cmdline())]
        workers[0].kill()
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-2000:]
    assert "its worker stopped (" in stderr and "Traceback" not in stderr
    counts = _status_counts(path)
    assert counts == Counter({"done": sum(counts.values())}), counts
    suite = load_suite(str(path))
    keys = eval_keys(Store(suite.store), [s.run_id for s in plan(suite)])
    assert len(keys) == len(set(keys))  # nothing recorded twice


def test_a_truncated_checkpoint_is_moved_aside_and_the_run_starts_over(smoke_suite, tmp_path: Path, capfd) -> None:
    """A last.pt cut short (a full disk, a crash mid-copy) is renamed last.pt.corrupt-<time>, the
    message names it, and the run starts over and finishes instead of failing every retry."""
    path = smoke_suite(algorithms="[vdn]", seeds=1)
    spec = spec_for(path, "climbing", "vdn", checkpoint_dir=tmp_path / "ck")
    calls: list[int] = []
    stopped = execute_run(spec, on_progress=calls.append, should_stop=lambda: len(calls) >= 5)
    assert stopped.status == "interrupted"
    last = Path(spec.checkpoint_dir) / spec.run_id / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    progress: list[int] = []
    resumed = execute_run(spec, on_progress=progress.append)
    assert resumed.status == "done", resumed.reason
    assert progress[0] <= calls[0], "it resumed from something, not from scratch"
    moved = list(last.parent.glob("last.pt.corrupt-*"))
    assert len(moved) == 1
    assert f"the checkpoint {last} could not be read" in capfd.readouterr().err and moved[0].name in str(moved)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to make a write fail with ENOSPC")
def test_a_checkpoint_write_on_a_full_disk_names_the_folder_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """The temp file is a link to /dev/full, where every write fails with ENOSPC as on a full disk:
    the error names the folder and the remedy, the link is removed, the previous checkpoint stays."""
    from harness.run import runner

    runner._save(tmp_path / "last.pt", {"x": 1})
    (tmp_path / "last.tmp").symlink_to("/dev/full")
    with pytest.raises(OSError, match=f"no space left on the disk of the checkpoint folder {tmp_path}: free some"):
        runner._save(tmp_path / "last.pt", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert runner._load(tmp_path / "last.pt") == {"x": 1}


def test_worker_deaths_are_settled_by_exit_code() -> None:
    """A death is retried once; a SIGTERM beside a real death is the pool's shutdown (free); a
    break where every worker ended by SIGTERM counts a stop for each, and MAX_STOPS fail a run."""
    import signal
    from types import SimpleNamespace

    from harness.run.local import _Deaths

    killed, term = -signal.SIGKILL, -signal.SIGTERM
    a, b = (SimpleNamespace(run_id=name) for name in "ab")
    deaths = _Deaths()
    assert deaths.settle(a, killed, culprit_known=True) is None
    assert all(deaths.settle(b, term, culprit_known=True) is None for _ in range(20))  # innocent neighbour
    assert deaths.settle(a, killed, culprit_known=True) == "its worker process died twice (signal 9 SIGKILL: killed, or out of memory)"
    verdicts = [deaths.settle(b, term, culprit_known=False) for _ in range(_Deaths.MAX_STOPS)]
    assert verdicts[:-1] == [None] * (_Deaths.MAX_STOPS - 1) and "stopped 5 times by SIGTERM" in str(verdicts[-1])
    exits = _Deaths()
    assert exits.settle(a, 7, culprit_known=True) is None and "(exit code 7: " in str(exits.settle(a, 7, True))


def test_a_worker_that_dies_between_runs_breaks_nothing(smoke_suite) -> None:
    """A worker that dies after returning its result leaves a broken pool with nothing in flight:
    the next submission finds it broken, the pool is replaced, and the suite finishes: every run
    done, or failed with a worker-death reason; no traceback, no run left running."""
    path = smoke_suite(algorithms="[vdn, 'plugins:LateExitingVDN', iql]", seeds=4, workers=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", f"suite={path}", "tasks=[climbing]"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    suite = load_suite(str(path), ["tasks=[climbing]"])
    runs = Store(suite.store).runs(suite.name)
    assert len(runs) == 12
    for run in runs:
        assert run["status"] == "done" or (run["status"] == "failed" and "worker process" in run["reason"]), run
