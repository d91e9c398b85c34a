"""Small helpers shared by the end-to-end test modules (runs, Ray, shared stores)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.config import load_suite
from harness.run.plan import RunSpec, plan
from harness.run.store import Store


def eval_values(rows: list[dict]) -> list[tuple]:
    return [(r["kind"], r["env_steps"], r["split"], r["composition"], r["metric"], r["value"]) for r in rows]


def spec_for(suite_path: Path, task: str, algorithm: str, seed: int = 0, checkpoint_dir: Path | None = None,
             overrides: list[str] | None = None) -> RunSpec:
    suite = load_suite(str(suite_path), overrides or [])
    spec = next(s for s in plan(suite) if s.task == task and s.algorithm == algorithm and s.seed == seed)
    if checkpoint_dir is not None:
        spec = type(spec)(**{**spec.to_dict(), "checkpoint_dir": str(checkpoint_dir)})
    return spec


def evals_by_run(suite: Any, store: Store) -> dict[tuple[str, str, int], list[tuple]]:
    """(task, algorithm, seed) -> evaluation rows: comparable across suites of other names."""
    return {(s.task, s.algorithm, s.seed): eval_values(store.evals([s.run_id])) for s in plan(suite)}


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    """A new, empty results store: an SQLite file, or a database on the session's PostgreSQL
    server (the `postgres` fixture, which skips where the server is not installed)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / name}.db"
    return request.getfixturevalue("postgres")(name)


def eval_keys(store: Store, run_ids: list[str]) -> list[tuple]:
    return [(r["run_id"], r["kind"], r["env_steps"], r["split"], r["composition"], r["metric"])
            for r in store.evals(run_ids)]


# A small valid suite file: the starting point of the bad-input tests.
GOOD_SUITE = """\
metric: return
seeds: 2
budget: {env_steps: 100, eval_every: 50, eval_episodes: 2}
algorithms: [vdn]
tasks:
  game:
    env: matrix
    args: {game: nonmonotonic_3x3}
"""


def write_suite(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`harness ARGV` in this process: its exit code and everything it printed."""
    from harness.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err
