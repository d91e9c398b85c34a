"""The leaderboard of a suite, computed from the results store: every number with its CI.

`collect` turns the store into one JSON-able document (what `leaderboard.json` holds);
`table` renders its headline rows for the terminal. Files are written by
`harness.report.files`. Seeds are the unit of replication: an estimate's interval comes from
a bootstrap over runs, stratified by composition (and by task for cross-task aggregates),
with each stratum resampled at its real number of runs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

from harness import stats
from harness.config import Suite, Task
from harness.registry import get_env, took_no_gradient_step
from harness.run.plan import RunSpec, plan
from harness.run.store import Store

OTHER_METRIC = {"return": "win_rate", "win_rate": "return"}
SPLIT_ORDER = ("train", "validation", "test")


@dataclass(frozen=True)
class Bootstrap:
    """How every interval of a report is computed (recorded in the leaderboard's protocol)."""

    reps: int = 2000
    confidence: float = 0.95
    method: str = "expanded"
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        return {"reps": self.reps, "confidence": self.confidence, "method": self.method, "seed": self.seed}


# ---------------------------------------------------------------------------------------------
# Reading the store


def _cells_at(evals: list[dict[str, Any]], kind: str, step: int | None) -> dict[tuple[str, str, str], float]:
    """(split, composition, metric) -> value of the `kind` evaluation at `step` (None: the last)."""
    if step is None:
        step = max((r["env_steps"] for r in evals if r["kind"] == kind), default=None)
    return {(r["split"], r["composition"], r["metric"]): r["value"]
            for r in evals if r["kind"] == kind and r["env_steps"] == step}


@dataclass
class RunRecord:
    spec: RunSpec
    status: str  # done, failed, pending, running, or missing (never started)
    reason: str | None
    env_steps: int | None
    seconds: float | None
    evals: list[dict[str, Any]]
    grad_steps: int | None = None
    # Every table of a report reads the same few evaluations of a run: index them once.
    _cells: dict[tuple[str, int | None], dict[tuple[str, str, str], float]] = field(
        default_factory=dict, repr=False, compare=False)

    def on_grid(self) -> dict[int, int]:
        """Grid step -> the env steps of the curve evaluation placed there (see `grid_step`)."""
        budget = self.spec.budget
        return {grid_step(r["env_steps"], budget["eval_every"], budget["env_steps"]): r["env_steps"]
                for r in self.evals if r["kind"] == "curve"}

    def cells(self, kind: str = "curve", step: int | None = None) -> dict[tuple[str, str, str], float]:
        """(split, composition, metric) -> value at evaluation `step` (None: the last of `kind`;
        "curve": during training, "absolute": the best checkpoint re-evaluated)."""
        if (kind, step) not in self._cells:
            self._cells[(kind, step)] = _cells_at(self.evals, kind, step)
        return self._cells[(kind, step)]

    def final_scores(self, kind: str = "curve") -> dict[str, dict[str, float]]:
        """split -> metric -> value at the last evaluation of `kind`, averaged over the split's
        compositions."""
        acc: dict[tuple[str, str], list[float]] = defaultdict(list)
        for (split, _composition, metric), value in self.cells(kind).items():
            acc[(split, metric)].append(value)
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for (split, metric), values in acc.items():
            out[split][metric] = float(np.mean(values))
        return dict(out)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.spec.run_id, "task": self.spec.task, "algorithm": self.spec.algorithm,
                "seed": self.spec.seed, "status": self.status, "reason": self.reason,
                "env_steps": self.env_steps, "grad_steps": self.grad_steps, "seconds": self.seconds,
                "final": self.final_scores(), "absolute": self.final_scores("absolute")}


