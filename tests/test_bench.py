"""`harness bench` end to end on the matrix figure (the fastest), and the measuring machinery."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import bench
from harness.api import Loop
from harness.cli import main
from scenarios.matrix import MatrixBackend

QUICK = ["seconds=0.2", "rounds=1"]


@pytest.fixture(scope="module")
def matrix_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("bench") / "matrix.json"
    assert main(["bench", "only=matrix", *QUICK, f"save={path}"]) == 0
    return json.loads(path.read_text())


def test_bench_writes_the_figure_with_its_rates_ratio_and_machine(matrix_results: dict[str, Any]) -> None:
    assert matrix_results["format"] == bench.FORMAT
    assert matrix_results["settings"] == {"seconds": 0.2, "rounds": 1, "threads": 1, "device": "cpu"}
    assert matrix_results["skipped"] == {}
    assert {"cpu_count", "usable_cpus", "torch_threads", "versions"} <= set(matrix_results["machine"])
    assert matrix_results["machine"]["torch_threads"] == 1
    assert {"torch", "numpy", "harness"} <= set(matrix_results["machine"]["versions"])
    (figure,) = matrix_results["figures"].values()
    assert figure["name"] == "rollout/matrix" and figure["batch"] == 32
    assert figure["raw_loop"] == "numpy payoff lookup"
    assert figure["harness_steps_per_s"] > 0 and figure["raw_steps_per_s"] > 0
    assert figure["ratio"] == pytest.approx(figure["harness_steps_per_s"] / figure["raw_steps_per_s"])


def test_bench_prints_the_table_and_saves_under_runs_bench_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "only=[rollout/matrix]", *QUICK]) == 0
    captured = capsys.readouterr()
    for column in ("name", "batch", "harness steps/s", "raw steps/s", "ratio", "rollout/matrix"):
        assert column in captured.out
    (saved,) = (tmp_path / "runs" / "bench").glob("*.json")
    assert f"wrote {Path('runs') / 'bench' / saved.name}" in captured.err
    assert list(json.loads(saved.read_text())["figures"]) == ["rollout/matrix"]


def test_compare_prints_new_over_old_for_each_figure(
    matrix_results: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = json.loads(json.dumps(matrix_results))
    figure = old["figures"]["rollout/matrix"]
    figure["ratio"] /= 2
    figure["harness_steps_per_s"] /= 4
    old["figures"]["train/qmix"] = {**figure, "name": "train/qmix"}  # a figure the new file lacks
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(matrix_results))
    capsys.readouterr()
    assert main(["bench", f"compare={tmp_path / 'old.json'}", f"new={tmp_path / 'new.json'}"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if "/" in line and "│" in line}
    assert "2.000" in rows["rollout/matrix"] and "4.000" in rows["rollout/matrix"]
    assert rows["train/qmix"].count(" - ") >= 2  # only in the old file: nothing to divide


def test_compare_while_measuring_reads_the_old_file_first(
    matrix_results: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", f"compare={tmp_path / 'missing.json'}", "only=matrix", *QUICK]) == 2
    assert "cannot read a harness bench JSON file" in capsys.readouterr().err
    (tmp_path / "old.json").write_text(json.dumps(matrix_results))
    assert main(["bench", f"compare={tmp_path / 'old.json'}", "only=matrix", *QUICK,
                 f"save={tmp_path / 'new.json'}"]) == 0
    assert "ratio new/old" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["only=qmixx"], "did you mean 'qmix'?"),
        (["only=matrix,nosuch"], "unknown benchmark; expected a backend (matrix, mpe_spread"),
        (["seconds=0"], "seconds: expected a positive number"),
        (["rounds=2.5"], "rounds: expected a positive integer"),
        (["colour=red"], "colour: unknown option; expected one of only, seconds"),
        (["new=b.json"], "compare: missing"),
        (["device=tpu"], "device: expected cpu, cuda or auto"),
        (["compare=a.json", "new=b.json", "only=matrix"], "only: new=NEW.json compares two saved files"),
    ],
)
def test_bad_input_is_a_clear_error_without_traceback(
    tokens: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *tokens]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_figure_whose_package_is_missing_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(MatrixBackend, "missing_requirements", classmethod(lambda cls, args: "needs a unicorn"))
    assert main(["bench", "only=matrix", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "rollout/matrix skipped: needs a unicorn" in err and "nothing to measure" in err


def test_names_select_figures_in_table_order() -> None:
    assert bench.select(["qmix"])[0] == ["act/qmix", "train/qmix"]
    assert bench.select(["train/qmix", "matrix"])[0] == ["rollout/matrix", "train/qmix"]
    spread = bench.select(["mpe_spread"])[0]
    assert spread == ["rollout/mpe_spread", "rollout/mpe_spread@mpe2"] or not spread  # mpe2 missing: both skipped
    smax = bench.select(["smax"])[0]
    assert smax == ["rollout/smax", "rollout/smax_3m"] or not smax  # jaxmarl missing: both skipped


@pytest.mark.parametrize(("continuous", "counted"), [(False, [4] * 8), (True, [4, 4, 4, 0, 4, 4, 4, 0])])
def test_rollout_loops_count_only_steps_of_running_episodes(continuous: bool, counted: list[int]) -> None:
    """3-step episodes in 4 envs: synchronous, the batch resets once all are over; continuous,
    each env spends a step on its restart (inside `step`), which is not an env step."""
    env = bench.Task("matrix", {"game": "climbing", "episode_length": 3}, None, 4).build()
    loop = bench.RandomPolicyLoop(env, continuous=continuous)
    assert env.autoreset == continuous
    assert [loop.advance() for _ in range(8)] == counted


def test_the_smax_3m_figure_plays_jaxmarls_3m_on_both_sides() -> None:
    figure = bench.FIGURES["rollout/smax_3m"]
    if figure.missing():
        pytest.skip(figure.missing())
    assert figure.continuous and "3m" in figure.raw_loop.what and "continuous" in figure.label()
    from scenarios.smax import JittedSmaxLoop

    raw = figure.raw_loop.build(*figure.task.parsed()[1:], 4)
    assert isinstance(raw, JittedSmaxLoop)
    units = raw.states.state  # JaxMARL's own reset on map 3m: 3 v 3 marines
    assert np.asarray(units.unit_types).tolist() == [[0] * 6] * 4
    assert np.asarray(units.unit_alive).all()


class Sleeper(Loop):
    """A loop whose unit of work is a sleep: known rates to check the timing against."""

    def __init__(self, pause: float, steps: int) -> None:
        self.pause, self.steps, self.calls = pause, steps, {"warm_up": 0, "settle": 0}

    def advance(self) -> int:
        time.sleep(self.pause)
        return self.steps

    def warm_up(self) -> None:
        self.calls["warm_up"] += 1

    def settle(self) -> None:
        self.calls["settle"] += 1


def test_interleaved_rates_count_the_steps_each_loop_reports_per_second() -> None:
    fast, slow = Sleeper(0.002, 8), Sleeper(0.002, 2)
    rates = bench.interleaved_rates({"fast": fast, "slow": slow}, seconds=0.4, rounds=2)
    assert 800 < rates["fast"] <= 4000  # 8 steps per >= 2 ms (sleeps overshoot on a busy machine)
    assert 2.5 < rates["fast"] / rates["slow"] < 6  # the same pauses: the ratio of steps, 4
    assert fast.calls == slow.calls == {"warm_up": 1, "settle": 2}


def test_torch_threads_are_set_for_the_measurement_and_restored() -> None:
    import torch

    before = torch.get_num_threads()
    with bench.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("algorithm", list(bench.FAMILIES))
def test_training_figures_time_a_learner_that_already_updates(algorithm: str) -> None:
    figure = bench.FIGURES[f"train/{algorithm}"]
    if figure.missing():
        pytest.skip(figure.missing())
    loops = figure.sides()
    try:
        loops["harness"].warm_up()
        assert loops["harness"].algorithm.grad_steps > 0  # type: ignore[attr-defined]
    finally:
        for loop in loops.values():
            loop.close()


def test_device_cuda_without_a_gpu_is_refused_before_measuring(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "only=matrix", "device=cuda", *QUICK]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_smax_training_figures_size_the_learner_for_the_test_teams() -> None:
    """train/<alg>@protoss16 trains on the 3-5 unit teams with a network sized for 8 units, as a
    zero_shot_smacv2 run does (smaller teams' actions padded)."""
    figure = bench.FIGURES["train/qmix@protoss16"]
    if figure.missing():
        pytest.skip(figure.missing())
    assert figure.name == "train/qmix@protoss16" and "zero_shot_smacv2" in figure.tags
    assert bench.select(["qmix"])[0] == ["act/qmix", "train/qmix"]  # the SMAX figures are selected by task
    spec = figure.task.spec()
    assert (spec.max_agents, spec.n_actions) == (8, 13)
    assert [c.allies for c in figure.task.played()] == [3, 4, 5]
    assert "sized for 8 agents" in figure.label()


def test_the_whole_run_figure_times_two_runs_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """run/qmix@protoss: two real runs of zero_shot_smacv2's protoss task, the second reusing the
    first's compiled programs; its rate is the second run's env steps over its wall time."""
    figure = bench.FIGURES["run/qmix@protoss"]
    if figure.missing():
        pytest.skip(figure.missing())
    monkeypatch.setattr(bench, "RUN_BUDGET", {"env_steps": 600, "eval_every": 600, "eval_episodes": 2,
                                              "absolute_episodes": 2})
    result = bench.measure("run/qmix@protoss", seconds=0.2, rounds=1)
    assert result["env_steps"] >= 600 and result["harness_steps_per_s"] == pytest.approx(
        result["env_steps"] / result["run_seconds"])
    assert 0 < result["to_first_update_s"] < result["run_seconds"]
    assert set(result["shares"]) == {"setup", "rollout", "update", "evaluation", "checkpoint"}
    assert 0.5 < sum(result["shares"].values()) <= 1.0
