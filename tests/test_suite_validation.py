"""Bad input exits 2 with a message naming the file, line and key; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import GOOD_SUITE as GOOD
from helpers import run_cli
from helpers import write_suite as write

from harness.config import load_suite
from harness.errors import ConfigError


def test_good_suite_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(capsys, "validate", f"suite={write(tmp_path, GOOD)}")
    assert code == 0, text
    assert "2 runs" in text


BAD_CASES = {
    "yaml_syntax": (GOOD.replace("seeds: 2", "seeds: [2"), ["YAML syntax error", ":3"]),
    "unknown_key": (GOOD.replace("seeds: 2", "seedz: 2"), ["seedz", "did you mean 'seeds'", ":2"]),
    "unknown_task_key": (GOOD.replace("env: matrix", "envv: matrix"), ["tasks.game.envv", "did you mean 'env'"]),
    "unknown_algorithm": (GOOD.replace("[vdn]", "[vdn, qmixx]"), ["algorithms[1]", "did you mean 'qmix'", ":4"]),
    "negative_budget": (GOOD.replace("env_steps: 100", "env_steps: -100"), ["budget.env_steps", "greater than 0", "-100"]),
    "payoff_shape": (
        GOOD.replace("{game: nonmonotonic_3x3}", "{payoff: [[1, 2, 3], [4, 5, 6]]}"),
        ["tasks.game.args.payoff", "shape (2, 3)", ":8"],
    ),
    "overlapping_splits": (
        GOOD.replace("{game: nonmonotonic_3x3}", "{game: two_type}")
        + "    train: [{types: [A, B]}]\n    test: [{types: [B, B]}, {types: [A, B]}]\n",
        ["tasks.game.test[1]", "disjoint"],
    ),
    "unknown_unit_type": (
        GOOD.replace("{game: nonmonotonic_3x3}", "{game: two_type}") + "    train: [{types: [A, C]}]\n",
        ["tasks.game.train[0].types", "unknown unit type", "'C'"],
    ),
    "unknown_param": (GOOD + "params: {vdn: {learning_rat: 0.1}}\n", ["params.vdn.learning_rat", "unknown parameter"]),
    "unknown_param_for_all": (GOOD + "params: {'*': {epsilon_aneal_steps: 10}}\n",
                              ["params.*.epsilon_aneal_steps", "did you mean 'epsilon_anneal_steps'"]),
    "params_for_unknown_algorithm": (GOOD + "params: {qmixx: {lr: 0.1}}\n", ["params.qmixx", "did you mean 'qmix'"]),
    "wrong_param_type": (GOOD + "params: {vdn: {batch_size: lots}}\n", ["params.vdn.batch_size", "integer", "'lots'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_suite_exits_2_naming_file_and_key(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BAD_CASES[case]
    path = write(tmp_path, text)
    code, output = run_cli(capsys, "validate", f"suite={path}")
    assert code == 2
    assert str(path) in output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("budget=shrot", ["budget", "did you mean 'short'"]),
        ("seeds=-1", ["seeds"]),
        ("algorithms=[vdm]", ["algorithms[0]", "did you mean 'vdn'"]),
        ("bugdet=smoke", ["bugdet", "did you mean 'budget'"]),
        ("tasks=[nope]", ["unknown task"]),
    ],
)
def test_bad_override_names_the_command_line(override: str, expected: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(capsys, "validate", f"suite={write(tmp_path, GOOD)}", override)
    assert code == 2
    assert "<command line>" in output
    for fragment in expected:
        assert fragment in output, output


def test_unknown_suite_name_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(capsys, "show", "suite=matrix_game")
    assert code == 2 and "did you mean 'matrix_games'" in output


def test_several_problems_reported_with_paths(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("seeds: 2", "seeds: 2\nworkerz: 1\nmetric2: x"))
    with pytest.raises(ConfigError) as info:
        load_suite(str(path))
    paths = {p.path for p in info.value.problems}
    assert {("workerz",), ("metric2",)} <= paths


def test_overrides_reach_nested_keys(tmp_path: Path) -> None:
    suite = load_suite(str(write(tmp_path, GOOD)), ["tasks.game.num_envs=3", "params.vdn.lr=0.01", "seeds=[4, 7]"])
    assert suite.tasks[0].num_envs == 3
    assert suite.tasks[0].params["vdn"]["lr"] == 0.01
    assert suite.seeds == [4, 7]


def test_cli_prints_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("env_steps: 100", "env_steps: -1"))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", f"suite={path}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "budget.env_steps" in proc.stderr