def grid_step(env_steps: int, eval_every: int, budget: int) -> int:
    """The point of the evaluation schedule {0, eval_every, 2 eval_every, ..., budget} whose
    crossing triggered an evaluation at `env_steps`: the largest one not above it. A run
    evaluates after the first round of collection that reaches a point, so its evaluations land
    up to one round past the schedule (with continuous rollouts, at a different count in every
    run); curves place them on the schedule, which every run of a task shares."""
    if env_steps >= budget:
        return budget
    return (env_steps // eval_every) * eval_every


def read_runs(suite: Suite, store: Store) -> list[RunRecord]:
    specs = plan(suite)
    by_id = {r["run_id"]: r for r in store.runs(run_ids=[s.run_id for s in specs])}
    done = [s.run_id for s in specs if by_id.get(s.run_id, {}).get("status") == "done"]
    evals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.evals(done):
        evals[row["run_id"]].append(row)
    records = []
    for spec in specs:
        row = by_id.get(spec.run_id, {})
        records.append(RunRecord(spec, row.get("status", "missing"), row.get("reason"), row.get("env_steps"),
                                 row.get("seconds"), evals.get(spec.run_id, []), row.get("grad_steps")))
    return records


# ---------------------------------------------------------------------------------------------
# Score tables: [runs, strata] with NaN where a run has no score


def _estimates(x: np.ndarray, boot: Bootstrap, outcome: bool = False) -> dict[str, Any]:
    """Mean and IQM of a score table, each with its stratified interval (None unless every
    stratum has a score: dropping a composition would silently change what is estimated). For a
    metric the backend declares a per-run yes/no outcome, the mean's interval is Wilson's over
    the runs when each run's score (its compositions' mean) is 0 or 1, one trial per run; a run
    scoring between (some compositions won, some not) sends the estimate back to the bootstrap."""
    if x.size == 0 or not np.isfinite(x).any(axis=0).all():
        return {"mean": None, "iqm": None}
    def bootstrap(name: str) -> dict[str, Any]:
        return _per_run(stats.stratified_bootstrap(x, name, **boot.kwargs()), x, boot.method)

    per_run = np.nanmean(x, axis=1)  # compositions of one run are not independent trials
    if outcome and stats.is_binary(per_run):  # no mean bootstrap computed only to be replaced
        return {"mean": _per_run(stats.wilson_mean(per_run, boot.confidence), x, "wilson"), "iqm": bootstrap("iqm")}
    return {"mean": bootstrap("mean"), "iqm": bootstrap("iqm")}


def _per_run(est: stats.Estimate, x: np.ndarray, method: str) -> dict[str, Any]:
    """The estimate with `n` = the runs behind it (stats counts scores: runs x compositions)
    and the interval's method."""
    return {**est.as_dict(), "n": int(np.isfinite(x).any(axis=1).sum()), "method": method}


def _wall_seconds(runs: list[RunRecord]) -> np.ndarray:
    """[done runs, 1]: each run's wall time over all its attempts (training and evaluation)."""
    return np.array([[np.nan if r.seconds is None else r.seconds] for r in runs], dtype=np.float64).reshape(-1, 1)


def _column_table(runs: list[RunRecord], split: str, compositions: list[str], metric: str,
                  kind: str = "curve", step: int | None = None) -> np.ndarray:
    """[done runs, compositions]: each run's score on each composition of the split at
    evaluation `step` (None: the last one, i.e. the final score)."""
    table = np.full((len(runs), len(compositions)), np.nan)
    for i, run in enumerate(runs):
        cells = run.cells(kind, step)
        for j, name in enumerate(compositions):
            table[i, j] = cells.get((split, name, metric), np.nan)
    return table


def _split_scores(runs: list[RunRecord], split: str, metric: str) -> np.ndarray:
    """Per run, the mean over the split's compositions (NaN where a run has none)."""
    return np.array([r.final_scores().get(split, {}).get(metric, np.nan) for r in runs])


def _normaliser(task: Task, metric: str) -> tuple[float, float] | None:
    """(random, best) for the task in `metric`: win rates are already on [0, 1]."""
    if metric == "win_rate":
        return (0.0, 1.0)
    if task.reference:
        return (task.reference["random"], task.reference["best"])
    return None


def unusable_reference(ref: tuple[float, float]) -> str | None:
    """Why reference scores cannot normalise (a suite may carry `.nan` or `.inf`, or best equal
    to random): the aggregates leave the task out with this reason rather than fail."""
    random, best = ref
    if not (np.isfinite(random) and np.isfinite(best)):
        return f"reference scores not finite: random {random}, best {best}"
    if best == random:
        return f"reference best equals random ({best})"
    return None


# ---------------------------------------------------------------------------------------------
# The leaderboard document


class Leaderboard:
    """Builds the document section by section from the runs of one suite."""

    def __init__(self, suite: Suite, runs: list[RunRecord], boot: Bootstrap) -> None:
        self.suite = suite
        self.runs = runs
        self.boot = boot
        self.metric = suite.metric
        self.sizes = {t.name: team_sizes(t) for t in suite.tasks}
        self.done: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        self.group: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        for run in runs:
            self.group[(run.spec.task, run.spec.algorithm)].append(run)
            if run.status == "done":
                self.done[(run.spec.task, run.spec.algorithm)].append(run)

    def compositions(self, task: Task, split: str) -> list[str]:
        return [c.name for c in task.splits.get(split, [])]

    def outcome(self, task: Task, metric: str) -> bool:
        """Whether `metric` is a per-run yes/no outcome on this task's backend."""
        return metric in get_env(task.env).per_run_outcomes

    def splits(self, task: Task) -> list[str]:
        return [s for s in SPLIT_ORDER if s in task.splits]

    def cells(self) -> list[dict[str, Any]]:
        """Per task, split, composition and algorithm: runs behind it, mean and IQM with CIs."""
        rows = []
        for task in self.suite.tasks:
            sizes = self.sizes[task.name]
            for split in self.splits(task):
                for name in self.compositions(task, split):
                    for algorithm in task.algorithms:
                        runs = self.done[(task.name, algorithm)]
                        row: dict[str, Any] = {"task": task.name, "split": split, "composition": name,
                               "team_size": sizes.get(name), "algorithm": algorithm}
                        for metric in (self.metric, OTHER_METRIC[self.metric]):
                            x = _column_table(runs, split, [name], metric)
                            row[metric] = _estimates(x[np.isfinite(x[:, 0])], self.boot, self.outcome(task, metric))
                        rows.append(row)
        return rows

    def by_team_size(self) -> list[dict[str, Any]]:
        """Zero-shot transfer: per task, algorithm and team size, the score over every composition
        of that size (any split; bootstrap stratified by composition) and the splits it belongs to."""
        rows = []
        for task in self.suite.tasks:
            sizes = self.sizes[task.name]
            by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
            for split in self.splits(task):
                for name in self.compositions(task, split):
                    if sizes.get(name) is not None:
                        by_size[int(sizes[name])].append((split, name))  # type: ignore[arg-type]
            if len(by_size) < 2:
                continue  # one team size: nothing to plot against
            for algorithm in task.algorithms:
                runs = self.done[(task.name, algorithm)]
                for size, members in sorted(by_size.items()):
                    columns = [_column_table(runs, split, [name], self.metric) for split, name in members]
                    x = np.hstack(columns) if runs else np.empty((0, len(members)))
                    ok = x.size and np.isfinite(x).any(axis=0).all()
                    rows.append({"task": task.name, "algorithm": algorithm, "team_size": size,
                                 "splits": sorted({s for s, _ in members}, key=SPLIT_ORDER.index),
                                 "score": _estimates(x, self.boot, self.outcome(task, self.metric))["mean"] if ok else None})
        return rows

    def split_rows(self) -> list[dict[str, Any]]:
        """Per task, split and algorithm: the score over the split's compositions (bootstrap
        stratified by composition), the absolute metric, and what ran."""
        rows = []
        for task in self.suite.tasks:
            for split in self.splits(task):
                names = self.compositions(task, split)
                for algorithm in task.algorithms:
                    group, runs = self.group[(task.name, algorithm)], self.done[(task.name, algorithm)]
                    row: dict[str, Any] = {
                        "task": task.name, "split": split, "algorithm": algorithm, "planned": len(group),
                        "done": len(runs), "failed": sum(r.status == "failed" for r in group),
                        "missing": sum(r.status not in ("done", "failed") for r in group),
                    }
                    for metric in (self.metric, OTHER_METRIC[self.metric]):
                        row[metric] = _estimates(_column_table(runs, split, names, metric), self.boot,
                                                 self.outcome(task, metric))
                    row["absolute"] = _estimates(_column_table(runs, split, names, self.metric, "absolute"), self.boot,
                                                 self.outcome(task, self.metric))
                    row["wall_seconds"] = _estimates(_wall_seconds(runs), self.boot)
                    rows.append(row)
        return _rank(rows, self.metric)

    def generalization_gap(self) -> list[dict[str, Any]]:
        """Per task with train and test splits: train − test score of each run, with its CI."""
        rows = []
        for task in self.suite.tasks:
            if not {"train", "test"} <= set(task.splits):
                continue
            for algorithm in task.algorithms:
                runs = self.done[(task.name, algorithm)]
                train, test = _split_scores(runs, "train", self.metric), _split_scores(runs, "test", self.metric)
                keep = np.isfinite(train) & np.isfinite(test)
                gap = stats.generalization_gap(train[keep], test[keep], **self.boot.kwargs()) if keep.any() else None
                rows.append({"task": task.name, "algorithm": algorithm,
                             "gap": gap.as_dict() if gap else None})
        return rows

    def normalised_tables(self, split: str) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        """Per algorithm, [runs, (task, composition)] normalised scores over the tasks that have
        reference scores and this split; also the tasks used and those left out (and why)."""
        used, left_out = [], []
        columns: dict[str, list[np.ndarray]] = defaultdict(list)
        algorithms = self.suite.algorithms
        for task in self.suite.tasks:
            ref = _normaliser(task, self.metric)
            if split not in task.splits:
                continue
            if ref is None:
                left_out.append(f"{task.name} (no reference scores)")
                continue
            if why := unusable_reference(ref):
                left_out.append(f"{task.name} ({why})")
                continue
            if not set(algorithms) <= set(task.algorithms):
                left_out.append(f"{task.name} (not every algorithm runs on it)")
                continue
            used.append(task.name)
            for algorithm in algorithms:
                x = _column_table(self.done[(task.name, algorithm)], split, self.compositions(task, split), self.metric)
                columns[algorithm].append(stats.normalise(x, *ref) if len(x) else x)
        tables = {a: _stack_columns(cols) for a, cols in columns.items()}
        return tables, used, left_out

    def aggregates(self) -> list[dict[str, Any]]:
        """Across tasks, per split: mean, median, IQM and optimality gap of normalised scores,
        stratified by task and composition; pairwise probability of improvement."""
        out = []
        for split in SPLIT_ORDER:
            tables, used, left_out = self.normalised_tables(split)
            complete = {a: t for a, t in tables.items() if t.size and np.isfinite(t).any(axis=0).all()}
            left_out += [f"{a} (no finished run on some task or composition)" for a in tables if a not in complete]
            tables = complete
            if not used or not tables:
                continue
            estimates = stats.aggregate_intervals(tables, **self.boot.kwargs())
            poi = stats.pairwise_probability_of_improvement(
                tables, reps=self.boot.reps, confidence=self.boot.confidence, seed=self.boot.seed)
            out.append({
                "split": split, "tasks": used, "left_out": left_out,
                # n: the runs behind each aggregate (one run per task and seed)
                "algorithms": {a: {k: {**e.as_dict(), "n": sum(len(self.done[(t, a)]) for t in used)}
                                   for k, e in est.items()} for a, est in estimates.items()},
                "probability_of_improvement": [
                    {"x": a, "y": b, **e.as_dict()} for (a, b), e in poi.items()],
                "profile": self.profiles(tables),
            })
        return out

    def profiles(self, tables: dict[str, np.ndarray]) -> dict[str, Any]:
        finite = np.concatenate([t[np.isfinite(t)] for t in tables.values()])
        taus = np.linspace(min(0.0, float(finite.min())), max(1.0, float(finite.max())), 41)
        result: dict[str, Any] = {"taus": taus.tolist(), "algorithms": {}}
        for algorithm, table in tables.items():
            p = stats.performance_profile(table, taus, reps=self.boot.reps, confidence=self.boot.confidence,
                                          seed=self.boot.seed)
            result["algorithms"][algorithm] = {"fraction": p.fraction.tolist(), "low": p.low.tolist(),
                                               "high": p.high.tolist()}
        return result

    def pairwise_tests(self) -> list[dict[str, Any]]:
        """Per task and split, Welch's t and Mann-Whitney U between every pair of algorithms on
        per-run split scores, Holm-corrected across the pairs of that task and split."""
        out = []
        for task in self.suite.tasks:
            for split in self.splits(task):
                samples = {}
                for algorithm in task.algorithms:
                    scores = _split_scores(self.done[(task.name, algorithm)], split, self.metric)
                    samples[algorithm] = scores[np.isfinite(scores)].tolist()
                if len(samples) < 2:
                    continue
                tests = stats.pairwise_tests(samples)
                out.append({"task": task.name, "split": split, "pairs": [_clean(vars(t)) for t in tests]})
        return out

    def curves(self) -> list[dict[str, Any]]:
        """Sample efficiency: per task, split and algorithm, the IQM over runs and compositions
        at each point of the evaluation schedule (`grid_step`), with its stratified interval
        and the number of runs behind it (no interval from one run)."""
        out = []
        for task in self.suite.tasks:
            for split in self.splits(task):
                names = self.compositions(task, split)
                for algorithm in task.algorithms:
                    runs = self.done[(task.name, algorithm)]
                    grids = [run.on_grid() for run in runs]
                    points = []
                    for step in sorted({g for grid in grids for g in grid}):
                        here = [(run, grid[step]) for run, grid in zip(runs, grids, strict=True) if step in grid]
                        x = np.vstack([_column_table([run], split, names, self.metric, step=actual)
                                       for run, actual in here])
                        if np.isfinite(x).any(axis=0).all():
                            e = stats.stratified_bootstrap(x, "iqm", **self.boot.kwargs())
                            points.append({"env_steps": step, **_per_run(e, x, self.boot.method)})
                    out.append({"task": task.name, "split": split, "algorithm": algorithm, "points": points})
        return out

    def compute(self) -> list[dict[str, Any]]:
        """What the finished runs cost, per task and algorithm: env steps, gradient steps and
        run wall hours (training and evaluation, over every attempt; each run is one worker
        process), summed over seeds."""
        out = []
        for task in self.suite.tasks:
            for algorithm in task.algorithms:
                runs = self.done[(task.name, algorithm)]
                if runs:
                    out.append({"task": task.name, "algorithm": algorithm, "runs": len(runs),
                                "env_steps": sum(r.env_steps or 0 for r in runs),
                                # None where a run has no count (boards recomputed from files older than it)
                                "grad_steps": None if any(r.grad_steps is None for r in runs)
                                else sum(r.grad_steps or 0 for r in runs),
                                "wall_hours": sum(r.seconds or 0.0 for r in runs) / 3600})
        return out

    def problems(self) -> dict[str, list[dict[str, Any]]]:
        failed = [{"run": r.spec.label, "run_id": r.spec.run_id, "reason": r.reason}
                  for r in self.runs if r.status == "failed"]
        missing = [{"run": r.spec.label, "run_id": r.spec.run_id, "status": r.status}
                   for r in self.runs if r.status not in ("done", "failed")]
        untrained = [{"run": r.spec.label, "run_id": r.spec.run_id}
                     for r in self.runs if r.status == "done" and took_no_gradient_step(r.spec.implementation, r.grad_steps)]
        return {"failed": failed, "missing": missing, "untrained": untrained}

    def protocol(self) -> dict[str, Any]:
        suite = self.suite
        return {
            "budget": suite.budget_name,
            "budgets": {t.name: t.budget for t in suite.tasks},
            "seeds": suite.seeds,
            "evaluation": "greedy policy on every composition of every split at each eval_every env steps; "
                          "the score is the last evaluation; 'absolute' re-evaluates the best checkpoint "
                          "(chosen on validation compositions when a task has them, never on test)",
            "params": {t.name: t.params for t in suite.tasks},
            "tuning": tuning_protocol(suite),
            "bootstrap": vars(self.boot) | {"stratified_by": "composition (and task for aggregates)"},
            "ranking": RANKING,
        }

    def summary(self) -> dict[str, Any]:
        """The headline rows only (what `harness run` prints when it finishes)."""
        suite = self.suite
        return {"suite": suite.name, "metric": self.metric, "budget": suite.budget_name,
                "confidence": self.boot.confidence, "interval": self.boot.method, "rows": self.split_rows(),
                "runs": [r.as_dict() for r in self.runs], "notes": backend_notes(suite)}

    def document(self) -> dict[str, Any]:
        suite = self.suite
        return {
            "suite": suite.name, "description": suite.description, "metric": self.metric,
            "budget": suite.budget_name, "confidence": self.boot.confidence, "interval": self.boot.method,
            "algorithms": suite.algorithms,
            "tasks": [{"name": t.name, "env": t.env, "description": t.description, "reference": t.reference,
                       "splits": {s: [{"name": c, "team_size": self.sizes[t.name].get(c)} for c in self.compositions(t, s)]
                                  for s in self.splits(t)},
                       "skipped": t.skipped} for t in suite.tasks],
            "rows": self.split_rows(),
            "cells": self.cells(),
            "team_size": self.by_team_size(),
            "generalization_gap": self.generalization_gap(),
            "aggregates": self.aggregates(),
            "tests": self.pairwise_tests(),
            "curves": self.curves(),
            "compute": self.compute(),
            "problems": self.problems(),
            "protocol": self.protocol(),
            "runs": [r.as_dict() for r in self.runs],
            "notes": backend_notes(suite),
        }


def untuned_label(suite: Suite, algorithm: str) -> str:
    """Where an untuned algorithm's parameters come from: the suite (some task gives it
    parameters) or the algorithm's own defaults."""
    given = any(task.params.get(algorithm) for task in suite.tasks)
    return "not tuned: suite parameters" if given else "not tuned: algorithm defaults"


def tuning_protocol(suite: Suite) -> dict[str, str]:
    """Per algorithm: untuned (suite parameters or defaults), or tuned with which budget.
    Unequal tuning budgets are flagged on every tuned algorithm, since they make the
    comparison unfair."""
    if suite.tuned_params is None:
        return {a: untuned_label(suite, a) for a in suite.algorithms}
    records = suite.tuned_params
    budgets = {(r["trials"], r["seeds_per_trial"], r["budget"]) for r in records.values() if r}
    unequal = " (UNEQUAL tuning budgets across algorithms)" if len(budgets) > 1 else ""
    out = {}
    for algorithm, r in records.items():
        if r is None:
            out[algorithm] = f"{untuned_label(suite, algorithm)} (params=tuned, but it has no tuning record: UNTUNED)"
        else:
            out[algorithm] = (f"tuned: {r['trials']} trials x {r['seeds_per_trial']} seeds at budget "
                              f"{r['budget']}, on {r.get('split') or 'validation'} compositions{unequal}")
    return out


def _stack_columns(columns: list[np.ndarray]) -> np.ndarray:
    """Side by side, padding shorter tables (fewer done runs) with NaN rows."""
    rows = max((c.shape[0] for c in columns), default=0)
    padded = [np.vstack([c, np.full((rows - c.shape[0], c.shape[1]), np.nan)]) for c in columns]
    return np.hstack(padded) if padded else np.empty((0, 0))


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (float, np.floating)):
            out[k] = float(v) if np.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("ci_low") is None or b.get("ci_low") is None:
        return False
    return bool(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])


