"""`harness` command line: run, show, validate, list, status, report, claims, new, tune, bench.

Every command takes `key=value` tokens; `suite=NAME|PATH` picks the suite and any other key
overrides the suite file (`budget=smoke seeds=3 algorithms=[qmix,vdn] store=sqlite:///x.db`).
Exit codes: 0 ok, 1 some runs failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from harness.errors import ConfigError, HarnessError

out = Console(soft_wrap=True)
if not out.is_terminal:  # piped or in CI: tables keep one line per row
    out = Console(soft_wrap=True, width=160)
err = Console(stderr=True, soft_wrap=True)

COMMANDS = {
    "run": "train every (task, algorithm, seed) of a suite; skips finished runs, resumes interrupted ones",
    "show": "print the resolved suite and its run plan (runs, env steps, estimated time from finished runs or "
            "a few seconds of training per task and algorithm; calibrate=false skips that); algorithm=NAME "
            "prints an algorithm's config: every field with its default, search range and meaning",
    "validate": "check a suite file and report every problem with file, line and key",
    "list": "list suites, algorithms or envs",
    "status": "count the suite's runs by status (format=json for machines)",
    "report": "write the leaderboard (README.md, leaderboard.json, index.html, manifest) with 95%% CIs to "
              "leaderboards/<suite>/ (out=DIR, format=md,json,html; format=table only prints; "
              "interval=expanded|percentile|bca; replace=true to overwrite a leaderboard made with other "
              "overrides or from more finished runs)",
    "claims": "check the papers' claims the suite declares: a verdict for each (supported, not supported, "
              "inconclusive) with counts, effect, interval and Holm-corrected p-value [run=true first runs "
              "what is missing; format=json]",
    "new": "scaffold a plugin: `harness new algorithm NAME`",
    "tune": "Optuna search of an algorithm's tunable params on validation (never test) compositions: "
            "algorithm=NAME [trials=10 seeds_per_trial=3 n_jobs=1 (executor=ray: what the cluster holds) worker=0 study=NAME storage=URL|PATH.journal]; "
            "add the word `show` to print the study instead",
    "bench": "throughput as ratios measured in one run: harness rollout, acting and training steps/s over the raw "
             "library's [only=smax,qmix seconds=3 rounds=3 threads=1 save=PATH.json compare=OLD.json "
             "(new=NEW.json: compare two saved files)]",
}

EXAMPLES = """examples:
  harness run suite=matrix_games budget=short
  harness run suite=matrix_games budget=smoke seeds=2 algorithms=[qmix,vdn] workers=2
  harness show suite=matrix_games tasks=[climbing]
  harness report suite=matrix_games
  harness report suite=matrix_games format=json out=/tmp/board
  harness claims suite=matrix_games run=true
  harness new algorithm myalg
  harness tune suite=matrix_games algorithm=me_qmix trials=20 budget=short
  harness tune show suite=matrix_games algorithm=me_qmix budget=short
  harness bench only=mpe_spread,qmix
  harness bench compare=runs/bench/OLD.json
"""


def _split_tokens(tokens: list[str], command: str, allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """Separate command options (suite=, format=, ...) from suite overrides."""
    from harness.config import COMMAND_LINE, parse_value

    options: dict[str, Any] = {}
    overrides = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise ConfigError.single((), f"'{command}' expects key=value arguments", found=token, file=COMMAND_LINE)
        if key in allowed:
            options[key] = parse_value(value, (key,)) if key != "suite" else value
        else:
            overrides.append(token)
    return options, overrides


def _load(options: dict[str, Any], overrides: list[str]) -> Any:
    from harness.config import COMMAND_LINE, load_suite

    if "suite" not in options:
        raise ConfigError.single(("suite",), "missing: say which suite, e.g. suite=matrix_games", file=COMMAND_LINE)
    return load_suite(str(options["suite"]), overrides)


def _format(options: dict[str, Any], allowed: tuple[str, ...]) -> str:
    from harness.config import COMMAND_LINE

    fmt = str(options.get("format", allowed[0]))
    if fmt not in allowed:
        raise ConfigError.single(("format",), f"expected one of {', '.join(allowed)}", found=fmt,
                                 choices=allowed, file=COMMAND_LINE)
    return fmt


def _check_device(device: str, suite_file: str) -> None:
    """Fail before any run starts rather than once per run."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError.single(("device",), "torch sees no CUDA device here; expected auto or cpu",
                                     found=device, file=suite_file)


def _given_in(suite: Any, key: str) -> str:
    """Where the suite's `key` came from: the command line when an override set it, else the file."""
    from harness.config import COMMAND_LINE

    return COMMAND_LINE if any(o.startswith(f"{key}=") for o in suite.overrides) else suite.path


def _open_store(suite: Any, create: bool = True) -> Any:
    """The suite's store; a problem with it is blamed on where store= was given."""
    from harness.run.store import Store

    try:
        return Store(suite.store, create=create)
    except ConfigError as exc:
        raise exc.located(_given_in(suite, "store")) from None


