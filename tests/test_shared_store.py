"""Several coordinators on one results store (SQLite file or a real PostgreSQL server): they
split a suite instead of each running all of it, and nothing is duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import eval_keys, evals_by_run, store_url

from harness.cli import main
from harness.config import load_suite
from harness.run.coordinator import run_plan
from harness.run.plan import plan
from harness.run.store import Store, runs_table

# Runs of ~1 s, so two coordinators started together overlap for most of the suite.
LONGER = ["budgets.smoke.env_steps=1000", "budgets.smoke.eval_every=500"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_coordinators_on_one_store_split_the_suite(smoke_suite, tmp_path: Path, kind: str,
                                                        request: pytest.FixtureRequest) -> None:
    url = store_url(kind, request, tmp_path, "shared")
    path = smoke_suite(algorithms="[vdn, qmix]", seeds=2)
    overrides = [*LONGER, f"store={url}", "workers=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", f"suite={path}", *overrides], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    suite = load_suite(str(path), overrides)
    runs = Store(url).runs(suite.name)
    assert len(runs) == len(plan(suite))
    assert {r["status"] for r in runs} == {"done"}
    assert {r["attempts"] for r in runs} == {1}, "a run was executed by both coordinators"
    owners = {r["owner"] for r in runs}
    assert len(owners) == 2, f"one coordinator ran everything: {owners}"
    keys = eval_keys(Store(url), [r["run_id"] for r in runs])
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_registering_runs_another_coordinator_just_registered_loses_nothing(
        smoke_suite, tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """The race two coordinators starting together can hit: between this store's look-up of
    known runs and its insert, the other coordinator registers the same runs. The loser's
    transaction fails (a unique-key violation, or SQLite's stale snapshot) and is retried."""
    import sqlalchemy as sa

    url = store_url(kind, request, tmp_path, "race")
    specs = plan(load_suite(str(smoke_suite(algorithms="[vdn]", seeds=2)), [f"store={url}"]))
    store, rival = Store(url), Store(url)
    raced = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def rival_registers_first(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNS") and not raced:
            raced.append(True)
            rival.register(specs)

    store.register(specs)
    assert raced, "the rival never got in between"
    assert sorted(r["run_id"] for r in store.runs(specs[0].suite)) == sorted(s.run_id for s in specs)


def test_a_postgres_store_holds_the_sqlite_numbers(smoke_suite, postgres, tmp_path: Path) -> None:
    results = []
    for url in (f"sqlite:///{tmp_path / 'file.db'}", postgres("numbers")):
        suite = load_suite(str(smoke_suite(algorithms="[qmix]", seeds=1)), [f"store={url}"])
        store = Store(url)
        assert run_plan(plan(suite), store, workers=0).done == len(plan(suite))
        results.append(evals_by_run(suite, store))
    assert results[0] == results[1]


def test_tuning_on_a_postgres_study(smoke_suite, postgres, tmp_path: Path, monkeypatch, capsys) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    storage = postgres("study")
    path = smoke_suite(algorithms="[vdn]", seeds=1)
    args = ["tune", f"suite={path}", "algorithm=vdn", "trials=2", "tasks=[climbing]", f"storage={storage}"]
    assert main(args) == 0, capsys.readouterr().err
    assert main([*args, "trials=3"]) == 0  # a second invocation adds only the missing trial
    study = optuna.load_study(study_name="smoke:vdn:smoke", storage=storage)
    assert len(study.trials) == 3
    best = json.loads((tmp_path / "runs" / "tuning" / "smoke" / "vdn.json").read_text())
    assert best["trials"] == 3 and best["study"] == "smoke:vdn:smoke"


def test_runs_left_running_by_another_machine_are_skipped_until_reclaimed(smoke_suite, capsys) -> None:
    suite = load_suite(str(smoke_suite(algorithms="[vdn]", seeds=1)), ["tasks=[climbing]"])
    (spec,) = plan(suite)
    store = Store(suite.store)
    store.register([spec])
    with store.engine.begin() as conn:  # a coordinator on another host took it, then vanished
        conn.execute(runs_table.update().values(status="running", owner="elsewhere.example:4242"))
    skipped = run_plan([spec], store, workers=0)
    assert (skipped.done, skipped.skipped_elsewhere) == (0, 1)
    assert "reclaim_running=true" in capsys.readouterr().err
    reclaimed = run_plan([spec], store, workers=0, reclaim_running=True)
    assert reclaimed.done == 1
    assert store.runs(run_ids=[spec.run_id])[0]["status"] == "done"