RANKING = ("ranked by mean; an algorithm whose interval overlaps the best one's shares rank 1 (=1: not "
           "distinguishable from the best); each other one is ranked 1 + the number of algorithms with a higher mean")


def _rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rank algorithms within each task and split by mean (see RANKING). Only the comparison with
    the best counts: ties through a chain of overlapping intervals would let an algorithm far below
    the best share its rank."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["split"])].append(row)
    for group in groups.values():
        scored = sorted((r for r in group if r[metric]["mean"] is not None),
                        key=lambda r: -r[metric]["mean"]["value"])
        means = [r[metric]["mean"]["value"] for r in scored]
        for i, row in enumerate(scored):
            tied = i > 0 and _overlap(row[metric]["mean"], scored[0][metric]["mean"])
            higher = sum(m > means[i] for m in means)  # equal means share a rank ("1224" ranking)
            row["rank"], row["tied"] = (1, True) if tied else (higher + 1, False)
        for row in group:
            row.setdefault("rank", None)
            row.setdefault("tied", False)
    return rows


def team_sizes(task: Task) -> dict[str, int | None]:
    """Composition name -> number of agents, asked of the backend (None if it cannot say)."""
    backend = get_env(task.env)
    sizes: dict[str, int | None] = {}
    for comps in task.splits.values():
        for c in comps:
            try:
                sizes[c.name] = int(backend.describe(task.args, [c.spec]).max_agents)
            except Exception:  # a backend that cannot describe one composition alone: no size
                sizes[c.name] = None
    return sizes


