"""`harness tune`: real Optuna studies on journal files, real smoke-budget runs on matrix games."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from harness import registry
from harness.cli import main
from harness.config import load_suite
from harness.errors import ConfigError
from harness.run.plan import plan
from harness.run.runner import execute_run
from harness.tune import (
    Objective,
    TuneOptions,
    fail_orphans,
    search_space,
    suite_space,
    tune,
    tuning_tasks,
)

POISON = ["B", "B"]  # the test composition of the suite below

MatrixBackend = registry.get_env("matrix")


@registry.register_env("poison_matrix")
class PoisonMatrix(MatrixBackend):  # type: ignore[misc, valid-type]
    """The matrix backend, except that building an environment with the test team raises."""

    def __init__(self, args: Any, compositions: list[Any], *rest: Any, **kwargs: Any) -> None:
        if any(list(c.types) == POISON for c in compositions):
            raise RuntimeError("poison: a test composition was built")
        super().__init__(args, compositions, *rest, **kwargs)


SUITE = """\
name: {name}
metric: return
seeds: 3
budget: smoke
budgets:
  smoke: {{env_steps: 64, eval_every: 32, eval_episodes: 2}}
algorithms: [vdn, me_qmix]
allow_imports: [plugins]  # tests/plugins.py: the misbehaving algorithms
workers: 0
store: sqlite:///{dir}/store.db
checkpoint_dir: {dir}/checkpoints
params:
  "*": {{attn_embed: 8, attn_heads: 1, rnn_hidden: 8, epsilon_anneal_steps: 50, target_update_episodes: 4,
         batch_size: 8, buffer_size: 64}}
{extra}
tasks:
  two_type:
    env: poison_matrix
    args: {{game: two_type}}
    num_envs: 8
    train: [{{types: [A, B]}}]
    validation: [{{types: [B, A]}}]
    test: [{{types: [B, B]}}]
