"""`harness tune`: fair Optuna tuning of an algorithm's declared hyperparameters.

Fairness rules this module enforces:

- Every trial trains the algorithm on every task of the suite it runs on, for the first
  `seeds_per_trial` of the suite's seeds, under the suite's budget: each algorithm gets the
  same tuning budget when called with the same `trials=`.
- The test split is removed from each task before its runs are built, so test compositions
  are never constructed, let alone scored. The objective is the suite metric on the
  validation compositions at the last evaluation of each run, averaged over runs; a task
  without a validation split (the matrix games) is scored on its train compositions, and the
  trial's user attributes say which split each task used.

Search space: every `tunable(...)` field of the algorithm's Config, except fields the suite's
`params` pin for that algorithm (the suite author chose them, e.g. an exploration schedule
sized to the task). The suite's top-level `tuning:` table edits the space:
`tuning: {ALGORITHM: {FIELD: {low, high, log} | [low, high] | null}}` (null drops a field; a
pinned or undeclared numeric Config field may be added with explicit low and high). The same
keys work on the command line: `tuning.me_qmix.lr=[1e-4,1e-3]`.

Pruning: the runs of a trial execute one after another in a fixed order (seed, then task).
After each evaluation (except the one at env step 0) the trial reports the mean of the
finished runs' scores and the current run's current score, at step = run index x stride +
evaluation index, so every trial reports the same steps and the pruner compares like with
like. A pruned run stops at its next rollout boundary through the runner's `should_stop`.

Storage: Optuna's journal file (`runs/tuning/<suite>.journal`) by default, safe for several
processes on one machine; any SQLAlchemy URL (postgresql://..., sqlite:///...) for several
machines. `trials=N` means N finished (complete or pruned) trials in the study in total, so
rerunning an interrupted command runs only the missing ones.

Trials left RUNNING by a killed process: journal storage has no heartbeat in Optuna, so each
trial records its owner (host, pid). At startup, a RUNNING trial owned by this host whose
process is gone (or is this very process, which has not started a trial yet) is marked
FAILED. RUNNING trials of other hosts are left alone; RDB storages get Optuna's heartbeat,
which fails them once they stop beating.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import threading
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness import registry
from harness.api import tunable_fields
from harness.config import COMMAND_LINE, TUNING_DIR, Suite, Task, tuned_params_path
from harness.errors import ConfigError, HarnessError
from harness.run import ray_tasks
from harness.run.plan import RunSpec, stable_hash
from harness.run.progress import Heartbeat

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 60  # RDB storages: a trial silent for GRACE_S is failed by Optuna
GRACE_S = 180


class TuningInterrupted(HarnessError):
    """Ctrl-C during a trial: the trial is failed and a rerun replaces it."""

    exit_code = 130


class TrialRunFailed(Exception):
    """One run of a trial failed (diverged, crashed): the trial fails, tuning goes on."""


@dataclass
class TuneOptions:
    algorithm: str
    trials: int = 10
    study: str | None = None
    storage: str | None = None
    seeds_per_trial: int = 3
    n_jobs: int | None = None  # trials at once: 1 locally; with executor=ray, what the cluster holds
    worker: int = 0  # distinct per process sharing one study, so their samplers differ


# ---------------------------------------------------------------------------------------------
# Search space


def _number_kind(config_cls: type, name: str) -> type | None:
    """int or float for a numeric Config field, None otherwise (bools are not searched)."""
    hint = typing.get_type_hints(config_cls).get(name)
    if hint in (int, float):
        return hint
    return None


def _bound(value: Any, kind: type, path: tuple[Any, ...], file: str | None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError.single(path, f"expected {expected}", found=value, file=file)
    return int(value) if kind is int else float(value)


def _range(config_cls: type, name: str, declared: dict[str, Any] | None, override: Any,
           path: tuple[Any, ...], file: str | None) -> dict[str, Any]:
    """One field's {low, high, log} from its declaration and an optional override."""
    kind = _number_kind(config_cls, name)
    if kind is None:
        raise ConfigError.single(path, "only int and float fields can be tuned", found=name, file=file)
    spec = dict(declared or {})
    if isinstance(override, list):
        if len(override) != 2:
            raise ConfigError.single(path, "expected [low, high]", found=override, file=file)
        spec.update(low=override[0], high=override[1])
    elif isinstance(override, dict):
        unknown = set(override) - {"low", "high", "log"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError.single(path + (key,), "expected low, high or log", found=key,
                                     choices=("low", "high", "log"), file=file)
        spec.update(override)
    elif override is not None:
        raise ConfigError.single(path, "expected {low, high, log}, [low, high] or null", found=override, file=file)
    if "low" not in spec or "high" not in spec:
        raise ConfigError.single(path, "not declared tunable by the algorithm: give both low and high", file=file)
    low, high = _bound(spec["low"], kind, path + ("low",), file), _bound(spec["high"], kind, path + ("high",), file)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError.single(path + ("log",), "expected true or false", found=log, file=file)
    if low >= high:
        raise ConfigError.single(path, f"expected low < high, found low={low}, high={high}", file=file)
    if log and low <= 0:
        raise ConfigError.single(path + ("low",), "a log-scale range needs low > 0", found=low, file=file)
    return {"low": low, "high": high, "log": log, "int": kind is int}


def search_space(algorithm_cls: Any, overrides: dict[str, Any] | None = None, pinned: Iterable[str] = (),
                 path: tuple[Any, ...] = ("tuning",), file: str | None = None) -> dict[str, dict[str, Any]]:
    """Field -> {low, high, log, int}: the declared tunable fields, minus `pinned`, edited by `overrides`.

    `path` and `file` say where the overrides came from, for error messages.
    """
    config_cls = algorithm_cls.Config
    declared = tunable_fields(config_cls)
    known = [f.name for f in dataclasses.fields(config_cls)]
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ConfigError.single(path, "expected a mapping FIELD -> {low, high, log}", found=overrides, file=file)
    space = {name: _range(config_cls, name, rng, None, path + (name,), file)
             for name, rng in declared.items() if name not in set(pinned)}
    for name, override in overrides.items():
        if name not in known:
            raise ConfigError.single(path + (name,), f"unknown parameter of {algorithm_cls.name}; expected one of "
                                     f"{', '.join(known)}", found=name, choices=known, file=file)
        if override is None or override is False:
            space.pop(name, None)
            continue
        space[name] = _range(config_cls, name, declared.get(name), override, path + (name,), file)
    if not space:
        raise ConfigError.single(path, f"nothing to tune for {algorithm_cls.name}: no tunable field is left "
                                 "(declare some with tunable(...) or list them under tuning:)", file=file)
    return space


def suite_space(suite: Suite, algorithm: str) -> dict[str, dict[str, Any]]:
    """The search space of `algorithm` in `suite` (suite-pinned fields left out)."""
    pinned = {k for task in tuning_tasks(suite, algorithm) for k in task.params[algorithm]}
    overrides = suite.tuning.get(algorithm)
    unknown = [a for a in suite.tuning if a not in suite.algorithms]
    if unknown:
        raise ConfigError.single(("tuning", unknown[0]), f"not one of the suite's algorithms ({', '.join(suite.algorithms)})",
                                 found=unknown[0], choices=suite.algorithms, file=suite.path)
    from_cli = any(o.startswith("tuning") for o in suite.overrides)
    return search_space(registry.get_algorithm(suite.plugin(algorithm)), overrides, pinned, ("tuning", algorithm),
                        COMMAND_LINE if from_cli else suite.path)


def sample(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, r in space.items():
        if r["int"]:
            out[name] = trial.suggest_int(name, int(r["low"]), int(r["high"]), log=r["log"])
        else:
            out[name] = trial.suggest_float(name, r["low"], r["high"], log=r["log"])
    return out


# ---------------------------------------------------------------------------------------------
# Runs of a trial


def tuning_tasks(suite: Suite, algorithm: str) -> list[Task]:
    tasks = [t for t in suite.tasks if algorithm in t.params]
    if algorithm not in suite.algorithms:
        raise ConfigError.single(("algorithm",), f"not one of the suite's algorithms ({', '.join(suite.algorithms)})",
                                 found=algorithm, choices=suite.algorithms, file=COMMAND_LINE)
    if not tasks:
        raise ConfigError.single(("algorithm",), "runs on none of the suite's tasks", found=algorithm, file=COMMAND_LINE)
    return tasks


def score_split(task_config: dict[str, Any]) -> str:
    return "validation" if "validation" in task_config["splits"] else "train"


def without_test(task: Task) -> dict[str, Any]:
    """The task's config with the test split removed: its environments are never built."""
    config = task.config_dict()
    config["splits"] = {s: comps for s, comps in config["splits"].items() if s != "test"}
    return config


def trial_specs(suite: Suite, algorithm: str, params: dict[str, Any], seeds: list[int],
                checkpoint_dir: Path) -> list[RunSpec]:
    """The runs of one trial, seed-major, each with the sampled params over the suite's."""
    specs = []
    for seed in seeds:
        for task in tuning_tasks(suite, algorithm):
            merged = {**task.params[algorithm], **params}
            config = without_test(task)
            # The objective reads curve evaluations only: keep the final re-evaluation cheap.
            budget = {**task.budget, "absolute_episodes": task.budget["eval_episodes"]}
            identity = {"tune": suite.name, "task": task.name, "task_config": config, "algorithm": algorithm,
                        "params": merged, "budget": budget, "seed": seed}
            specs.append(RunSpec(
                run_id=stable_hash(identity), suite=suite.name, task=task.name, algorithm=algorithm, seed=seed,
                params=merged, budget=budget, task_config=config, metric=suite.metric, device=suite.device,
                checkpoint_dir=str(checkpoint_dir), checkpoint_every=suite.checkpoint_every,
                plugin="" if suite.plugin(algorithm) == algorithm else suite.plugin(algorithm),
            ))
    return specs


def _score(rows: list[dict[str, Any]], split: str, metric: str) -> float:
    values = [r["value"] for r in rows if r["split"] == split and r["metric"] == metric]
    return float(np.mean(values)) if values else math.nan


def _never() -> bool:
    return False


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


@dataclass
class Objective:
    """Train every run of a trial and return the mean validation (or train) score."""

    suite: Suite
    algorithm: str
    space: dict[str, dict[str, Any]]
    seeds: list[int]
    checkpoint_root: Path
    stop: Callable[[], bool] = _never  # the coordinator of a Ray task asks it to stop
    log: Callable[[str], None] = lambda _line: None  # periodic progress lines within a trial

    def __call__(self, trial: optuna.Trial) -> float:
        from harness.run.runner import execute_run

        trial.set_user_attr("owner", _owner())
        params = sample(trial, self.space)
        trial_dir = self.checkpoint_root / f"trial-{trial.number}"
        specs = trial_specs(self.suite, self.algorithm, params, self.seeds, trial_dir)
        splits = {s.task: score_split(s.task_config) for s in specs}
        trial.set_user_attr("splits", splits)
        trial.set_user_attr("split", next(iter(set(splits.values()))) if len(set(splits.values())) == 1 else "mixed")
        stride = max(math.ceil(s.budget["env_steps"] / s.budget["eval_every"]) for s in specs) + 1
        finals: list[float] = []
        # A trial trains for minutes with no line of its own otherwise.
        heartbeat = Heartbeat(f"trial {trial.number}", len(specs), sum(s.budget["env_steps"] for s in specs), self.log)
        steps_before = 0
        for index, spec in enumerate(specs):
            if "test" in spec.task_config["splits"]:  # the invariant this command exists for
                raise AssertionError(f"{spec.label}: test split reached a tuning run")
            split = splits[spec.task]
            pruned = threading.Event()
            evals = [0]

            def on_eval(env_steps: int, rows: list[dict[str, Any]], index: int = index, split: str = split,
                        pruned: threading.Event = pruned, evals: list[int] = evals) -> None:
                if env_steps == 0:
                    return  # the untrained network says nothing about the parameters
                evals[0] += 1
                current = _score(rows, split, self.suite.metric)
                trial.report(float(np.mean([*finals, current])), index * stride + evals[0])
                if trial.should_prune():
                    pruned.set()

            def should_stop(pruned: threading.Event = pruned) -> bool:
                return pruned.is_set() or self.stop()

            def on_progress(env_steps: int, index: int = index, before: int = steps_before) -> None:
                heartbeat.tick(index, before + env_steps, before + env_steps)

            result = execute_run(spec, on_progress, should_stop=should_stop, on_eval=on_eval)
            steps_before += spec.budget["env_steps"]
            if pruned.is_set():
                shutil.rmtree(trial_dir, ignore_errors=True)
                raise optuna.TrialPruned(f"pruned during {spec.label}")
            if result.status == "interrupted":
                raise TuningInterrupted("interrupted: the trial in progress was marked failed; "
                                        "run the same command to finish the remaining trials")
            if result.status != "done":
                reason = f"{spec.label}: {(result.reason or 'no reason recorded').splitlines()[0]}"
                trial.set_user_attr("failure", reason)
                raise TrialRunFailed(reason)
            curve = [r for r in result.evals if r["kind"] == "curve"]
            last = max(r["env_steps"] for r in curve)
            finals.append(_score([r for r in curve if r["env_steps"] == last], split, self.suite.metric))
            trial.set_user_attr("run_scores", finals)
        # Trials never resume, so their checkpoints are dead weight; a failed or interrupted
        # trial keeps its directory (metrics.jsonl) for a post-mortem.
        shutil.rmtree(trial_dir, ignore_errors=True)
        return float(np.mean(finals))


# ---------------------------------------------------------------------------------------------
# Study


def study_name(suite: Suite, algorithm: str) -> str:
    return f"{suite.name}:{algorithm}:{suite.budget_name}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def storage_target(url: str | None, suite: Suite) -> str:
    """The study's storage: a journal file (made absolute, so Ray tasks on this machine's
    filesystem find the same file whatever their working directory) or a database URL."""
    target = url or str(TUNING_DIR / f"{suite.name}.journal")
    if target.endswith(".journal") and "://" not in target:
        return str(Path(target).resolve())
    return target


def open_storage(url: str | None, suite: Suite, create: bool = True) -> optuna.storages.BaseStorage:
    """Journal file by default (and for paths ending in .journal), else an RDB URL. With
    `create=False` (tune show) a storage file that does not exist is an error naming it, so a
    mistyped path never leaves an empty storage behind."""
    from optuna.storages.journal import JournalFileBackend

    target = storage_target(url, suite)
    if not create:
        _require_existing(target)
    if target.endswith(".journal") and "://" not in target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(target))
    if "://" not in target:
        raise ConfigError.single(("storage",), "expected a path ending in .journal or a database URL "
                                 "(sqlite:///tune.db, postgresql://...)", found=target, file=COMMAND_LINE)
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna, and what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(target, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise ConfigError.single(("storage",), f"cannot open this database: {exc}", found=target,
                                 file=COMMAND_LINE) from None


def _require_existing(target: str) -> None:
    file = target if "://" not in target else None
    if target.startswith("sqlite:///") and target != "sqlite:///:memory:":
        file = target.removeprefix("sqlite:///")
    if file is not None and not Path(file).is_file():
        raise ConfigError.single(("storage",), f"no tuning storage at {file}: nothing has been tuned with it "
                                 "(check storage=, or run `harness tune` first)", found=target, file=COMMAND_LINE)


def missing_study_message(storage: optuna.storages.BaseStorage, name: str, suite: Suite, algorithm: str) -> str:
    """Why `tune show` found nothing, naming the studies this storage does hold for the suite and
    algorithm (most often the tuning ran at another budget) and how to show one."""
    held = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    related = [n for n in held if n.startswith(f"{suite.name}:{algorithm}:")]
    if related:
        hints = "; ".join(f"{n} (budget={n.rsplit(':', 1)[1]}, or study={n})" for n in related)
        return f"no study {name!r} in this storage; it holds {hints}"
    if held:
        return f"no study {name!r} in this storage; it holds {', '.join(held)}: pass study=NAME, or run `harness tune` first"
    return f"no study {name!r}: this storage holds no studies; run `harness tune` first"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def fail_orphans(study: optuna.Study) -> list[int]:
    """Mark FAILED the RUNNING trials whose owning process on this host is gone (see module doc)."""
    me = _owner()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner") or {}
        if owner.get("host") != me["host"]:
            continue
        pid = int(owner.get("pid", -1))
        if pid == me["pid"] or not _alive(pid):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


def open_study(suite: Suite, options: TuneOptions) -> optuna.Study:
    name = options.study or study_name(suite, options.algorithm)
    # The sampler's seed mixes in how many trials exist, so a resumed study does not replay
    # the random start-up samples it already tried, yet stays reproducible from its history;
    # and the worker index, so processes started together on one study do not propose the
    # same parameters.
    storage = open_storage(options.storage, suite)
    existing = next((s.n_trials for s in optuna.get_all_study_summaries(storage) if s.study_name == name), 0)
    seed = int(stable_hash([suite.seeds[0], name, existing] + ([options.worker] if options.worker else []),
                           length=8), 16)
    return optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )


def open_recovered(suite: Suite, options: TuneOptions, log: Callable[[str], None]) -> optuna.Study:
    """The study, with the trials that dead processes on this host left running marked failed."""
    study = open_study(suite, options)
    for number in fail_orphans(study):
        log(f"trial {number} was left running by a process that is gone: marked failed")
    return study


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def check_options(options: TuneOptions) -> None:
    for key in ("trials", "seeds_per_trial", "n_jobs", "worker"):
        value = getattr(options, key)
        if key == "n_jobs" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "worker" else 1):
            expected = "a non-negative integer" if key == "worker" else "a positive integer"
            raise ConfigError.single((key,), f"expected {expected}", found=value, file=COMMAND_LINE)


