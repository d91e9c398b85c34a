"""The rows and texts a leaderboard shows, shared by its Markdown and HTML writers: each
writer escapes and lays them out in its own format."""

from __future__ import annotations

from typing import Any

from harness.report.model import OTHER_METRIC, fmt_estimate, rank_cell, ranked, runs_cell


def origin_text(manifest: dict[str, Any]) -> str:
    """'store URL' or 'store URL, runs read back from the board in DIR (generated ... at commit ...)'."""
    text = f"store {manifest['store']}"
    first = manifest.get("runs_from")
    if first:
        text += (f", runs read back from the board in {first['board']} (generated {first['generated_at']} "
                 f"at commit {str(first['commit'])[:8]})")
    return text



INTERVALS = {
    "expanded": "expanded percentile bootstrap interval (Hesterberg 2015: the percentile interval widened "
                "for small samples; about 95% coverage at 5 seeds in our simulation, tests/test_stats_coverage.py)",
    "percentile": "percentile bootstrap interval (it undercovers at few seeds: about 90% at 5 in our simulation)",
    "bca": "BCa bootstrap interval (it undercovers at few seeds: about 89% at 5 in our simulation)",
}


def smoke_banner(report: dict[str, Any]) -> str:
    """What a board made at the smoke budget says first: it checks the pipeline, it ranks nothing."""
    if report["budget"] != "smoke":
        return ""
    return ("Smoke budget: a check that the pipeline runs end to end, not a ranking. The runs are too short "
            "for any algorithm to learn; read nothing into the order.")


def preamble(report: dict[str, Any]) -> str:
    """The board's first lines: budget, seeds, runs, metric, interval method and ranking rule."""
    protocol = report["protocol"]
    boot = protocol["bootstrap"]
    budgets = sorted({b["env_steps"] for b in protocol["budgets"].values()})
    steps = ", ".join(f"{b:,}" for b in budgets)
    finished = sum(r["status"] == "done" for r in report["runs"])
    return (f"Budget `{report['budget']}` ({steps} env steps per run), seeds {protocol['seeds']}, "
            f"{finished} of {len(report['runs'])} planned runs finished. Metric: **{report['metric']}** of the greedy "
            f"policy at the end of training. Every estimate is followed by its {report['confidence']:.0%} "
            f"{INTERVALS.get(boot['method'], boot['method'] + ' bootstrap interval')} over seeds ({boot['reps']} "
            "resamples, stratified by composition); for a metric that is a yes/no outcome of each run (declared by "
            "the environment, as the matrix games' win rate), the mean's interval is Wilson's over the runs. `n` "
            f"counts the runs behind an estimate. {protocol['ranking'].capitalize()}.")


def split_table(report: dict[str, Any], task: str, split: str) -> tuple[list[str], list[list[str]]]:
    """The ranked table of one task and split (shared by the Markdown and HTML pages)."""
    metric, other = report["metric"], OTHER_METRIC[report["metric"]]
    rows = ranked([r for r in report["rows"] if r["task"] == task and r["split"] == split], metric)
    header = ["rank", "algorithm", f"{metric} mean", f"{metric} IQM", other, "absolute (best checkpoint)",
              "wall s per run", "runs"]
    return header, [[rank_cell(r), r["algorithm"], fmt_estimate(r[metric]["mean"]), fmt_estimate(r[metric]["iqm"]),
                     fmt_estimate(r[other]["mean"]), fmt_estimate(r["absolute"]["mean"]),
                     fmt_estimate(r.get("wall_seconds", {}).get("mean")), runs_cell(r)] for r in rows]


def aggregate_table(agg: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Normalised aggregates of one split, best IQM first."""
    ordered = sorted(agg["algorithms"].items(), key=lambda kv: -(kv[1]["iqm"]["value"] or 0.0))
    return (["algorithm", "IQM", "mean", "median", "optimality gap"],
            [[a, fmt_estimate(e["iqm"]), fmt_estimate(e["mean"]), fmt_estimate(e["median"]),
              fmt_estimate(e["optimality_gap"])] for a, e in ordered])


def gap_table(report: dict[str, Any], task: str) -> tuple[list[str], list[list[str]]]:
    gaps = [g for g in report["generalization_gap"] if g["task"] == task]
    return ["algorithm", "gap"], [[g["algorithm"], fmt_estimate(g["gap"])] for g in gaps]


UNTRAINED = ("took no gradient step within the budget (its warm-up or burn-in is longer): "
             "its scores are the untrained policy's")


COMPUTE_NOTE = ("Summed over the finished runs: env steps, gradient steps, and run wall hours (training and "
                "evaluation, every attempt); each run is one worker process, the machine's cores shared among "
                "the workers (the manifest names the platform).")


def compute_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per task and algorithm, then their sum ("n/a": gradient steps not recorded)."""
    entries = report.get("compute", [])

    def row(task: str, algorithm: str, group: list[dict[str, Any]]) -> list[str]:
        grads = [c["grad_steps"] for c in group]
        return [task, algorithm, str(sum(c["runs"] for c in group)), f"{sum(c['env_steps'] for c in group):,}",
                "n/a" if None in grads else f"{sum(grads):,}", f"{sum(c['wall_hours'] for c in group):.2f}"]

    rows = [row(c["task"], c["algorithm"], [c]) for c in entries]
    if len(rows) > 1:
        rows.append(row("all", "all", entries))
    return ["task", "algorithm", "runs", "env steps", "gradient steps", "run wall hours"], rows


def problem_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Failed runs with their reasons, then runs that have not finished."""
    failed, missing = report["problems"]["failed"], report["problems"]["missing"]
    rows = [[f["run"], "failed", (f["reason"] or "no reason recorded").splitlines()[0]] for f in failed]
    rows += [[m["run"], m["status"], "not finished: rerun `harness run` to complete it"] for m in missing]
    rows += [[u["run"], "done, untrained", UNTRAINED] for u in report["problems"].get("untrained", [])]
    return ["run", "status", "reason"], rows


