"""Loading a suite: find the file, apply overrides, validate everything (every problem reported
with file, line, key path, expected and found values), and build the resolved `Suite`."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from harness import registry
from harness.api import action_spaces_of
from harness.config.overrides import apply_overrides, split_params_mode
from harness.config.problems import expected_phrase, number_problems, pydantic_problems
from harness.config.schema import (
    COMMAND_LINE,
    DEFAULT_BUDGETS,
    NAME_PATTERN,
    PROFILES,
    SPLITS,
    BudgetModel,
    ClaimModel,
    ConfigurationModel,
    SuiteModel,
    TaskModel,
)
from harness.config.suite import (
    Claim,
    Composition,
    RaySettings,
    Suite,
    Task,
    default_checkpoint_dir,
    default_store,
)
from harness.config.tuned import apply_tuned_params
from harness.config.yaml_lines import LineIndex, load_yaml
from harness.errors import ConfigError, Problem, closest


def suite_path(ref: str) -> Path:
    """A built-in suite name (scenarios/suites/NAME.yaml) or a path to a YAML file."""
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ConfigError.single(("suite",), "no such suite file", found=ref, file=COMMAND_LINE)
        return candidate
    builtin = registry.builtin_suites_dir() / f"{ref}.yaml"
    if builtin.exists():
        return builtin
    names = sorted(p.stem for p in registry.builtin_suites_dir().glob("*.yaml"))
    raise ConfigError.single(
        ("suite",),
        f"unknown suite; expected a path to a YAML file or one of {', '.join(names)}",
        found=ref,
        choices=names,
        file=COMMAND_LINE,
    )


MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _allowed_imports(raw: dict[str, Any], resolver: Any) -> tuple[str, ...]:
    """The suite's allow_imports: module names whose code the user trusts (see registry)."""
    value = raw.get("allow_imports", [])
    if not isinstance(value, list) or not all(isinstance(m, str) and MODULE_NAME.fullmatch(m) for m in value):
        raise resolver.error([Problem(("allow_imports",), "expected a list of module names such as [mypkg, "
                                      "mypkg.envs]", value, True)])
    return tuple(value)


def load_suite(ref: str, overrides: list[str] | None = None) -> Suite:
    path = suite_path(ref)
    raw, lines = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError.single((), "a suite file must be a mapping of keys", found=type(raw).__name__, file=str(path))
    overrides, mode = split_params_mode(list(overrides or []))
    touched = apply_overrides(raw, overrides)
    resolver = _Resolver(path, lines, touched)
    problems = number_problems(raw)
    if problems:
        raise resolver.error(problems)
    gate = registry.ALLOWED_IMPORTS.set(_allowed_imports(raw, resolver))
    try:
        suite = resolver.resolve(raw, overrides)
    finally:
        registry.ALLOWED_IMPORTS.reset(gate)
    if mode == "tuned":
        apply_tuned_params(suite)
        suite.overrides.append("params=tuned")
    return suite


