"""Results of a suite: per task, split and algorithm, the final metric with a 95% CI."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

from harness.config import Suite
from harness.plan import RunSpec, plan
from harness.stats import bootstrap_mean
from harness.store import Store


def final_scores(evals: list[dict[str, Any]], kind: str = "curve") -> dict[str, dict[str, float]]:
    """split -> metric -> value at the last evaluation of `kind` ("curve": the end of training;
    "absolute": the best checkpoint re-evaluated), averaged over the split's compositions."""
    last = max((r["env_steps"] for r in evals if r["kind"] == kind), default=None)
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in evals:
        if r["kind"] == kind and r["env_steps"] == last:
            acc[(r["split"], r["metric"])].append(r["value"])
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (split, metric), values in acc.items():
        out[split][metric] = float(np.mean(values))
    return dict(out)


def collect(suite: Suite, store: Store) -> dict[str, Any]:
    specs = plan(suite)
    by_id = {r["run_id"]: r for r in store.runs(run_ids=[s.run_id for s in specs])}
    done_ids = [s.run_id for s in specs if by_id.get(s.run_id, {}).get("status") == "done"]
    evals_by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.evals(done_ids):
        evals_by_run[row["run_id"]].append(row)
    runs = []
    for spec in specs:
        row = by_id.get(spec.run_id, {})
        runs.append({
            "run_id": spec.run_id, "task": spec.task, "algorithm": spec.algorithm, "seed": spec.seed,
            "status": row.get("status", "missing"), "reason": row.get("reason"),
            "env_steps": row.get("env_steps"), "seconds": row.get("seconds"),
            "final": final_scores(evals_by_run[spec.run_id]),
            "absolute": final_scores(evals_by_run[spec.run_id], "absolute"),
        })
    return {"suite": suite.name, "metric": suite.metric, "budget": suite.budget_name,
            "rows": _aggregate(suite, specs, runs), "runs": runs, "notes": backend_notes(suite)}


def backend_notes(suite: Suite) -> list[str]:
    """What readers must know about the backends behind these numbers (e.g. SMAX is not SMACv2)."""
    from harness import registry

    notes = [getattr(registry.get_env(t.env), "leaderboard_note", None) for t in suite.tasks]
    return list(dict.fromkeys(n for n in notes if n))


def _aggregate(suite: Suite, specs: list[RunSpec], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for task in suite.tasks:
        for split in task.splits:
            for algorithm in task.algorithms:
                group = [r for r in runs if r["task"] == task.name and r["algorithm"] == algorithm]
                done = [r for r in group if r["status"] == "done" and split in r["final"]]
                row: dict[str, Any] = {
                    "task": task.name, "split": split, "algorithm": algorithm,
                    "planned": len(group), "done": len(done),
                    "failed": sum(r["status"] == "failed" for r in group),
                }
                for metric in ("return", "win_rate"):
                    values = [r["final"][split][metric] for r in done if metric in r["final"][split]]
                    row[metric] = bootstrap_mean(values).as_dict()
                rows.append(row)
    return rows


def _fmt(est: dict[str, Any]) -> str:
    if est["mean"] is None:
        return "-"
    if est["ci_low"] is None:
        return f"{est['mean']:.3g} [no CI, n=1]"
    return f"{est['mean']:.3g} [{est['ci_low']:.3g}, {est['ci_high']:.3g}]"


def table(report: dict[str, Any]) -> Table:
    metric = report["metric"]
    t = Table(title=f"{report['suite']} ({report['budget']} budget): final greedy evaluation, mean [95% bootstrap CI over seeds]",
              caption="\n".join(f"Note: {n}" for n in report.get("notes", [])) or None, caption_justify="left")
    for col in ("task", "split", "algorithm", metric, "win rate" if metric == "return" else "return", "runs"):
        t.add_column(col)
    other = "win_rate" if metric == "return" else "return"
    previous_task = None
    for row in report["rows"]:
        if previous_task is not None and row["task"] != previous_task:
            t.add_section()
        previous_task = row["task"]
        runs = f"{row['done']}/{row['planned']}" + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = (row["task"], row["split"], row["algorithm"], _fmt(row[metric]), _fmt(row[other]), runs)
        t.add_row(*(Text(c) for c in cells))  # Text: brackets in CIs are not rich markup
    return t
