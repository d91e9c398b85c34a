"""The command line as a user meets it: listings, estimates and progress output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import registry
from harness.api import config_fields, tunable
from harness.cli import _first_sentence, main


def test_list_suites_prints_bracketed_text_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "suites"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    assert "tasks=[spread_pymarl] workers=1" in listed and "tasks=[smax_3m]" in listed


def test_list_algorithms_gives_whole_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "algorithms"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    for name in registry.algorithm_names():
        sentence = _first_sentence(registry.get_algorithm(name).__doc__ or "")
        assert f"{name} {sentence}" in listed
        assert sentence.endswith((".", ")", "!", "?")), (name, sentence)


@pytest.mark.parametrize(("doc", "first"), [
    ("Short one.", "Short one."),
    ("Wraps over\n    two lines: e.g. here. Then more.", "Wraps over two lines: e.g. here."),
    ("Ends a paragraph\n\nNext paragraph.", "Ends a paragraph"),
    ("Q_tot = sum_i q_i.", "Q_tot = sum_i q_i."),
])
def test_first_sentence(doc: str, first: str) -> None:
    assert _first_sentence(doc) == first


def test_a_scaffolded_plugin_passes_its_test_without_pytest(tmp_path, capsys) -> None:
    """`harness new algorithm` writes a plugin and a test that runs as a plain script (the
    quickstart's `.[all]` has no pytest); the plugin is found by name with no other file touched."""
    import os
    import subprocess
    import sys

    import algorithms

    name = f"scaffold_probe_{os.getpid()}"
    module = Path(algorithms.__path__[0]) / f"{name}.py"
    try:
        assert main(["new", "algorithm", name, f"tests={tmp_path}"]) == 0
        printed = capsys.readouterr().out
        test = tmp_path / f"test_algo_{name}.py"
        assert f"test it: python {test}" in printed
        env = {**os.environ, "PYTHONPATH": str(module.parents[1])}
        # As without pytest installed: importing it fails in the child.
        no_pytest = f"import sys, runpy; sys.modules['pytest'] = None; runpy.run_path({str(test)!r}, run_name='__main__')"
        proc = subprocess.run([sys.executable, "-c", no_pytest],
                              capture_output=True, text=True, timeout=600, env=env,
                              cwd=tmp_path)  # not the checkout, whose folders would shadow the installed package
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"{name} keeps the plugin contract" in proc.stdout
    finally:
        module.unlink(missing_ok=True)


@dataclass
class _BaseArgs:
    lr: float = tunable(1e-3, 1e-4, 1e-2, log=True)
    """Step size."""
    width: int = 8
    """Hidden units."""
    plain: bool = False


@dataclass
class _ChildArgs(_BaseArgs):
    width: int = 16  # redeclared without a docstring: the base's stays
    depth: int = 2
    """Layers."""


def test_config_fields_read_attribute_docstrings_in_order_and_inherit_them() -> None:
    fields = {f.name: f for f in config_fields(_ChildArgs)}
    assert list(fields) == ["lr", "width", "plain", "depth"]
    assert (fields["lr"].doc, fields["lr"].tune, fields["lr"].default) == ("Step size.", {"low": 1e-4, "high": 1e-2,
                                                                                          "log": True}, 1e-3)
    assert (fields["width"].doc, fields["width"].default, fields["width"].owner) == ("Hidden units.", 16, "_ChildArgs")
    assert fields["plain"].doc == "" and fields["depth"].doc == "Layers." and fields["depth"].type == "int"


def test_show_algorithm_prints_every_field_with_default_range_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    assert main(["show", "algorithm=qmix"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("qmix: ") and "params.qmix.FIELD=VALUE" in printed
    assert "lr: float = 0.0005  [tune 0.0001 .. 0.003, log scale]\n    Learning rate" in printed
    for f in dataclasses.fields(registry.get_algorithm("qmix").Config):
        assert f"\n{f.name}: " in printed
    assert "(undocumented)" not in printed  # every QMIX field says what it is
    assert main(["show", "algorithm=qmx"]) == 2
    assert "did you mean 'qmix'" in capsys.readouterr().err


def test_show_estimates_time_before_any_run_and_says_how(tmp_path, monkeypatch, capsys) -> None:
    """No store yet: a few seconds of training per (task, algorithm) give the estimate, which
    says it came from a calibration; the calibration is cached (the second show trains nothing);
    calibrate=false leaves it unknown and says how to get one."""
    from harness.run import estimate

    monkeypatch.chdir(tmp_path)
    base = ["show", "suite=matrix_games", "tasks=[identity]", "algorithms=[vdn]", "seeds=[0,1]"]
    assert main(base) == 0
    captured = capsys.readouterr()
    assert "calibrating identity/vdn" in captured.err
    assert "run(s) from calibration)" in captured.out and "2 run(s)" in captured.out
    assert not (tmp_path / "runs" / "matrix_games.db").exists()  # show creates no store
    calls: list[object] = []
    monkeypatch.setattr(estimate, "calibrate", lambda spec, *a, **k: calls.append(spec))
    assert main(base) == 0
    assert calls == [] and "from calibration" in capsys.readouterr().out
    assert main([*base[:2], "tasks=[climbing]", "calibrate=false"]) == 0
    assert "estimated time: unknown" in capsys.readouterr().out and calls == []


def test_show_and_threads_with_workers_0(tmp_path, monkeypatch, capsys) -> None:
    """workers: 0 runs in this process, one run at a time: every core for it (show used to divide
    by zero there)."""
    from harness.run.local import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_threads(0) == worker_threads(1) == max(1, os.cpu_count() or 1)
    monkeypatch.chdir(tmp_path)
    assert main(["show", "suite=matrix_games", "tasks=[identity]", "algorithms=[vdn]", "workers=0",
                 "calibrate=false"]) == 0
    assert "estimated time: unknown" in capsys.readouterr().out


def test_a_calibration_turns_into_run_seconds_by_its_budget() -> None:
    from harness.run.estimate import Calibration

    c = Calibration(fixed_s=2.0, steps_per_s=100.0, eval_s=0.5)
    # 1000 steps / 100 per s, 1000 // 250 + 1 = 5 curve evaluations, 40 / 8 = 5 absolute ones.
    assert c.run_seconds({"env_steps": 1000, "eval_every": 250, "eval_episodes": 8, "absolute_episodes": 40}) == \
        pytest.approx(2.0 + 10.0 + 0.5 * 10)


def test_heartbeat_lines_are_periodic_and_count_only_trained_steps() -> None:
    from harness.run.progress import Heartbeat

    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat("progress", total_runs=4, total_steps=4000, emit=lines.append, every=60, clock=lambda: now[0])
    beat.tick(1, 1000, 0)  # a run found done: nothing trained, and too early for a line
    now[0] = 30.0
    beat.tick(1, 1500, 500)
    assert lines == []
    now[0] = 100.0
    beat.tick(1, 2000, 1000)  # 1000 trained in 100 s: 10 steps/s, 2000 left
    assert lines == ["progress: 1/4 runs done, 2,000/4,000 env steps, 10 env steps/s, about 3 min left"]
    now[0] = 120.0
    beat.tick(2, 2200, 1200)
    assert len(lines) == 1  # the next line comes 60 s after the last


def test_run_prints_plain_progress_lines_when_output_is_not_a_terminal(tmp_path, monkeypatch) -> None:
    """Piped or redirected, `harness run` shows runs done, env steps/s and time left."""
    import os
    import subprocess
    import sys

    import harness

    env = {**os.environ, "HARNESS_PROGRESS_EVERY": "0.5", "PYTHONPATH": str(Path(harness.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "suite=matrix_games", "tasks=[identity]", "algorithms=[vdn]",
         "seeds=[0]", "budget=smoke", "workers=0", f"store=sqlite:///{tmp_path / 'r.db'}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "progress: 0/1 runs done," in proc.stderr and "env steps/s" in proc.stderr