"""


@pytest.fixture
def suite_file(tmp_path: Path):
    def make(name: str = "tiny", extra: str = "") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(SUITE.format(name=name, dir=tmp_path, extra=extra)))
        return path

    return make


def options(tmp_path: Path, trials: int, **kwargs: Any) -> TuneOptions:
    return TuneOptions(algorithm="vdn", trials=trials, storage=str(tmp_path / "tune.journal"),
                       seeds_per_trial=1, **kwargs)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


# --- search space ------------------------------------------------------------------------


def test_search_space_comes_from_the_config_declarations() -> None:
    space = search_space(registry.get_algorithm("me_qmix"))
    assert {"lr", "alpha_lr", "target_entropy_per_agent"} <= set(space)
    assert space["alpha_lr"] == {"low": 1e-3, "high": 1.0, "log": True, "int": False}
    assert space["target_entropy_per_agent"]["log"] is True
    assert space["epsilon_anneal_steps"]["int"] is True
    assert "batch_size" not in space  # not declared tunable


def test_search_space_overrides_and_pinned_fields() -> None:
    cls = registry.get_algorithm("me_qmix")
    space = search_space(cls, {"alpha_lr": [0.01, 0.5], "lr": None, "batch_size": {"low": 16, "high": 64}},
                         pinned=["epsilon_anneal_steps"])
    assert space["alpha_lr"] == {"low": 0.01, "high": 0.5, "log": True, "int": False}  # log kept from the field
    assert "lr" not in space and "epsilon_anneal_steps" not in space
    assert space["batch_size"] == {"low": 16, "high": 64, "log": False, "int": True}


@pytest.mark.parametrize(("override", "message"), [
    ({"alpah_lr": [0.1, 0.2]}, "tuning.me_qmix.alpah_lr: unknown parameter of me_qmix"),
    ({"lr": {"low": 1e-3, "high": 1e-4}}, "tuning.me_qmix.lr: expected low < high"),
    ({"target_entropy_per_agent": {"low": 0.0, "high": 1.0}}, "tuning.me_qmix.target_entropy_per_agent.low: a log-scale range needs low > 0"),
    ({"batch_size": [8, 64.5]}, "tuning.me_qmix.batch_size.high: expected an integer"),
    ({"td_lambda": True}, "expected {low, high, log}"),
    ({"optimiser": [0, 1]}, "only int and float fields can be tuned"),
    ({"transform_lr": [0.1]}, "expected [low, high]"),
    ({"lr": {"low": 1e-4, "hi": 1e-3}}, "tuning.me_qmix.lr.hi: expected low, high or log"),
])
def test_bad_search_space_overrides_are_rejected(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        search_space(registry.get_algorithm("me_qmix"), override, path=("tuning", "me_qmix"), file="s.yaml")
    assert message in str(info.value)
    if "alpah" in message:
        assert "did you mean 'alpha_lr'" in str(info.value)


def test_suite_tuning_table_edits_the_space_and_suite_params_pin_fields(suite_file) -> None:
    path = suite_file(extra="tuning:\n  vdn: {lr: [1.0e-4, 1.0e-3]}\n")
    suite = load_suite(str(path))
    space = suite_space(suite, "vdn")
    assert space == {"lr": {"low": 1e-4, "high": 1e-3, "log": True, "int": False}}  # epsilon pinned by params
    bad = load_suite(str(path), ["tuning.vdn.lr=[1,0]"])
    with pytest.raises(ConfigError, match=r"<command line>: tuning\.vdn\.lr: expected low < high"):
        suite_space(bad, "vdn")
    typo = load_suite(str(suite_file(name="typo", extra="tuning:\n  vnd: {lr: [1.0e-4, 1.0e-3]}\n")))
    with pytest.raises(ConfigError, match=r"typo\.yaml: tuning\.vnd: not one of the suite's algorithms"):
        suite_space(typo, "vdn")


@pytest.mark.parametrize(("extra", "message"), [
    ("tuning:\n  vdn: {lr: [1.0e-3, 1.0e-4]}\n", "tuning.vdn.lr: expected low < high"),
    ("tuning:\n  vnd: {lr: [1.0e-4, 1.0e-3]}\n", "tuning.vnd: not one of the suite's algorithms"),
])
def test_harness_validate_checks_the_tuning_table(suite_file, capsys, extra: str, message: str) -> None:
    assert main(["validate", f"suite={suite_file(extra=extra)}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    empty = suite_file(name="empty", extra="tuning:\n  vdn: {lr: null}\n")  # vdn's only tunable field dropped
    assert main(["validate", f"suite={empty}"]) == 2
    good = suite_file(name="good", extra="tuning:\n  vdn: {lr: [1.0e-4, 1.0e-2]}\n")
    assert main(["validate", f"suite={good}"]) == 0


# --- the test split ---------------------------------------------------------------------


def test_the_poison_works_harness_run_builds_the_test_composition(suite_file) -> None:
    suite = load_suite(str(suite_file()))
    spec = next(s for s in plan(suite) if s.algorithm == "vdn")
    result = execute_run(spec)
    assert result.status == "failed"
    assert "poison: a test composition was built" in (result.reason or "")


def test_tuning_never_touches_the_test_split(suite_file, tmp_path: Path) -> None:
    suite = load_suite(str(suite_file()))
    study = tune(suite, options(tmp_path, trials=2))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], [t.user_attrs for t in trials]
    for t in trials:
        assert t.user_attrs["split"] == "validation"
        assert t.user_attrs["splits"] == {"two_type": "validation"}
        assert set(t.params) == {"lr"}
    assert tuning_tasks(suite, "vdn")[0].splits.keys() == {"train", "validation", "test"}  # suite untouched


def test_a_task_without_validation_is_scored_on_train_and_still_never_on_test(suite_file, tmp_path: Path) -> None:
    suite = load_suite(str(suite_file()), ["tasks.two_type.validation=null"])
    assert set(suite.tasks[0].splits) == {"train", "test"}
    (trial,) = tune(suite, options(tmp_path, trials=1)).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["split"] == "train"


# --- resume, determinism, pruning, orphans -----------------------------------------------


def test_rerun_adds_only_the_missing_trials(suite_file, tmp_path: Path) -> None:
    suite = load_suite(str(suite_file()))
    first = [(t.number, t.params, t.value) for t in finished(tune(suite, options(tmp_path, trials=2)))]
    study = tune(suite, options(tmp_path, trials=3))
    again = [(t.number, t.params, t.value) for t in finished(study)]
    assert len(again) == 3
    assert again[:2] == first
    assert len(study.get_trials()) == 3
    assert finished(tune(suite, options(tmp_path, trials=3))) == finished(study)  # nothing left to do


def test_same_seed_samples_the_same_params(suite_file, tmp_path: Path) -> None:
    suite = load_suite(str(suite_file()))
    space = suite_space(suite, "vdn")
    assert set(space) == {"lr"}
    a = tune(suite, TuneOptions("vdn", trials=2, storage=str(tmp_path / "a.journal"), seeds_per_trial=1))
    b = tune(suite, TuneOptions("vdn", trials=2, storage=str(tmp_path / "b.journal"), seeds_per_trial=1))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    other = load_suite(str(suite_file()), ["seeds=[7, 8]"])
    c = tune(other, TuneOptions("vdn", trials=1, storage=str(tmp_path / "c.journal"), seeds_per_trial=1))
    assert c.trials[0].params != a.trials[0].params


def test_a_pruned_trial_stops_its_run_early_and_is_not_a_failure(suite_file, tmp_path: Path) -> None:
    suite = load_suite(str(suite_file()))
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9),
                                storage=optuna.storages.JournalStorage(
                                    optuna.storages.journal.JournalFileBackend(str(tmp_path / "p.journal"))))
    objective = Objective(suite, "vdn", suite_space(suite, "vdn"), [0, 1], tmp_path / "ck")
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # pruned at the first report: the second run never ran
    assert "run_scores" not in trial.user_attrs
    assert not (tmp_path / "ck" / "trial-0").exists()


def test_trials_left_running_by_a_dead_process_are_failed(suite_file, tmp_path: Path) -> None:
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "o.journal")))
    study = optuna.create_study(storage=storage, direction="maximize")
    orphan, remote = study.ask(), study.ask()
    orphan.set_user_attr("owner", {"host": socket.gethostname(), "pid": dead.pid})
    remote.set_user_attr("owner", {"host": "some-other-machine", "pid": dead.pid})
    assert fail_orphans(study) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {orphan.number: TrialState.FAIL, remote.number: TrialState.RUNNING}


# --- command line ------------------------------------------------------------------------


def test_cli_tunes_writes_best_params_and_shows_the_study(suite_file, tmp_path: Path, monkeypatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("harness.run.progress.EVERY_S", 0.0)  # a progress line at every round
    path = suite_file()
    args = ["tune", f"suite={path}", "algorithm=vdn", "trials=2", "seeds_per_trial=1"]
    assert main(args) == 0
    best = json.loads((tmp_path / "runs/tuning/tiny/vdn.json").read_text())
    assert best["study"] == "tiny:vdn:smoke" and best["split"] == "validation" and best["trials"] == 2
    assert set(best["params"]) == {"lr"} and best["budget"] == "smoke"
    assert (tmp_path / "runs/tuning/tiny.journal").exists()
    captured = capsys.readouterr()
    assert "trial 0: value" in captured.err and "trial 1: value" in captured.err
    assert "trial 1: 0/1 runs done, " in captured.err and " env steps/s" in captured.err
    assert main(["tune", "show", f"suite={path}", "algorithm=vdn"]) == 0
    shown = capsys.readouterr().out
    assert "study tiny:vdn:smoke: complete 2" in shown
    assert "best: trial" in shown and "importances: lr" in shown
    # Shown at another budget: the error names the study that exists and how to show it.
    assert main(["tune", "show", f"suite={path}", "algorithm=vdn", "budget=short"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no study 'tiny:vdn:short' in this storage; it holds tiny:vdn:smoke (budget=smoke, or study=tiny:vdn:smoke)" in err
    # A mistyped storage is refused by name, and nothing is created there.
    for storage in ("elsewhere/tiny.journal", f"sqlite:///{tmp_path}/none/tune.db"):
        assert main(["tune", "show", f"suite={path}", "algorithm=vdn", f"storage={storage}"]) == 2
        assert "no tuning storage at" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "none").exists()


def test_a_diverging_trial_fails_with_its_reason_and_tuning_reports_it(suite_file, tmp_path: Path, monkeypatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    path = suite_file()
    path.write_text(path.read_text().replace("algorithms: [vdn, me_qmix]", "algorithms: [vdn, 'plugins:ExplodingVDN']"))
    assert main(["tune", f"suite={path}", "algorithm=plugins:ExplodingVDN", "trials=1", "seeds_per_trial=1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "trial 0: failed: two_type/plugins:ExplodingVDN/seed0: non-finite loss" in err
    assert "1 trial(s) missing" in err and "Traceback" not in err
    assert not (tmp_path / "runs/tuning/tiny").exists()  # no complete trial, no best params


@pytest.mark.parametrize(("extra", "message"), [
    (["algorithm=qmxi"], "algorithm: not one of the suite's algorithms (vdn, me_qmix), found 'qmxi'"),
    (["algorithm=vdn", "trials=0"], "trials: expected a positive integer, found 0"),
    ([], "algorithm: missing"),
    (["algorithm=vdn", "storage=nowhere"], "storage: expected a path ending in .journal or a database URL"),
])
def test_cli_rejects_bad_input_without_a_traceback(suite_file, tmp_path: Path, monkeypatch, extra: list[str],
                                                   message: str, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tune", f"suite={suite_file()}", *extra]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_two_processes_on_one_journal_study_lose_no_trial(tmp_path: Path) -> None:
    """Two `harness tune` processes share a journal study: together they finish the study's
    trials=6, every trial ends complete or pruned, both contribute, and (thanks to distinct
    `worker=` indices) they do not start from the same parameters."""
    journal = tmp_path / "shared.journal"
    command = [sys.executable, "-m", "harness", "tune", "suite=matrix_games", "algorithm=vdn", "trials=6",
               "seeds_per_trial=1", "budget=smoke", "tasks=[identity]", f"storage={journal}",
               f"store=sqlite:///{tmp_path / 'store.db'}", f"checkpoint_dir={tmp_path / 'ck'}"]
    procs = [subprocess.Popen([*command, f"worker={k}"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="matrix_games:vdn:smoke", storage=storage)
    states = [t.state for t in study.trials]
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), states
    assert len(states) >= 6  # each process stops once 6 are finished; one may be finishing its last
    owner = {t.number: json.dumps(t.user_attrs["owner"], sort_keys=True) for t in study.trials}
    assert len(set(owner.values())) == 2, owner
    first = {o: next(t.params for t in study.trials if owner[t.number] == o) for o in set(owner.values())}
    assert len({json.dumps(p, sort_keys=True) for p in first.values()}) == 2


# --- params=tuned --------------------------------------------------------------------------


def _record(tmp_path: Path, suite: str, algorithm: str, params: dict, trials: int = 4) -> Path:
    path = tmp_path / "runs" / "tuning" / suite / f"{algorithm}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"suite": suite, "algorithm": algorithm, "study": "s", "budget": "smoke",
                                "params": params, "value": 1.0, "trials": trials, "seeds_per_trial": 1,
                                "split": "validation"}))
    return path


def test_params_tuned_lays_the_best_params_over_the_suite_and_flags_the_untuned(
        suite_file, tmp_path: Path, monkeypatch) -> None:
    from harness.report.model import tuning_protocol

    monkeypatch.chdir(tmp_path)  # records live under ./runs/tuning, like the store
    path = suite_file()
    default = load_suite(str(path))
    _record(tmp_path, default.name, "vdn", {"lr": 0.00123})
    tuned = load_suite(str(path), ["params=tuned"])
    assert tuned.tasks[0].params["vdn"]["lr"] == 0.00123
    assert tuned.tasks[0].params["vdn"]["batch_size"] == default.tasks[0].params["vdn"]["batch_size"]
    assert tuned.tasks[0].params["me_qmix"] == default.tasks[0].params["me_qmix"]  # no record: unchanged
    ids = {(s.algorithm, s.seed): s.run_id for s in plan(default)}
    tuned_ids = {(s.algorithm, s.seed): s.run_id for s in plan(tuned)}
    assert all(tuned_ids[k] != ids[k] for k in ids if k[0] == "vdn")  # tuned runs never mix with default ones
    assert all(tuned_ids[k] == ids[k] for k in ids if k[0] == "me_qmix")
    protocol = tuning_protocol(tuned)
    assert protocol["vdn"].startswith("tuned: 4 trials x 1 seeds at budget smoke")
    assert "UNTUNED" in protocol["me_qmix"]
    assert tuning_protocol(default) == {"vdn": "not tuned: suite parameters", "me_qmix": "not tuned: suite parameters"}
    bare = dataclasses.replace(default, tasks=[dataclasses.replace(t, params={"vdn": {}}) for t in default.tasks])
    assert tuning_protocol(bare) == {"vdn": "not tuned: algorithm defaults", "me_qmix": "not tuned: algorithm defaults"}
    _record(tmp_path, default.name, "me_qmix", {"lr": 0.002}, trials=9)
    assert all("UNEQUAL" in v for v in tuning_protocol(load_suite(str(path), ["params=tuned"])).values())


def test_a_tuning_record_with_an_unknown_parameter_is_a_clear_error(suite_file, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = suite_file()
    _record(tmp_path, load_suite(str(path)).name, "vdn", {"learning_rate": 0.1})
    with pytest.raises(ConfigError) as err:
        load_suite(str(path), ["params=tuned"])
    message = str(err.value)
    assert "runs/tuning/tiny/vdn.json" in message and "params.learning_rate: not a parameter of vdn" in message