def _check_checkpoint_dir(suite: Any) -> None:
    """Fail before any run starts, not in every worker: the folder must be, or become, a
    writable directory."""
    from harness.run.store import make_folder

    folder = Path(suite.checkpoint_dir)
    why = make_folder(folder)
    if why:
        problem = f"cannot be made a folder: {why}"
    elif not os.access(folder, os.W_OK):
        problem = "not writable"
    else:
        return
    raise ConfigError.single(("checkpoint_dir",), f"{folder} {problem}; expected a writable folder",
                             found=str(folder), file=_given_in(suite, "checkpoint_dir"))


def cmd_run(tokens: list[str]) -> int:
    from harness.report.model import collect, table
    from harness.run.plan import plan

    options, overrides = _split_tokens(tokens, "run", ("suite",))
    suite = _load(options, overrides)
    store = _ready_to_run(suite)
    specs = plan(suite)
    err.print(f"[bold]{suite.name}[/]: {len(suite.tasks)} tasks x {len(suite.algorithms)} algorithms x "
              f"{len(suite.seeds)} seeds ({len(specs)} runs), budget '{suite.budget_name}', store {suite.store}")
    for task in suite.tasks:
        for algorithm, why in task.skipped.items():
            err.print(f"  {task.name}: {algorithm} skipped ({why})", highlight=False)
    summary = _execute(suite, specs, store)
    if summary is None:
        return 130
    out.print(table(collect(suite, store, full=False)))
    _print_failures(summary)
    return summary.exit_code


def _ready_to_run(suite: Any) -> Any:
    """Check what every run needs before any starts; returns the (created) store."""
    _check_device(suite.device, suite.path)
    _check_checkpoint_dir(suite)
    # A script's background job starts with SIGINT ignored. Local worker processes install
    # their own handler anyway; the coordinator does the same so that Ctrl-C (or kill -INT)
    # stops a suite the same way under either executor (Ray's workers block SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return _open_store(suite)


def _execute(suite: Any, specs: list[Any], store: Any) -> Any:
    """Run `specs` with the suite's executor; None (said so) when Ctrl-C stopped them."""
    from harness.run.coordinator import run_plan

    try:
        return run_plan(specs, store, suite.workers, err, retry_failed=suite.retry_failed,
                        ray=suite.ray if suite.executor == "ray" else None, reclaim_running=suite.reclaim_running)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {_interrupted_summary(specs, store)}; run the same command to resume")
        return None


def _print_failures(summary: Any) -> None:
    if summary.failures:
        err.print(f"[red]{len(summary.failures)} run(s) failed[/] (the others were recorded):")
        for spec, reason in summary.failures:
            err.print(f"  {spec.label}: {escape(reason.splitlines()[0]) if reason else 'no reason recorded'}", highlight=False)
    if summary.skipped_failed:
        err.print(f"{summary.skipped_failed} run(s) failed in an earlier invocation; rerun them with retry_failed=true")


def _interrupted_summary(specs: list[Any], store: Any) -> str:
    """What a Ctrl-C left behind, read from the store and the checkpoint folders: runs that will
    resume from a checkpoint, and runs stopped without one (they start over)."""
    statuses = store.statuses(s.run_id for s in specs)
    stopped = [s for s in specs if statuses.get(s.run_id) in ("interrupted", "running")]
    if not stopped:
        return "no run was in progress"
    resumable = sum((Path(s.checkpoint_dir) / s.run_id / "last.pt").exists() for s in stopped)
    parts = [f"{resumable} run(s) in progress checkpointed (they resume from there)"] if resumable else []
    if len(stopped) > resumable:
        parts.append(f"{len(stopped) - resumable} stopped without a checkpoint (they start over)")
    return ", ".join(parts)


def cmd_show(tokens: list[str]) -> int:
    from harness.run.plan import plan
    from harness.run.store import Store

    options, overrides = _split_tokens(tokens, "show", ("suite", "calibrate", "algorithm"))
    if "algorithm" in options and "suite" not in options:
        return _show_algorithm(str(options["algorithm"]), overrides)
    suite = _load(options, overrides)
    resolved = {
        "suite": suite.name, "file": suite.path, "metric": suite.metric, "seeds": suite.seeds,
        "budget": suite.budget_name, "algorithms": suite.algorithms, "store": suite.store,
        "checkpoint_dir": suite.checkpoint_dir, "workers": suite.workers, "device": suite.device,
        "tasks": {
            t.name: {
                "env": t.env, "args": t.args.model_dump(exclude_defaults=True), "num_envs": t.num_envs,
                **({"rollout": t.rollout, "rollout_steps": t.rollout_steps} if t.rollout != "episodes" else {}),
                "budget": t.budget,
                "compositions": {s: [c.name for c in comps] for s, comps in t.splits.items()},
                "params": {a: p for a, p in t.params.items() if p},
                **({"skipped": t.skipped} if t.skipped else {}),
            }
            for t in suite.tasks
        },
    }
    print(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None, width=100).rstrip())
    specs = plan(suite)
    try:
        store: Store | None = _open_store(suite, create=False)
    except ConfigError:  # nothing has run with this store yet: showing the plan creates none
        store = None
    statuses = store.statuses(s.run_id for s in specs) if store is not None else {}
    remaining = [s for s in specs if statuses.get(s.run_id) != "done"]
    total_steps = sum(s.budget["env_steps"] for s in specs)
    left_steps = sum(s.budget["env_steps"] for s in remaining)
    out.print(f"\nplan: {len(specs)} runs ({len(specs) - len(remaining)} done), {total_steps:,} env steps in all, "
              f"{left_steps:,} left")
    if remaining:
        out.print(_show_estimate(suite, remaining, store, _calibrate_option(options)), highlight=False, markup=False)
    return 0