class _Resolver:
    """Turns the raw mapping into a `Suite`, collecting located errors."""

    def __init__(self, path: Path, lines: LineIndex, touched: set[tuple[str, ...]]) -> None:
        self.file = str(path)
        self.lines = lines
        self.touched = touched
        self.inline_paths: dict[str, tuple[Any, ...]] = {}  # algorithm -> where its inline params are
        self.configurations: dict[str, ConfigurationModel] = {}

    def error(self, problems: list[Problem], prefix: tuple[Any, ...] = ()) -> ConfigError:
        located = []
        for p in problems:
            full = tuple(prefix) + p.path
            from_cli = any(full[: len(t)] == t for t in self.touched)
            file = COMMAND_LINE if from_cli else self.file
            line = None if from_cli else self.lines.line_of(full)
            located.append(dataclasses.replace(p, path=full, file=file, line=line))
        return ConfigError(located)

    def validate(self, model: type[BaseModel], data: Any, prefix: tuple[Any, ...]) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self.error(pydantic_problems(exc, model, data), prefix) from None

    def relocate(self, exc: ConfigError, prefix: tuple[Any, ...]) -> ConfigError:
        return self.error(exc.problems, prefix)

    def resolve(self, raw: dict[str, Any], overrides: list[str]) -> Suite:
        model = self.validate(SuiteModel, raw, ())
        name = self.suite_name(model)
        seeds = list(range(model.seeds)) if isinstance(model.seeds, int) else list(model.seeds)
        problems: list[Problem] = []
        self.configurations = self.checked_configurations(model)

        def attempt(fn: Any, *args: Any) -> Any:
            """Run one independent check, keeping its problems so all are reported at once."""
            try:
                return fn(*args)
            except ConfigError as exc:
                problems.extend(exc.problems)
                return None

        algorithms = attempt(self.algorithms, model)
        attempt(self.check_param_tables, model, algorithms or {})
        choice = attempt(self.budget_choice, model)
        tasks: list[Task] = []
        if choice is not None:
            for tname, t in model.tasks.items():
                budget = attempt(self.budget, tname, t, *choice)  # reported even where the task has other problems
                tasks.append(attempt(self.task, tname, t, model, algorithms or {}, budget or {}))
        claims = attempt(self.claims, model, [t for t in tasks if t is not None], choice, algorithms or {}) \
            if choice and not problems else None
        if problems:
            unique = {(p.path, p.message): p for p in problems}
            raise ConfigError(list(unique.values()))
        budget_name = choice[0]
        workers = (os.cpu_count() or 1) if model.workers == "auto" else model.workers
        return Suite(
            name=name,
            path=self.file,
            description=model.description,
            metric=model.metric,
            seeds=seeds,
            budget_name=budget_name,
            algorithms=list(algorithms),
            tasks=tasks,
            store=model.store or default_store(name),
            checkpoint_dir=model.checkpoint_dir or default_checkpoint_dir(name, model.store),
            checkpoint_every=model.checkpoint_every,
            workers=int(workers),
            device=model.device,
            executor=model.executor,
            retry_failed=model.retry_failed,
            reclaim_running=model.reclaim_running,
            ray=RaySettings(model.ray_address, model.cpus_per_run, model.gpus_per_run, model.max_retries,
                            local_cpus=max(1, math.ceil(int(workers) * model.cpus_per_run))),
            overrides=overrides,
            tuning=model.tuning,
            claims=claims or [],
            plugins={name: c.algorithm for name, c in self.configurations.items()},
        )

    def checked_configurations(self, model: SuiteModel) -> dict[str, ConfigurationModel]:
        """Each configuration names a registered algorithm, under a name of its own."""
        registered = set(registry.algorithm_names())
        problems = []
        for name, c in model.configurations.items():
            path = ("configurations", name)
            if not NAME_PATTERN.fullmatch(name):
                problems.append(Problem(path, "expected an identifier: letters, digits, _ or -", name, True))
            elif name in registered:
                problems.append(Problem(path, "a registered algorithm has this name; expected a name of its own",
                                        name, True))
            try:
                registry.get_algorithm(c.algorithm, path + ("algorithm",))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise self.error(problems)
        return dict(model.configurations)

    def algorithm_class(self, name: str, path: tuple[Any, ...] = ("algorithms",)) -> Any:
        """The registered class that runs `name`: an algorithm's own, or a configuration's."""
        configuration = self.configurations.get(name)
        try:
            if configuration is not None:
                return registry.get_algorithm(configuration.algorithm, ("configurations", name, "algorithm"))
            return registry.get_algorithm(name, path)
        except ConfigError as exc:
            if configuration is None and exc.problems and exc.problems[0].message.startswith("unknown algorithm"):
                names = [*registry.algorithm_names(), *self.configurations]
                raise self.error([Problem(path, "unknown algorithm; expected a registered algorithm or one of the "
                                          "suite's configurations", name, True, closest(name, names))]) from None
            raise self.relocate(exc, ()) from None

    def claims(self, model: SuiteModel, tasks: list[Task], choice: tuple[str, dict[str, dict[str, Any]]],
               algorithms: dict[str, dict[str, Any]]) -> list[Claim]:
        by_name = {t.name: t for t in tasks}
        out, problems = [], []
        for name, c in model.claims.items():
            try:
                out.append(self.claim(name, c, model, by_name, choice, algorithms))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        return out

    def claim(self, name: str, c: ClaimModel, model: SuiteModel, tasks: dict[str, Task],
              choice: tuple[str, dict[str, dict[str, Any]]], algorithms: dict[str, dict[str, Any]]) -> Claim:
        from harness import comparisons

        path = ("claims", name)
        if not NAME_PATTERN.fullmatch(name):
            raise self.error([Problem(path, "expected an identifier: letters, digits, _ or -", name, True)])
        for where, algorithm in [(("better",), c.better), *((("than", i), a) for i, a in enumerate(c.than))]:
            self.algorithm_class(algorithm, path + where)
        if c.better in c.than or len(set(c.than)) != len(c.than):
            raise self.error([Problem(path + ("than",), f"expected distinct algorithms other than {c.better}",
                                      c.than, True)])
        compared = (c.better, *c.than)
        for algorithm in c.reported:
            if algorithm not in compared:
                raise self.error([Problem(path + ("reported", algorithm), "not an algorithm the claim compares; "
                                          f"expected one of {', '.join(compared)}", algorithm, True,
                                          closest(algorithm, compared))])
        seeds = tuple(range(c.seeds)) if isinstance(c.seeds, int) else tuple(c.seeds)
        level = c.alpha / len(c.than)
        need = comparisons.fewest_seeds(c.test, level)
        if need is None or len(seeds) < need:
            holm = f"alpha {c.alpha:g} over {len(c.than)} comparisons, Holm" if len(c.than) > 1 else f"alpha {c.alpha:g}"
            raise self.error([Problem(path + ("seeds",), f"{c.test} with {len(seeds)} seeds per algorithm cannot reach "
                                      f"p <= {level:g} ({holm}); expected at least {need} seeds", len(seeds), True)])
        if c.budget is not None and c.budget not in PROFILES:
            raise self.error([Problem(path + ("budget",), f"unknown budget profile; expected one of {', '.join(PROFILES)}",
                                      c.budget, True, closest(c.budget, PROFILES))])
        budget_name = c.budget or choice[0]
        metric = c.metric or model.metric
        budget: dict[str, int] = {}
        if not c.unrunnable:
            task = tasks.get(c.task)
            if task is None:
                raise self.error([Problem(path + ("task",), f"unknown task; expected one of {', '.join(tasks)} (or "
                                          "say why it cannot run with unrunnable:)", c.task, True, closest(c.task, tasks))])
            self.check_claim_target(c, task, metric, path)
            budget = task.budget if budget_name == choice[0] else self.budget(task.name, model.tasks[task.name],
                                                                             budget_name, choice[1])
            self.add_claimed(task, c, model, algorithms, path)
        return Claim(name=name, source=c.source, statement=c.statement, task=c.task, split=c.split,
                     composition=c.composition, metric=metric, better=c.better, than=tuple(c.than),
                     direction=c.direction, seeds=seeds, test=c.test, alpha=c.alpha, min_effect=c.min_effect,
                     budget_name=budget_name, budget=budget, success_at=c.success_at, unrunnable=c.unrunnable,
                     reported=tuple(c.reported.items()))

    def check_claim_target(self, c: ClaimModel, task: Task, metric: str, path: tuple[Any, ...]) -> None:
        """The split and composition exist; a yes/no test gets yes/no outcomes."""
        from harness import comparisons

        if c.split not in task.splits:
            raise self.error([Problem(path + ("split",), f"task {task.name} has no {c.split} split; expected one of "
                                      f"{', '.join(task.splits)}", c.split, True)])
        names = [comp.name for comp in task.splits[c.split]]
        if c.composition is not None and c.composition not in names:
            raise self.error([Problem(path + ("composition",), f"not a {c.split} composition of {task.name}; expected "
                                      f"one of {', '.join(names)}", c.composition, True, closest(c.composition, names))])
        outcomes = registry.get_env(task.env).per_run_outcomes
        if c.test in comparisons.BINARY_TESTS and c.success_at is None and metric not in outcomes:
            raise self.error([Problem(path + ("test",), f"{c.test} compares per-seed yes/no outcomes and {metric} on "
                                      f"{task.name} is a score; set success_at or use mann_whitney, wilcoxon or "
                                      "bootstrap", c.test, True)])

    def add_claimed(self, task: Task, c: ClaimModel, model: SuiteModel, algorithms: dict[str, dict[str, Any]],
                    path: tuple[Any, ...]) -> None:
        """Params for the claim's algorithms that the task does not run, as if it ran them."""
        missing = [a for a in (c.better, *c.than) if a not in task.params and a not in task.claimed]
        if not missing:
            return
        backend = registry.get_env(task.env)
        discrete = backend.describe(task.args, [x.spec for comps in task.splits.values() for x in comps]).discrete
        space = "discrete" if discrete else "continuous"
        for algorithm in missing:
            if space not in action_spaces_of(self.algorithm_class(algorithm)):
                raise self.error([Problem(path, f"{algorithm} cannot act in task {task.name}'s {space} action space",
                                          algorithm, True)])
            task.claimed[algorithm] = self.params(algorithm, model, model.tasks[task.name], task.name,
                                                  algorithms.get(algorithm, {}))

    def suite_name(self, model: SuiteModel) -> str:
        """The name becomes part of paths (runs/NAME.db, runs/checkpoints/NAME): an identifier only,
        so that `name: ../../x` cannot point the store or checkpoints elsewhere."""
        name = model.name if model.name is not None else Path(self.file).stem
        if NAME_PATTERN.fullmatch(name):
            return name
        if model.name is None:
            message = ("the suite is named after its file, whose name is not an identifier; expected "
                       "letters, digits, _ or - (or set name:)")
        else:
            message = "expected an identifier: letters, digits, _ or - (no path)"
        raise self.error([Problem(("name",), message, name, True)])

    def algorithms(self, model: SuiteModel) -> dict[str, dict[str, Any]]:
        """name -> suite-level params given inline ({name: qmix, params: {...}} or {qmix: {...}})."""
        out: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(model.algorithms):
            path = ("algorithms", i)
            params: dict[str, Any]
            if isinstance(entry, str):
                name, params = entry, {}
            elif len(entry) == 1 and "name" not in entry:
                (name, params), = entry.items()
                params = params or {}
                self.inline_paths[str(name)] = path + (str(name),)
            else:
                unknown = set(entry) - {"name", "params"}
                if unknown or "name" not in entry:
                    raise self.error([Problem(path, "expected an algorithm name, {name: NAME, params: {...}} or {NAME: {...}}", entry, True)])
                name, params = entry["name"], entry.get("params") or {}
                self.inline_paths[str(name)] = path + ("params",)
            self.algorithm_class(str(name), path)
            if name in out:
                raise self.error([Problem(path, "algorithm listed twice", name, True)])
            out[str(name)] = dict(params)
        return out

    def budget_choice(self, model: SuiteModel) -> tuple[str, dict[str, dict[str, Any]]]:
        unknown = [k for k in model.budgets if k not in PROFILES]
        if unknown:
            raise self.error([Problem(("budgets", unknown[0]), f"unknown budget profile; expected one of {', '.join(PROFILES)}",
                                      unknown[0], True, closest(unknown[0], PROFILES))])
        profiles = {p: {**DEFAULT_BUDGETS[p], **model.budgets.get(p, {})} for p in PROFILES}
        if isinstance(model.budget, dict):
            return "custom", {**profiles, "custom": dict(model.budget)}
        if model.budget not in PROFILES:
            raise self.error([Problem(("budget",), f"expected a profile ({', '.join(PROFILES)}) or a mapping with env_steps, eval_every, eval_episodes",
                                      model.budget, True, closest(model.budget, PROFILES))])
        return model.budget, profiles

    def budget(self, tname: str, task: TaskModel, name: str, profiles: dict[str, dict[str, Any]]) -> dict[str, int]:
        merged = {**profiles[name], **task.budgets.get(name, {})}
        prefix: tuple[Any, ...] = ("tasks", tname, "budgets", name) if name in task.budgets else (
            ("budget",) if name == "custom" else ("budgets", name))
        b = self.validate(BudgetModel, merged, prefix)
        out = b.model_dump()
        out["absolute_episodes"] = out["absolute_episodes"] or 10 * b.eval_episodes
        return out

    def task(self, tname: str, task: TaskModel, model: SuiteModel, algorithms: dict[str, dict[str, Any]],
             budget: dict[str, int]) -> Task:
        prefix = ("tasks", tname)
        env = self.backend_name(task.env, model.backend, prefix)
        try:
            backend = registry.get_env(env, prefix + ("env",))
        except ConfigError as exc:
            raise self.relocate(exc, ()) from None
        args = self.validate(backend.Args, task.args, prefix + ("args",))
        missing = backend.missing_requirements(args)
        if missing:
            where = ("backend",) if env != task.env else prefix + ("env",)
            raise self.error([Problem(where, missing, env, True)])
        splits = self.splits(backend, args, task, prefix)
        try:
            backend.check_task(args, {s: [c.spec for c in comps] for s, comps in splits.items()})
        except ConfigError as exc:
            raise self.relocate(exc, prefix) from None
        discrete = backend.describe(args, [c.spec for comps in splits.values() for c in comps]).discrete
        self.check_rollout(task, env, backend, prefix)
        chosen, skipped = self.task_algorithms(task, tname, algorithms, discrete)
        params = {a: self.params(a, model, task, tname, algorithms[a]) for a in chosen}
        reference = task.reference.model_dump() if task.reference else None
        return Task(tname, env, args, task.num_envs, splits, budget, params, skipped, task.rollout,
                    task.rollout_steps, task.description, reference)

    def check_rollout(self, task: TaskModel, env: str, backend: Any, prefix: tuple[Any, ...]) -> None:
        """`rollout: continuous` needs a backend that resets its envs one by one."""
        if task.rollout == "continuous" and not getattr(backend, "supports_autoreset", False):
            raise self.error([Problem(prefix + ("rollout",), f"backend {env} cannot reset its environments one by "
                                      "one (no auto-reset); expected episodes", task.rollout, True)])
        if task.rollout == "episodes" and task.rollout_steps is not None:
            raise self.error([Problem(prefix + ("rollout_steps",), "only applies to rollout: continuous; "
                                      "remove it or set rollout: continuous", task.rollout_steps, True)])

    def backend_name(self, env: str, swap: str | None, prefix: tuple[Any, ...]) -> str:
        """`backend=NAME` replaces the env of every task whose backend is of NAME's family."""
        if swap is None:
            return env
        try:
            target = registry.get_env(swap, ("backend",))
            current = registry.get_env(env, prefix + ("env",))
        except ConfigError as exc:
            raise self.relocate(exc, ()) from None
        family = getattr(target, "family", None)
        return swap if family is not None and getattr(current, "family", None) == family else env

    def task_algorithms(self, task: TaskModel, tname: str, algorithms: dict[str, Any],
                        discrete: bool) -> tuple[list[str], dict[str, str]]:
        """The suite's algorithms this task runs, and why the others do not."""
        space = "discrete" if discrete else "continuous"
        fits = {a: space in action_spaces_of(self.algorithm_class(a)) for a in algorithms}
        if task.algorithms is None:
            skipped = {a: f"{space} actions are not supported by {a}" for a, ok in fits.items() if not ok}
            return [a for a, ok in fits.items() if ok], skipped
        problems = []
        for i, name in enumerate(task.algorithms):
            path = ("tasks", tname, "algorithms", i)
            if name not in algorithms:
                problems.append(Problem(path, f"not one of the suite's algorithms ({', '.join(algorithms)})",
                                        name, True, closest(name, algorithms)))
            elif not fits[name]:
                problems.append(Problem(path, f"{name} does not support this task's {space} actions", name, True))
        if problems:
            raise self.error(problems)
        chosen = [a for a in algorithms if a in task.algorithms]
        return chosen, {a: "not in the task's algorithms list" for a in algorithms if a not in chosen}

    def splits(self, backend: Any, args: Any, task: TaskModel, prefix: tuple[Any, ...]) -> dict[str, list[Composition]]:
        splits: dict[str, list[Composition]] = {}
        for split in SPLITS:
            entries = getattr(task, split)
            if entries is None:
                continue
            if not entries:
                raise self.error([Problem(prefix + (split,), "expected at least one composition (or leave the key out)")])
            splits[split] = [self.composition(backend, args, e, prefix + (split, i)) for i, e in enumerate(entries)]
        if "train" not in splits:
            try:
                defaults = backend.default_compositions(args)
            except ConfigError as exc:
                raise self.relocate(exc, prefix) from None
            splits = {"train": [Composition(backend.composition_name(args, c), 1.0, c) for c in defaults], **splits}
        self.check_disjoint(splits, prefix)
        return splits

    def composition(self, backend: Any, args: Any, entry: Any, path: tuple[Any, ...]) -> Composition:
        if not isinstance(entry, dict):
            raise self.error([Problem(path, "expected a mapping describing a team composition", entry, True)])
        entry = dict(entry)
        name, weight = entry.pop("name", None), entry.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise self.error([Problem(path + ("weight",), "expected a positive finite number", weight, True)])
        spec = self.validate(backend.Composition, entry, path)
        return Composition(str(name) if name else backend.composition_name(args, spec), float(weight), spec)

    def check_disjoint(self, splits: dict[str, list[Composition]], prefix: tuple[Any, ...]) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for split, comps in splits.items():
            for i, comp in enumerate(comps):
                key = comp.spec.model_dump_json()
                if key in seen and seen[key][0] != split:
                    other, j = seen[key]
                    raise self.error([Problem(prefix + (split, i), f"composition '{comp.name}' is also in {other}[{j}]: "
                                              "train, validation and test compositions must be disjoint")])
                seen.setdefault(key, (split, i))
            names = [c.name for c in comps]
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup:
                raise self.error([Problem(prefix + (split,), f"composition '{dup}' appears twice")])

    def params(self, algorithm: str, model: SuiteModel, task: TaskModel, tname: str, inline: dict[str, Any]) -> dict[str, Any]:
        """Merge defaults < suite '*' < suite per-algorithm < task '*' < task per-algorithm. A
        configuration is its algorithm as this suite runs it, changed by its own params:
        '*' < the algorithm's < the configuration's < its own tables, suite then task."""
        cls = self.algorithm_class(algorithm)
        merged: dict[str, Any] = {}
        configuration = self.configurations.get(algorithm)
        base = [] if configuration is None else [
            (("params", configuration.algorithm), model.params.get(configuration.algorithm, {})),
            (("configurations", algorithm, "params"), configuration.params)]
        task_base = [] if configuration is None else [
            (("tasks", tname, "params", configuration.algorithm), task.params.get(configuration.algorithm, {}))]
        layers = [
            (("params", "*"), model.params.get("*", {})),
            *base,
            (self.inline_paths.get(algorithm, ("algorithms",)), inline),
            (("params", algorithm), model.params.get(algorithm, {})),
            (("tasks", tname, "params", "*"), task.params.get("*", {})),
            *task_base,
            (("tasks", tname, "params", algorithm), task.params.get(algorithm, {})),
        ]
        known = {f.name: f for f in dataclasses.fields(cls.Config)}
        hints = typing.get_type_hints(cls.Config)
        for path, layer in layers:
            for key, value in layer.items():
                if key not in known:
                    if path[-1] == "*":
                        continue  # '*' applies to every algorithm that has the field
                    raise self.error([Problem(path + (key,), f"unknown parameter of {algorithm}; expected one of {', '.join(known)}",
                                              key, True, closest(key, known))])
                merged[key] = self.coerce(hints.get(key, Any), value, path + (key,))
        return merged

    def check_param_tables(self, model: SuiteModel, algorithms: dict[str, Any]) -> None:
        """Typos in `params` must not be ignored silently: every table names a known algorithm
        (or '*'), and every '*' field belongs to at least one algorithm."""
        names = set(registry.algorithm_names()) | set(algorithms) | set(self.configurations)
        fields = {f.name for n in names for f in dataclasses.fields(self.algorithm_class(n).Config)}
        tables = [(("params",), model.params)] + [(("tasks", t, "params"), task.params) for t, task in model.tasks.items()]
        problems = []
        for prefix, table in tables:
            for name, values in table.items():
                if name == "*":
                    problems += [Problem(prefix + ("*", k), "no algorithm has this parameter", k, True, closest(k, fields))
                                 for k in values if k not in fields]
                elif name not in names:
                    problems.append(Problem(prefix + (name,), f"unknown algorithm; expected '*' or one of {', '.join(sorted(names))}",
                                            name, True, closest(name, names)))
        if problems:
            raise self.error(problems)

    def coerce(self, hint: Any, value: Any, path: tuple[Any, ...]) -> Any:
        try:
            return TypeAdapter(hint).validate_python(value)
        except ValidationError as exc:
            msg = expected_phrase(exc.errors()[0]["msg"])
            raise self.error([Problem(path, msg, value, True)]) from None


def build_config(cls: Any, params: dict[str, Any]) -> Any:
    """The algorithm's Config with validated overrides applied."""
    return cls.Config(**params)
