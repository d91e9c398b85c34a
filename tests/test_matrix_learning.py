"""The built-in matrix_games suite reproduces the known results of value factorisation.

Identity game: every method coordinates. ME-IGM's 3x3 game and the climbing game: VDN and
QMIX cannot represent the optimum's payoff structure and settle on a safe joint action.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_suite
from harness.report.model import collect
from harness.run.coordinator import run_plan
from harness.run.plan import plan
from harness.run.store import Store


def run_suite(tmp_path: Path, overrides: list[str]) -> dict:
    suite = load_suite("matrix_games", [f"store=sqlite:///{tmp_path}/store.db",
                                        f"checkpoint_dir={tmp_path}/ckpt", *overrides])
    summary = run_plan(plan(suite), Store(suite.store), workers=suite.workers)
    assert summary.exit_code == 0
    return collect(suite, Store(suite.store))


def optimal_runs(report: dict, task: str, algorithm: str) -> int:
    """Runs whose final greedy joint action was optimal (win rate 1 on a deterministic game)."""
    return sum(r["final"]["train"]["win_rate"] == 1.0 for r in report["runs"]
               if r["task"] == task and r["algorithm"] == algorithm)


def test_known_results_one_seed(tmp_path: Path) -> None:
    report = run_suite(tmp_path, ["seeds=[0]", "workers=0", "tasks=[identity, nonmonotonic_3x3]", "algorithms=[iql, vdn, qmix]"])
    for algorithm in ("iql", "vdn", "qmix"):
        assert optimal_runs(report, "identity", algorithm) == 1
    for algorithm in ("vdn", "qmix"):
        assert optimal_runs(report, "nonmonotonic_3x3", algorithm) == 0
        final = next(r for r in report["runs"] if r["task"] == "nonmonotonic_3x3" and r["algorithm"] == algorithm)
        assert final["final"]["train"]["return"] == 0.0  # a B/C pair, as ME-IGM reports for QMIX


@pytest.mark.slow
def test_known_results_five_seeds(tmp_path: Path) -> None:
    report = run_suite(tmp_path, ["tasks=[identity, nonmonotonic_3x3, climbing]", "algorithms=[iql, vdn, qmix]"])
    for algorithm in ("iql", "vdn", "qmix"):
        assert optimal_runs(report, "identity", algorithm) >= 4
    for task in ("nonmonotonic_3x3", "climbing"):
        for algorithm in ("vdn", "qmix"):
            assert optimal_runs(report, task, algorithm) <= 2, (task, algorithm)