def _calibrate_option(options: dict[str, Any]) -> bool:
    return _bool_option(options, "calibrate", True)


def _bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    from harness.config import COMMAND_LINE

    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError.single((key,), "expected true or false", found=str(value), file=COMMAND_LINE)
    return value


def _show_estimate(suite: Any, remaining: list[Any], store: Any, calibrate: bool) -> str:
    """The estimate line: finished runs' throughput where this store has some, else a few
    seconds of training per (task, algorithm), cached (harness/run/estimate.py)."""
    import torch

    from harness.run import estimate
    from harness.run.local import worker_threads

    rates: dict[tuple[str, str], float | None] = {}  # one store query per (env, algorithm)

    def throughput(spec: Any) -> float | None:
        key = (spec.task_config["env"], spec.algorithm)
        if key not in rates:
            rates[key] = store.throughput(spec.task_config, spec.algorithm) if store is not None else None
        return rates[key]

    threads, before = worker_threads(suite.workers), torch.get_num_threads()
    torch.set_num_threads(threads)  # measured as a worker would run
    try:
        result = estimate.estimate(
            remaining, throughput, estimate.CalibrationCache(suite.checkpoint_dir), threads, calibrate,
            announce=lambda line: err.print(f"{line}; calibrate=false skips this", highlight=False, markup=False))
    except KeyboardInterrupt:
        return "estimated time: calibration interrupted"
    finally:
        torch.set_num_threads(before)
    return estimate.describe(result, len(remaining), suite.workers)


def cmd_validate(tokens: list[str]) -> int:
    from harness.run.plan import plan

    options, overrides = _split_tokens(tokens, "validate", ("suite",))
    suite = _load(options, overrides)
    if suite.tuning:  # the search-space table is otherwise only checked when tuning starts
        from harness.tune import suite_space

        for algorithm in suite.tuning:
            if algorithm in suite.algorithms:
                suite_space(suite, algorithm)
            else:
                suite_space(suite, suite.algorithms[0])  # reports the unknown algorithm by name
    claims = f", {len(suite.claims)} claims" if suite.claims else ""
    out.print(f"[green]ok[/]: {suite.path} — {len(suite.tasks)} tasks, {len(suite.algorithms)} algorithms, "
              f"{len(suite.seeds)} seeds, {len(plan(suite))} runs{claims}")
    return 0