def collect(suite: Suite, store: Store | None, boot: Bootstrap | None = None,
            runs: list[RunRecord] | None = None, full: bool = True) -> dict[str, Any]:
    """The leaderboard document of `suite` from `runs`, or else from what `store` holds (missing
    runs included); `full=False` computes only the headline rows."""
    if runs is None:
        if store is None:
            raise ValueError("collect needs a store or the runs")
        runs = read_runs(suite, store)
    board = Leaderboard(suite, runs, boot or Bootstrap())
    return board.document() if full else board.summary()


def backend_notes(suite: Suite) -> list[str]:
    """What readers must know about the backends behind these numbers (e.g. SMAX is not SMACv2)."""
    notes = [getattr(get_env(t.env), "leaderboard_note", None) for t in suite.tasks]
    return list(dict.fromkeys(n for n in notes if n))


# ---------------------------------------------------------------------------------------------
# Terminal table


def fmt_estimate(est: dict[str, Any] | None, digits: int = 3) -> str:
    if not est or est.get("value") is None:
        return "-"
    if est["ci_low"] is None:
        return f"{est['value']:.{digits}g} [no CI, n={est['n']}]"
    return f"{est['value']:.{digits}g} [{est['ci_low']:.{digits}g}, {est['ci_high']:.{digits}g}]"