def best_params_path(suite: Suite, algorithm: str) -> Path:
    return tuned_params_path(suite.name, algorithm)


def write_best(study: optuna.Study, suite: Suite, options: TuneOptions) -> Path | None:
    """Best params for `harness run ... params=tuned`; None without a complete trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    path = best_params_path(suite, options.algorithm)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": suite.name, "algorithm": options.algorithm, "study": study.study_name,
        "budget": suite.budget_name, "metric": suite.metric, "params": best.params, "value": best.value,
        "trial": best.number, "split": best.user_attrs.get("split"), "splits": best.user_attrs.get("splits"),
        "trials": finished(study), "seeds_per_trial": options.seeds_per_trial,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def describe_trial(t: FrozenTrial) -> str:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    if t.state == TrialState.COMPLETE:
        outcome = f"value {t.value:.4g}"
    elif t.state == TrialState.PRUNED:
        outcome = "pruned"
    else:
        outcome = f"failed: {t.user_attrs.get('failure', 'no reason recorded')}"
    return f"trial {t.number}: {outcome} ({params})"


def tune(suite: Suite, options: TuneOptions, log: Callable[[str], None] = lambda _line: None) -> optuna.Study:
    """Run trials until the study holds `options.trials` finished ones; returns the study."""
    check_options(options)
    space = suite_space(suite, options.algorithm)
    study = open_recovered(suite, options, log)
    missing = options.trials - finished(study)
    if missing <= 0:
        log(f"study {study.study_name} already has {finished(study)} finished trials")
        write_best(study, suite, options)
        return study
    if suite.executor == "ray":
        tune_tasks(suite, options, space, log)
    else:
        optimize(study, suite, options, space, log)
    write_best(study, suite, options)
    return study


def optimize(study: optuna.Study, suite: Suite, options: TuneOptions, space: dict[str, dict[str, Any]],
             log: Callable[[str], None], stop: Callable[[], bool] = _never) -> None:
    """Run trials in this process until the study holds `options.trials` finished ones."""
    missing = options.trials - finished(study)
    if missing <= 0:
        return
    objective = Objective(suite, options.algorithm, space, suite.seeds[: options.seeds_per_trial],
                          Path(suite.checkpoint_dir) / "tuning" / _slug(study.study_name), stop, log)
    logged = [lambda _study, t: log(describe_trial(t))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        jobs = options.n_jobs or 1
        if jobs > 1:  # threads in this process; may overshoot by n_jobs - 1
            study.optimize(objective, n_trials=missing, n_jobs=jobs, catch=(TrialRunFailed,),
                           callbacks=[optuna.study.MaxTrialsCallback(options.trials, states=FINISHED), *logged])
            return
        # One trial at a time, each started only while the study has room counting the trials
        # other processes are running: workers sharing a study (Ray tasks, worker=) stop at
        # `trials` instead of each finishing the one it had started. At most `missing`
        # attempts, so trials that keep failing cannot loop forever.
        for _ in range(missing):
            if stop() or options.trials - finished(study) - running(study) <= 0:
                return
            study.optimize(objective, n_trials=1, catch=(TrialRunFailed,), callbacks=logged)


# ---------------------------------------------------------------------------------------------
# executor=ray: each Ray task is one more Optuna worker on the shared study storage


def harness_tune(suite: Suite, options: TuneOptions, space: dict[str, dict[str, Any]], mailbox: Any) -> None:
    """Run trials in a Ray worker until the study is full. A retry after a dead worker first
    fails the trial that worker left running."""
    import optuna
    import torch

    torch.set_num_threads(ray_tasks.task_threads(suite.ray))
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def log(line: str) -> None:
        mailbox.post.remote("log", ray_tasks.where(), line)

    study = open_recovered(suite, options, log)
    stop = ray_tasks.watch_stop(mailbox)
    try:
        optimize(study, suite, options, space, log, stop=stop.is_set)
    finally:
        stop.set()


def tune_tasks(suite: Suite, options: TuneOptions, space: dict[str, dict[str, Any]], log: Callable[[str], None]) -> None:
    """`harness tune ... executor=ray`: `n_jobs` tasks (default: as many as the cluster holds),
    each an Optuna worker with its own sampler seed, against the study's shared storage."""
    where = ray_tasks.connect(suite.ray)
    ray = ray_tasks.import_ray()
    shared = ray_tasks.shared_paths(suite)
    storage = storage_target(options.storage, suite)
    jobs = options.n_jobs or ray_tasks.capacity(suite.ray)
    log(f"running trials on {where}, {jobs} at a time")
    mailbox = ray_tasks.new_mailbox()
    task = ray_tasks.as_tasks(harness_tune, suite.ray)
    refs = [task.remote(shared, dataclasses.replace(options, storage=storage, n_jobs=1,
                                                    worker=options.worker * jobs + i + 1), space, mailbox)
            for i in range(jobs)]

    def pump() -> None:
        for _kind, _where, line in ray.get(mailbox.drain.remote()):
            log(line)

    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.25)
            pump()
            for ref in ready:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:  # the study records the trial; say why here
                    log(f"a tuning task ended early: {ray_tasks.first_line(exc)}")
        pump()
    except KeyboardInterrupt:
        ray.get(mailbox.stop.remote())
        ray.wait(refs, num_returns=len(refs), timeout=60)
        raise TuningInterrupted("interrupted: the trials in progress were marked failed; "
                                     "run the same command to finish the remaining trials") from None