def cmd_list(tokens: list[str]) -> int:
    from harness import registry
    from harness.config import COMMAND_LINE

    what = tokens[0] if tokens else ""
    if what == "suites":
        for path in sorted(registry.builtin_suites_dir().glob("*.yaml")):
            description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
            _list_line(path.stem, str(description or ""), whole=True)
    elif what == "algorithms":
        for name in registry.algorithm_names():
            _list_line(name, registry.get_algorithm(name).__doc__ or "")
    elif what == "envs":
        for name in registry.env_names():
            cls = registry.get_env(name)
            own_doc = cls.__dict__.get("__doc__")  # a backend's own docstring, else its module's
            _list_line(name, own_doc or sys.modules[cls.__module__].__doc__ or "")
    else:
        raise ConfigError.single(("list",), "expected one of suites, algorithms, envs", found=what,
                                 choices=("suites", "algorithms", "envs"), file=COMMAND_LINE)
    return 0


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence, whole: docstrings wrap mid-sentence, so the first line alone
    would stop in the middle of one."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = re.search(r"[.!?](\s|$)(?=[A-Z(`\"]|$)", paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


def _show_algorithm(name: str, extra: list[str]) -> int:
    """`harness show algorithm=NAME`: the algorithm's summary and every field of its Config:
    type, default, `harness tune`'s range where it has one, and the field's docstring."""
    import inspect
    import textwrap

    from harness import registry
    from harness.api import config_fields
    from harness.config import COMMAND_LINE

    if extra:
        raise ConfigError.single((extra[0].partition("=")[0],), "show algorithm=NAME takes no other key",
                                 found=extra[0], file=COMMAND_LINE)
    try:
        cls = registry.get_algorithm(name, ())
    except ConfigError as exc:
        raise exc.located(COMMAND_LINE, ("algorithm",)) from None
    config = cls.Config
    source = inspect.getsourcefile(config) or "?"
    width = max(out.width, 60)
    say = functools.partial(out.print, markup=False, highlight=False)
    say(f"{name}: {_first_sentence(cls.__doc__ or '')}")
    say(f"Config {config.__name__} ({_relative(source)}). Set a field for a run with params.{name}.FIELD=VALUE "
        "(or a suite's params:); `harness tune` searches the fields with a range.")
    for f in config_fields(config):
        tune = f.tune
        searched = f"  [tune {tune['low']:g} .. {tune['high']:g}{', log scale' if tune['log'] else ''}]" if tune else ""
        say("")
        say(f"{f.name}: {f.type} = {f.default!r}{searched}")
        for line in textwrap.wrap(f.doc or "(undocumented)", width=width - 4):
            say(f"    {line}")
    return 0


def _relative(path: str) -> str:
    """`path` relative to the working directory when under it (a repository checkout)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _list_line(name: str, text: str, whole: bool = False) -> None:
    """NAME and its description, wrapped under the description column; printed without markup,
    so bracketed text such as tasks=[spread_pymarl] prints as written."""
    import textwrap

    description = " ".join(text.split()) if whole else _first_sentence(text)
    lines = textwrap.wrap(f"{name:24} {description}", width=max(out.width, 60), subsequent_indent=" " * 25)
    for line in lines or [name]:
        out.print(line, markup=False, highlight=False)


def cmd_status(tokens: list[str]) -> int:
    from harness.run.plan import plan

    options, overrides = _split_tokens(tokens, "status", ("suite", "format"))
    fmt = _format(options, ("table", "json"))
    suite = _load(options, overrides)
    specs = plan(suite)
    store = _open_store(suite, create=False)
    rows = {r["run_id"]: r for r in store.runs(run_ids=[s.run_id for s in specs])}
    counts = Counter(rows.get(s.run_id, {}).get("status", "missing") for s in specs)
    failed = [{"run": s.label, "run_id": s.run_id, "reason": rows[s.run_id]["reason"]}
              for s in specs if rows.get(s.run_id, {}).get("status") == "failed"]
    done = [(s, rows[s.run_id]) for s in specs if rows.get(s.run_id, {}).get("status") == "done"]
    if fmt == "json":
        timed = [{"run": s.label, "run_id": s.run_id, "seconds": r["seconds"], "env_steps": r["env_steps"],
                  "grad_steps": r["grad_steps"], "timings": r["timings"]} for s, r in done]
        out.print_json(json.dumps({"suite": suite.name, "planned": len(specs), "counts": dict(counts), "failed": failed,
                                   "done": timed}))
        return 0
    out.print(f"{suite.name}: {len(specs)} planned runs — " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for f in failed:
        out.print(f"  [red]failed[/] {f['run']}: {escape((f['reason'] or '').splitlines()[0])}")
    for line in _time_summary(done):
        out.print(line, highlight=False)
    return 0


def _time_summary(done: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    """Per task and algorithm, the finished runs' mean wall seconds, env steps/s, evaluation's
    share and time to the first training step (runs recorded before timings were kept: wall
    time only)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for spec, row in done:
        groups.setdefault((spec.task, spec.algorithm), []).append(row)
    lines = ["time per finished run (mean):"] if groups else []
    for (task, algorithm), group in groups.items():
        seconds = sum(r["seconds"] for r in group) / len(group)
        rate = sum(r["env_steps"] for r in group) / max(sum(r["seconds"] for r in group), 1e-9)
        text = f"  {task}/{algorithm}: {seconds:,.0f} s, {rate:,.0f} env steps/s"
        timed = [r for r in group if r["timings"]]
        if timed:
            evaluating = sum(r["timings"].get("evaluation", 0.0) for r in timed) / sum(r["seconds"] for r in timed)
            first = sum(r["timings"].get("to_first_update", 0.0) for r in timed) / len(timed)
            text += f", {evaluating:.0%} evaluating, first training step after {first:.1f} s"
        lines.append(f"{text} ({len(group)} run{'s' if len(group) > 1 else ''})")
    return lines


def _report_formats(options: dict[str, Any]) -> tuple[str, ...]:
    from harness.config import COMMAND_LINE
    from harness.report.files import FORMATS

    raw = options.get("format", ",".join(FORMATS))
    chosen = tuple(str(f).strip() for f in (raw if isinstance(raw, list) else str(raw).split(",")) if str(f).strip())
    allowed = (*FORMATS, "table")
    bad = [f for f in chosen if f not in allowed] or ([] if chosen else [""])
    if bad or ("table" in chosen and len(chosen) > 1):
        raise ConfigError.single(("format",), "expected a comma-separated list of md, json, html, or table alone",
                                 found=str(raw), choices=allowed, file=COMMAND_LINE)
    return chosen


def _report_reps(options: dict[str, Any]) -> int:
    from harness.config import COMMAND_LINE

    reps = options.get("reps", 2000)
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 100:
        raise ConfigError.single(("reps",), "expected an integer number of bootstrap resamples >= 100",
                                 found=str(reps), file=COMMAND_LINE)
    return reps


def _report_interval(options: dict[str, Any]) -> str:
    from harness.config import COMMAND_LINE
    from harness.stats import METHODS

    method = str(options.get("interval", "expanded"))
    if method not in METHODS:
        raise ConfigError.single(("interval",), f"expected one of {', '.join(METHODS)}", found=method,
                                 choices=METHODS, file=COMMAND_LINE)
    return method


# Overrides that say where and how runs executed, not what they were: boards made from two stores
# (or with other worker counts) of one suite compare by their finished runs, not by these.
_PLACEMENT_KEYS = ("store", "checkpoint_dir", "checkpoint_every", "workers", "executor", "ray_address", "cpus_per_run",
                   "gpus_per_run", "max_retries", "device", "retry_failed", "reclaim_running")


def _shaping(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0] not in _PLACEMENT_KEYS]


KEEP_OR_REPLACE = "fix or delete it, or pass out=DIR to write elsewhere or replace=true to overwrite the board"


def _keep_other_leaderboard(target: Path, overrides: list[str], finished: int) -> None:
    """The default folder may hold a published leaderboard made with other overrides (another
    budget, a subset of tasks), or from more finished runs than this store has (a partial
    re-run, another store): refuse to replace it by accident. A damaged manifest or board is
    refused too (exit 2 naming it): nothing says what replacing it would lose."""
    from harness.config import COMMAND_LINE
    from harness.report.files import read_json_object

    manifest = target / "manifest.json"
    if not manifest.exists():
        return
    previous = _shaping(_string_list(read_json_object(manifest, "out", KEEP_OR_REPLACE), "overrides", manifest))
    overrides = _shaping(overrides)
    if sorted(previous) != sorted(overrides):
        raise ConfigError.single(
            ("out",), f"{target} holds a leaderboard made with overrides {previous or 'none'}, this one has "
            f"{overrides or 'none'}: pass out=DIR to write it elsewhere, or replace=true to overwrite it",
            found=str(target), file=COMMAND_LINE)
    board = target / "leaderboard.json"
    if not board.exists():
        return  # a board written without format=json: the overrides check above is all we can do
    runs = read_json_object(board, "out", KEEP_OR_REPLACE).get("runs")
    if not (isinstance(runs, list) and all(isinstance(r, dict) for r in runs)):
        raise ConfigError.single(("out",), f"{board} has no list of runs: {KEEP_OR_REPLACE}", file=COMMAND_LINE)
    published = sum(r.get("status") == "done" for r in runs)
    if finished < published:
        raise ConfigError.single(
            ("out",), f"{target} holds a leaderboard of {published} finished runs and this store has {finished}: "
            "replacing it would publish less. Pass out=DIR to write this one elsewhere, or replace=true to overwrite",
            found=str(target), file=COMMAND_LINE)


def _string_list(doc: dict[str, Any], key: str, path: Path) -> list[str]:
    """doc[key] (absent: none), which must be a list of strings."""
    from harness.config import COMMAND_LINE

    value = doc.get(key, [])
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError.single(("out",), f"{path}: {key} is not a list of strings: {KEEP_OR_REPLACE}",
                                 found=value, file=COMMAND_LINE)
    return value


def cmd_report(tokens: list[str]) -> int:
    from harness.report.files import board_origin, write_leaderboard
    from harness.report.model import Bootstrap, collect, read_runs, table

    options, overrides = _split_tokens(tokens, "report", ("suite", "format", "out", "reps", "interval", "replace",
                                                          "from"))
    formats = _report_formats(options)
    boot = Bootstrap(reps=_report_reps(options), method=_report_interval(options))
    suite = _load(options, overrides)
    # from=DIR: the runs as a published board recorded them, for boards whose store is gone.
    source = Path(str(options["from"])) if "from" in options else None
    store = None
    if source is not None:
        from harness.report.files import read_board

        runs = read_board(suite, source)
        store = _existing_store(suite) if suite.claims else None  # the claims' runs, where a store holds them
    else:
        store = _open_store(suite, create=False)
        runs = read_runs(suite, store)
    if formats == ("table",):
        out.print(table(collect(suite, None, boot, runs, full=False)))
        return 0
    target = Path(str(options["out"])) if "out" in options else Path("leaderboards") / suite.name
    if "out" not in options and options.get("replace") is not True:  # checked before the bootstrap, not after
        _keep_other_leaderboard(target, suite.overrides, sum(r.status == "done" for r in runs))
    with err.status(f"computing the {suite.name} leaderboard ({boot.reps} bootstrap resamples per interval)"):
        report = collect(suite, None, boot, runs)
        if store is not None and suite.claims:  # a claim's runs may lie outside the board's: they need the store
            from harness.report.claims import check

            report["claims"] = [v.as_dict() for v in check(suite, store)]
        written = write_leaderboard(report, suite, runs, target, formats,
                                    origin=board_origin(source) if source is not None else None)
    out.print(table(report))
    problems = report["problems"]
    if problems["failed"] or problems["missing"] or problems["untrained"]:
        err.print(f"[yellow]{len(problems['failed'])} failed, {len(problems['missing'])} unfinished and "
                  f"{len(problems['untrained'])} untrained run(s)[/] are listed in the leaderboard")
    for path in written:
        err.print(f"wrote {path}", highlight=False, markup=False)
    return 0


def _existing_store(suite: Any) -> Any:
    """The suite's store, or None where its SQLite file does not exist yet (nothing has run)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(suite.store)
    except Exception:  # the store's own check words the error
        return _open_store(suite, create=False)
    if url.drivername.startswith("sqlite") and url.database and not Path(url.database).is_file():
        return None
    return _open_store(suite, create=False)


def cmd_claims(tokens: list[str]) -> int:
    from harness.report import claims

    options, overrides = _split_tokens(tokens, "claims", ("suite", "run", "format"))
    suite = _load(options, overrides)
    fmt = _format(options, ("text", "json"))
    if not suite.claims:
        err.print(f"{suite.name} declares no claims (a claims: section in its file)")
        return 0
    store = _existing_store(suite)
    verdicts = claims.check(suite, store)
    missing = claims.missing_runs(verdicts)
    exit_code = 0
    if _bool_option(options, "run", False) and missing:
        store = _ready_to_run(suite)
        err.print(f"[bold]{suite.name}[/]: {len(missing)} run(s) for {len(suite.claims)} claim(s), store {suite.store}")
        summary = _execute(suite, missing, store)
        if summary is None:
            return 130
        _print_failures(summary)
        exit_code = summary.exit_code
        verdicts = claims.check(suite, store)
    if fmt == "json":
        out.print_json(json.dumps([v.as_dict() for v in verdicts]))
    else:
        for v in verdicts:
            style = {"supported": "green", "not supported": "red"}.get(v.verdict, "yellow")
            first, *rest = v.lines()
            name, _, tail = first.partition(": ")
            out.print(f"[bold]{escape(name)}[/]: [{style}]{escape(tail)}[/]", highlight=False)
            for line in rest:
                out.print(escape(line), highlight=False)
        counts = claims.summary_counts(verdicts)
        out.print(", ".join(f"{n} {k}" for k, n in counts.items()), highlight=False)
    waiting = claims.waiting_line(suite, verdicts, f"harness claims suite={options['suite']}")
    if waiting:
        err.print(waiting, highlight=False)
    return exit_code


def cmd_new(tokens: list[str]) -> int:
    from harness.config import COMMAND_LINE
    from harness.scaffold import new_algorithm

    if len(tokens) < 2 or tokens[0] != "algorithm":
        raise ConfigError.single(("new",), "usage: harness new algorithm NAME [dir=PATH]", found=" ".join(tokens),
                                 file=COMMAND_LINE)
    options, rest = _split_tokens(tokens[2:], "new", ("dir", "tests"))
    if rest:
        raise ConfigError.single(("new",), "unknown option; expected dir=PATH or tests=PATH", found=rest[0], file=COMMAND_LINE)
    module, test = new_algorithm(tokens[1], options.get("dir"), options.get("tests"))
    for path in (module, test):
        out.print(f"wrote {path}", markup=False)
    out.print(f"test it: python {test}   (or pytest {test}, with the dev extras)", markup=False)
    out.print(f"try it: harness run suite=matrix_games algorithms=[{tokens[1]}] budget=smoke", markup=False)
    return 0


TUNE_OPTIONS = ("suite", "algorithm", "trials", "study", "storage", "seeds_per_trial", "n_jobs", "worker")


def _tune_options(options: dict[str, Any]) -> Any:
    from harness.config import COMMAND_LINE
    from harness.tune import TuneOptions

    if "algorithm" not in options:
        raise ConfigError.single(("algorithm",), "missing: say which algorithm to tune, e.g. algorithm=me_qmix",
                                 file=COMMAND_LINE)
    known = {k: options[k] for k in TUNE_OPTIONS[2:] if k in options}
    for key in ("study", "storage"):
        if key in known:
            known[key] = str(known[key])
    return TuneOptions(algorithm=str(options["algorithm"]), **known)


def cmd_tune(tokens: list[str]) -> int:
    import optuna

    from harness import tune

    show = "show" in tokens
    options, overrides = _split_tokens([t for t in tokens if t != "show"], "tune", TUNE_OPTIONS)
    settings = _tune_options(options)
    suite = _load(options, overrides)
    # One line per trial comes from us instead; Optuna's failed-trial warnings carry tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if show:
        return _show_study(suite, settings)
    _check_device(suite.device, suite.path)
    _check_checkpoint_dir(suite)
    tune.check_options(settings)
    space = tune.suite_space(suite, settings.algorithm)
    tasks = [t.name for t in tune.tuning_tasks(suite, settings.algorithm)]
    err.print(f"[bold]tuning {settings.algorithm}[/] on {suite.name} ({', '.join(tasks)}), budget '{suite.budget_name}', "
              f"{min(settings.seeds_per_trial, len(suite.seeds))} seed(s) per trial, {settings.trials} trials; "
              f"searching {', '.join(space)}", highlight=False)
    study = tune.tune(suite, settings, log=lambda line: err.print(line, highlight=False, markup=False))
    counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    err.print("trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), highlight=False)
    path = tune.best_params_path(suite, settings.algorithm)
    if counts.get("complete"):
        best = study.best_trial
        out.print(f"best: trial {best.number}, value {best.value:.4g}, params {best.params}", highlight=False)
        err.print(f"wrote {path}", highlight=False, markup=False)
    running = tune.running(study)  # other processes sharing the study finish these
    if running:
        err.print(f"{running} trial(s) still running in other processes on this study", highlight=False)
    if tune.finished(study) + running < settings.trials:
        err.print(f"[yellow]{settings.trials - tune.finished(study) - running} trial(s) missing[/] (failed ones do "
                  "not count): run the same command again to add them")
        return 1
    return 0


def _show_study(suite: Any, settings: Any) -> int:
    import warnings

    import optuna
    from rich.table import Table

    from harness import tune
    from harness.config import COMMAND_LINE

    name = settings.study or tune.study_name(suite, settings.algorithm)
    storage = tune.open_storage(settings.storage, suite, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError.single(("study",), tune.missing_study_message(storage, name, suite, settings.algorithm),
                                 found=name, file=COMMAND_LINE) from None
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = Counter(t.state.name.lower() for t in trials)
    out.print(f"study {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), highlight=False)
    if complete:
        best = study.best_trial
        out.print(f"best: trial {best.number}, value {best.value:.4g} on {best.user_attrs.get('split', '?')} "
                  f"compositions, params {best.params}", highlight=False)
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(study)
            out.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()), highlight=False)
        except (ValueError, RuntimeError) as exc:
            out.print(f"importances: not available ({exc})", highlight=False)
    else:
        out.print("importances: need at least 2 complete trials", highlight=False)
    names = sorted({k for t in trials for k in t.params})
    table = Table("trial", "state", "value", "split", *names, "seconds")
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        table.add_row(str(t.number), t.state.name.lower(), f"{t.value:.4g}" if t.value is not None else "",
                      str(t.user_attrs.get("split", "")),
                      *(f"{t.params[n]:.4g}" if isinstance(t.params.get(n), float) else str(t.params.get(n, "")) for n in names),
                      f"{seconds:.0f}" if seconds is not None else "")
    out.print(table)
    return 0


BENCH_OPTIONS = ("only", "seconds", "rounds", "threads", "device", "save", "compare", "new")
MEASURING_OPTIONS = ("only", "seconds", "rounds", "threads", "device", "save")


def _bench_only(options: dict[str, Any]) -> list[str] | None:
    from harness.config import COMMAND_LINE

    if "only" not in options:
        return None
    raw = options["only"]
    items = raw if isinstance(raw, list) else str(raw).split(",")
    chosen = [str(n).strip() for n in items if str(n).strip()]
    if not chosen:
        raise ConfigError.single(("only",), "expected benchmark names, e.g. only=smax,qmix", found=str(raw),
                                 file=COMMAND_LINE)
    return chosen


def _bench_positive(options: dict[str, Any], key: str, default: float, integer: bool) -> Any:
    from harness.config import COMMAND_LINE

    value = options.get(key, default)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or value <= 0 or (integer and not isinstance(value, int)):
        raise ConfigError.single((key,), f"expected a positive {'integer' if integer else 'number'}",
                                 found=str(value), file=COMMAND_LINE)
    return value


def _bench_device(options: dict[str, Any]) -> str:
    """cpu, cuda or auto (cuda where torch sees a GPU), checked before anything is measured."""
    import torch

    from harness.config import COMMAND_LINE

    device = str(options.get("device", "cpu"))
    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError.single(("device",), "expected cpu, cuda or auto", found=device,
                                 choices=("cpu", "cuda", "auto"), file=COMMAND_LINE)
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError.single(("device",), "torch sees no CUDA device here", found=device, file=COMMAND_LINE)
    return "cuda" if device == "auto" and cuda else "cpu" if device == "auto" else device


def _ratio_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:,.0f}"


def _bench_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"harness bench, {results['created']} (each rate: the best of "
                        f"{results['settings']['rounds']} interleaved turns)")
    for column in ("name", "batch", "harness steps/s", "raw steps/s", "ratio"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for f in results["figures"].values():
        table.add_row(f["name"], str(f["batch"]), f"{f['harness_steps_per_s']:,.0f}",
                      f"{f['raw_steps_per_s']:,.0f}", _ratio_text(f["ratio"]))
    return table


def _bench_legend(results: dict[str, Any]) -> None:
    """What each figure's two sides ran: the task and the raw loop, once per pair."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for f in results["figures"].values():
        pairs.setdefault((f["task"], f["raw_loop"]), []).append(f["name"])
    out.print("rollout: backend step, random policy; act: rollout with the algorithm acting; "
              "train: rollout + update; raw: the library's own loop on the same task and batch",
              style="dim", highlight=False)
    for (task, raw), figures in pairs.items():
        out.print(f"  {', '.join(figures)}: {task} vs {raw}", style="dim", highlight=False, markup=False)
    for f in results["figures"].values():
        if f["kind"] == "run":
            shares = ", ".join(f"{phase} {share:.0%}" for phase, share in f["shares"].items())
            out.print(f"  {f['name']}: two whole runs in one process; first training step after "
                      f"{f['first_run_to_first_update_s']:.1f} s (first run), {f['to_first_update_s']:.1f} s "
                      f"(second run); second run {f['run_seconds']:.1f} s: {shares}",
                      style="dim", highlight=False, markup=False)


def _bench_compare(old: dict[str, Any], new: dict[str, Any]) -> None:
    from rich.table import Table

    from harness import bench

    table = Table(title=f"harness bench: {new['created']} over {old['created']}")
    for column in ("name", "old ratio", "new ratio", "ratio new/old", "harness steps/s new/old"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in bench.compare(old, new):
        table.add_row(row["name"], _ratio_text(row["old_ratio"]), _ratio_text(row["new_ratio"]),
                      _ratio_text(row["ratio_change"]), _ratio_text(row["harness_change"]))
    out.print(table)
    facts = ("cpu_count", "platform")
    if any(old["machine"].get(k) != new["machine"].get(k) for k in facts):
        err.print("[yellow]the two results come from different machines[/]: compare the ratios, not steps/s",
                  highlight=False)


def _bench_measure(options: dict[str, Any]) -> dict[str, Any] | None:
    """Measure the selected figures, save them and print the table; None if none can run here."""
    import datetime

    from harness import bench

    seconds = _bench_positive(options, "seconds", bench.SECONDS, integer=False)
    rounds = _bench_positive(options, "rounds", bench.ROUNDS, integer=True)
    threads = _bench_positive(options, "threads", 1, integer=True)
    device = _bench_device(options)
    chosen, skipped = bench.select(_bench_only(options))
    for name, why in skipped.items():
        err.print(f"{name} skipped: {escape(why.splitlines()[0])}", highlight=False)
    if not chosen:
        err.print("[yellow]nothing to measure[/]: every selected benchmark needs a package missing here")
        return None
    with err.status("measuring") as status:

        def progress(name: str, i: int, n: int) -> None:
            status.update(f"measuring {name} ({i}/{n}, about {seconds:g} s each plus set-up)")

        results = bench.run(chosen, float(seconds), rounds, threads, progress=progress, device=device)
    results["skipped"] = skipped
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(str(options["save"])) if "save" in options else Path("runs") / "bench" / f"{stamp}.json"
    bench.save(results, path)
    out.print(_bench_table(results))
    _bench_legend(results)
    err.print(f"wrote {path}", highlight=False, markup=False)
    return results


def cmd_bench(tokens: list[str]) -> int:
    from harness import bench
    from harness.config import COMMAND_LINE

    options, rest = _split_tokens(tokens, "bench", BENCH_OPTIONS)
    if rest:
        key = rest[0].partition("=")[0]
        raise ConfigError.single((key,), f"unknown option; expected one of {', '.join(BENCH_OPTIONS)}",
                                 found=key, choices=BENCH_OPTIONS, file=COMMAND_LINE)
    if "new" in options:  # two saved files: nothing is measured
        if "compare" not in options:
            raise ConfigError.single(("compare",), "missing: new=NEW.json is compared with compare=OLD.json",
                                     file=COMMAND_LINE)
        measuring = [k for k in MEASURING_OPTIONS if k in options]
        if measuring:
            raise ConfigError.single((measuring[0],), "new=NEW.json compares two saved files and measures "
                                     "nothing: leave this option out", file=COMMAND_LINE)
        _bench_compare(bench.load(str(options["compare"])), bench.load(str(options["new"]), key="new"))
        return 0
    old = bench.load(str(options["compare"])) if "compare" in options else None  # a bad path fails now
    results = _bench_measure(options)
    if results is None:
        return 1
    if old is not None:
        _bench_compare(old, results)
    return 0


HANDLERS = {"run": cmd_run, "show": cmd_show, "validate": cmd_validate, "list": cmd_list,
            "status": cmd_status, "report": cmd_report, "claims": cmd_claims, "new": cmd_new, "tune": cmd_tune, "bench": cmd_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Team-generalization harness for cooperative multi-agent RL.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("tokens", nargs="*", metavar="key=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return HANDLERS[args.command](args.tokens)
    except HarnessError as exc:
        err.print(f"[bold red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