def runs_cell(row: dict[str, Any]) -> str:
    text = f"{row['done']}/{row['planned']}"
    extra = [f"{row[k]} {k}" for k in ("failed", "missing") if row.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")


def rank_cell(row: dict[str, Any]) -> str:
    """"1" the best, "=1" not distinguishable from it, "k" the others, "-" no score."""
    if row.get("rank") is None:
        return "-"
    return f"={row['rank']}" if row.get("tied") else str(row["rank"])


def ranked(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rows of one task and split in rank order (unscored last), by mean within a rank."""
    def mean(row: dict[str, Any]) -> float:
        est = row[metric]["mean"]
        return est["value"] if est and est["value"] is not None else -np.inf

    return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0, -mean(r)))


def table(report: dict[str, Any]) -> Table:
    """The terminal table: per task and split, algorithms in rank order (the boards' rule)."""
    metric = report["metric"]
    other = OTHER_METRIC[metric]
    method = {"expanded": "expanded bootstrap", "percentile": "percentile bootstrap", "bca": "BCa bootstrap"}
    interval = method.get(report.get("interval", "expanded"), "bootstrap")
    notes = "\n".join(f"Note: {n}" for n in report.get("notes", []))
    # Text, not str: rich would read brackets in a suite name or a plugin's note as markup (and
    # fail on "[/]").
    t = Table(title=Text(f"{report['suite']} ({report['budget']} budget): final greedy evaluation, mean "
                         f"[{report['confidence']:.0%} CI over seeds: {interval}, Wilson for yes/no outcomes]; "
                         "=1: not distinguishable from the best"),
              caption=Text(notes) if notes else None, caption_justify="left")
    for col in ("task", "split", "rank", "algorithm", metric, other.replace("_", " "), "wall s per run", "runs"):
        t.add_column(Text(col))
    previous_task = None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in report["rows"]:
        groups[(row["task"], row["split"])].append(row)
    for (task, split), rows in groups.items():
        if previous_task is not None and task != previous_task:
            t.add_section()
        previous_task = task
        for row in ranked(rows, metric):
            cells = (task, split, rank_cell(row), row["algorithm"], fmt_estimate(row[metric]["mean"]),
                     fmt_estimate(row[other]["mean"]), fmt_estimate(row.get("wall_seconds", {}).get("mean")),
                     runs_cell(row))
            t.add_row(*(Text(c) for c in cells))  # Text: brackets in CIs are not rich markup
    return t
