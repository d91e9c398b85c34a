"""Writing a leaderboard: `leaderboard.json`, a marl-eval export, `README.md`, `index.html` and
`manifest.json` under `leaderboards/<suite>/` (or `out=DIR`).

Every file is written to a temporary name and renamed, so an interrupted report never leaves
a half-written leaderboard behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from harness.config import COMMAND_LINE, Suite
from harness.errors import ConfigError
from harness.plan import plan, stable_hash
from harness.report import OTHER_METRIC, RunRecord, fmt_estimate, rank_cell, ranked, runs_cell

FORMATS = ("md", "json", "html")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Packages whose versions decide the numbers (missing ones are recorded as null).
PACKAGES = ("teamgen-harness", "numpy", "scipy", "torch", "jax", "jaxlib", "jaxmarl", "pettingzoo", "mpe2",
            "overcooked-ai", "optuna", "entmax", "sqlalchemy", "pydantic", "matplotlib")


def write_leaderboard(report: dict[str, Any], suite: Suite, runs: list[RunRecord], out_dir: Path,
                      formats: tuple[str, ...] = FORMATS, origin: dict[str, Any] | None = None) -> list[Path]:
    """Write the chosen formats plus the manifest; returns the paths written. `runs` are the
    records the report was computed from (the marl-eval export needs every evaluation);
    `origin` (see `board_origin`) says which board they were read back from, if not a store."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(suite)
    if origin is not None:
        manifest["store"], manifest["runs_from"] = origin["store"], origin["runs_from"]
    written = [_write(out_dir / "manifest.json", _json(manifest))]
    if "json" in formats:
        written.append(_write(out_dir / "leaderboard.json", _json(report | {"manifest": manifest})))
        written.append(_write(out_dir / "marl_eval.json", _json(marl_eval_export(runs, suite))))
    if "md" in formats:
        written.append(_write(out_dir / "README.md", markdown(report, manifest)))
    if "html" in formats:
        from harness.report_html import html_page

        written.append(_write(out_dir / "index.html", html_page(report, manifest)))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json(payload: Any) -> str:
    return json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n"


def json_safe(obj: Any) -> Any:
    """NaN and ±inf (e.g. Welch's t between two constant samples) become null: strict JSON has
    no such numbers and most readers reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Manifest


def build_manifest(suite: Suite) -> dict[str, Any]:
    """What it takes to reproduce the leaderboard: code, packages, suite, budgets, seeds, store."""
    suite_file = Path(suite.path)
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": _git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "suite": suite.name,
        "suite_file": str(suite_file),
        "suite_file_sha256": hashlib.sha256(suite_file.read_bytes()).hexdigest() if suite_file.is_file() else None,
        # Changes whenever any run's identity (task, params, budget, seed) changes.
        "suite_hash": stable_hash(sorted(s.run_id for s in plan(suite))),
        "overrides": suite.overrides,
        "budget": suite.budget_name,
        "budgets": {t.name: t.budget for t in suite.tasks},
        "seeds": suite.seeds,
        "store": sa.engine.make_url(suite.store).render_as_string(hide_password=True),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_state() -> dict[str, Any] | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        # Leaderboard files are outputs, not code: rewriting them must not mark the tree dirty.
        changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)leaderboards")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changes)}
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed package): the versions still say what ran


# ---------------------------------------------------------------------------------------------
# marl-eval export


def marl_eval_export(runs: list[RunRecord], suite: Suite) -> dict[str, Any]:
    """The finished runs in marl-eval's raw-data layout: env -> task -> algorithm -> seed_k ->
    step_i {step_count, metric: [...]} plus absolute_metrics.

    A harness task split is one marl-eval task (`<task>_<split>`). Each metric list holds one
    value per composition of the split (the greedy evaluation mean on that composition), so
    marl-eval's mean over the list is the split score used here."""
    env_of = {t.name: t.env for t in suite.tasks}
    out: dict[str, Any] = {}
    for run in runs:
        if run.status != "done":
            continue
        for split, per_step in _by_split_and_step(run.evals).items():
            entry: dict[str, Any] = {}
            for i, step in enumerate(sorted(s for s in per_step if s != "absolute")):
                entry[f"step_{i}"] = {"step_count": step, **per_step[step]}
            if "absolute" in per_step:
                entry["absolute_metrics"] = per_step["absolute"]
            task = out.setdefault(env_of[run.spec.task], {}).setdefault(f"{run.spec.task}_{split}", {})
            task.setdefault(run.spec.algorithm, {})[f"seed_{run.spec.seed}"] = entry
    return out


def _by_split_and_step(evals: list[dict[str, Any]]) -> dict[str, dict[Any, dict[str, list[float]]]]:
    """split -> env_steps (or "absolute") -> metric -> values, one per composition."""
    out: dict[str, Any] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in evals:
        step = "absolute" if row["kind"] == "absolute" else row["env_steps"]
        out[row["split"]][step][row["metric"]].append(row["value"])
    return {split: {step: dict(m) for step, m in steps.items()} for split, steps in out.items()}


def board_origin(folder: Path) -> dict[str, Any]:
    """The store a published board's runs were recorded in and the board that first carried
    them: what the manifest of a board recomputed from it says (kept through any number of
    recomputations). A missing or damaged manifest only loses that history."""
    try:
        old = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    git: dict[str, Any] = old["git"] if isinstance(old.get("git"), dict) else {}
    first = old.get("runs_from")
    if not (isinstance(first, dict) and {"board", "generated_at", "commit"} <= first.keys()):
        first = {"board": str(folder), "generated_at": old.get("generated_at"), "commit": git.get("commit")}
    return {"store": old.get("store"), "runs_from": first}


def read_json_object(path: Path, key: str, advice: str) -> dict[str, Any]:
    """The JSON object in `path`; a file that cannot be read, is not JSON or holds something
    else (a list, a number) is the user's to fix: a ConfigError on option `key` naming the
    path, what is wrong and `advice`, never a traceback."""
    def fail(what: str) -> ConfigError:
        return ConfigError.single((key,), f"{path} {what}: {advice}", file=COMMAND_LINE)

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise fail(f"is not valid JSON (line {exc.lineno} col {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text") from None
    except RecursionError:
        raise fail("nests too deeply to read") from None
    if not isinstance(doc, dict):
        raise fail(f"holds a JSON {_json_kind(doc)}, not an object")
    return doc


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def origin_text(manifest: dict[str, Any]) -> str:
    """'store URL' or 'store URL, runs read back from the board in DIR (generated ... at commit ...)'."""
    text = f"store {manifest['store']}"
    first = manifest.get("runs_from")
    if first:
        text += (f", runs read back from the board in {first['board']} (generated {first['generated_at']} "
                 f"at commit {str(first['commit'])[:8]})")
    return text


NOT_A_BOARD = "not a readable leaderboard folder (from= takes a folder that harness report wrote)"


def read_board(suite: Suite, folder: Path) -> list[RunRecord]:
    """The runs of `suite` as a published leaderboard folder recorded them (leaderboard.json's
    runs, marl_eval.json's evaluations): what `harness report from=DIR` recomputes a board from
    when its store is gone. Lost on the way: gradient step counts (only "untrained" survives),
    timings, and each evaluation's episode count (the budget's is assumed). Refuses a board whose
    per-composition means the restored runs do not reproduce (another suite, or a board written
    before compositions kept their order)."""
    doc = read_json_object(folder / "leaderboard.json", "from", NOT_A_BOARD)
    exported = read_json_object(folder / "marl_eval.json", "from", NOT_A_BOARD)
    try:
        records = _restored_runs(suite, doc, exported)
        _check_restored(doc, records)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        # Valid JSON of another shape (edited by hand, another tool's): say so, not a traceback.
        raise ConfigError.single(("from",), f"{NOT_A_BOARD}: its files do not have the layout harness report writes "
                                 f"({type(exc).__name__}: {exc})", found=str(folder), file=COMMAND_LINE) from None
    return records


def _restored_runs(suite: Suite, doc: dict[str, Any], exported: dict[str, Any]) -> list[RunRecord]:
    published = {r["run_id"]: r for r in doc.get("runs", [])}
    untrained = {u["run"] for u in doc.get("problems", {}).get("untrained", [])}
    tasks = {t.name: t for t in suite.tasks}
    records = []
    for spec in plan(suite):
        row = published.get(spec.run_id, {"status": "missing"})
        evals = _board_evals(exported, tasks[spec.task], spec) if row["status"] == "done" else []
        records.append(RunRecord(spec, row["status"], row.get("reason"), row.get("env_steps"), row.get("seconds"),
                                 evals, 0 if spec.label in untrained else None))
    return records


def _board_evals(exported: dict[str, Any], task: Any, spec: Any) -> list[dict[str, Any]]:
    """One run's evaluation rows from marl_eval.json (values listed in composition order)."""
    rows = []
    for split, compositions in task.splits.items():
        entry = exported.get(task.env, {}).get(f"{task.name}_{split}", {}).get(spec.algorithm, {}).get(
            f"seed_{spec.seed}", {})
        names = [c.name for c in compositions]
        for key, point in entry.items():
            kind = "absolute" if key == "absolute_metrics" else "curve"
            steps = spec.budget["env_steps"] if kind == "absolute" else int(point["step_count"])
            episodes = spec.budget["absolute_episodes" if kind == "absolute" else "eval_episodes"]
            for metric, values in point.items():
                if metric == "step_count":
                    continue
                rows += [{"kind": kind, "env_steps": steps, "split": split, "composition": name, "metric": metric,
                          "value": float(v), "episodes": episodes} for name, v in zip(names, values, strict=True)]
    return rows


def _check_restored(doc: dict[str, Any], records: list[RunRecord]) -> None:
    done: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.status == "done":
            done[(r.spec.task, r.spec.algorithm)].append(r)
    for cell in doc.get("cells", []):
        est = (cell.get(doc["metric"]) or {}).get("mean")
        runs = done.get((cell["task"], cell["algorithm"]), [])
        key = (cell["split"], cell["composition"], doc["metric"])
        values = [r.cells()[key] for r in runs if key in r.cells()]
        if est and est.get("value") is not None and values and abs(np.mean(values) - est["value"]) > 1e-6:
            raise ConfigError.single(
                ("from",), f"the board's runs do not reproduce its own {cell['task']}/{cell['split']}/"
                f"{cell['composition']} mean for {cell['algorithm']}: another suite, or another composition order",
                found=str(doc.get("suite")), file=COMMAND_LINE)


# ---------------------------------------------------------------------------------------------
# Markdown


def md_text(text: Any) -> str:
    """A user string safe inside a Markdown table cell or line: no HTML, no column or line
    breaks (a carriage return ends a Markdown line too), no GitHub math between two `$`.
    Backslashes first: a name ending in one would otherwise undo the escape of a `|`."""
    s = str(text)
    for ch, rep in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("$", "\\$"),
                    ("\r", " "), ("\n", " ")):
        s = s.replace(ch, rep)
    return s


def md_code(text: Any) -> str:
    """`text` as a code span (a command to paste). Markdown shows a code span's text as it is,
    so backslash escapes would show: only HTML is escaped (no raw HTML in the file, whatever
    the renderer), and the fence is one backtick longer than any backtick run inside."""
    s = str(text)
    for ch, rep in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", " "), ("\n", " ")):
        s = s.replace(ch, rep)
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", s)), default=0))
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    # Headers carry user strings too (composition names in the per-composition table).
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return lines + [""]


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


def markdown(report: dict[str, Any], manifest: dict[str, Any]) -> str:
    metric = report["metric"]
    lines = [f"# Leaderboard: {md_text(report['suite'])}", ""]
    banner = smoke_banner(report)
    lines += [f"> **{md_text(banner)}**", ""] if banner else []
    lines += [preamble(report), ""]
    if report.get("description"):
        lines += [md_text(report["description"]), ""]
    lines += [f"> Note: {md_text(n)}" for n in report.get("notes", [])] + ([""] if report.get("notes") else [])
    lines += _md_aggregates(report)
    lines += _md_claims(report)
    for task in report["tasks"]:
        lines += _md_task(report, task, metric)
    lines += _md_problems(report)
    lines += _md_compute(report)
    lines += _md_protocol(report, manifest)
    return "\n".join(lines)


def _md_aggregates(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for agg in report["aggregates"]:
        lines += [f"## Across tasks, {md_text(agg['split'])} (normalised: 0 = random, 1 = best known)", ""]
        lines += [f"Tasks: {', '.join(md_text(t) for t in agg['tasks'])}."
                  + (f" Left out: {'; '.join(md_text(t) for t in agg['left_out'])}." if agg["left_out"] else ""), ""]
        lines += _md_table(*aggregate_table(agg))
    return lines


def _md_claims(report: dict[str, Any]) -> list[str]:
    from harness.claims import RULES

    verdicts = report.get("claims") or []
    if not verdicts:
        return []
    lines = ["## Claims", "", md_text(RULES), ""]
    lines += _md_table(["claim", "verdict", "source"],
                       [[md_code(v["name"]), f"**{md_text(v['verdict'])}**", md_text(v["source"])] for v in verdicts])
    for v in verdicts:
        first, *rest = v["text"]
        lines += [f"### {md_text(first)}", ""] + [f"- {md_text(line.strip())}" for line in rest] + [""]
    return lines


def _md_task(report: dict[str, Any], task: dict[str, Any], metric: str) -> list[str]:
    lines = [f"## {md_text(task['name'])}", ""]
    if task.get("description"):
        lines += [md_text(task["description"]), ""]
    for algorithm, why in task.get("skipped", {}).items():
        lines += [f"- {md_text(algorithm)} skipped: {md_text(why)}"]
    for split, comps in task["splits"].items():
        names = ", ".join(md_text(c["name"]) for c in comps)
        lines += [f"### {md_text(split)} ({names})", ""]
        lines += _md_table(*split_table(report, task["name"], split))
        if len(comps) > 1:
            lines += _md_compositions(report, task["name"], split, [c["name"] for c in comps], metric)
    header, gaps = gap_table(report, task["name"])
    if gaps:
        lines += ["### Generalization gap (train − test, per run)", ""] + _md_table(header, gaps)
    lines += _md_tests(report, task["name"])
    return lines


def _md_compositions(report: dict[str, Any], task: str, split: str, names: list[str], metric: str) -> list[str]:
    cells = {(c["algorithm"], c["composition"]): c for c in report["cells"] if c["task"] == task and c["split"] == split}
    algorithms = list(dict.fromkeys(a for a, _ in cells))
    rows = [[a] + [fmt_estimate(cells[(a, n)][metric]["mean"]) for n in names] for a in algorithms]
    return [f"Per composition ({md_text(metric)} mean):", ""] + _md_table(["algorithm", *names], rows)


def _md_tests(report: dict[str, Any], task: str) -> list[str]:
    lines: list[str] = []
    for block in (b for b in report["tests"] if b["task"] == task):
        significant = [p for p in block["pairs"]
                       if (p.get("welch_p_holm") is not None and p["welch_p_holm"] < 0.05)
                       or (p.get("mwu_p_holm") is not None and p["mwu_p_holm"] < 0.05)]
        lines += [f"Pairwise tests, {md_text(block['split'])}: {len(significant)} of {len(block['pairs'])} pairs differ at "
                  "the 5% level after Holm correction (Welch's t or Mann–Whitney U).", ""]
        if significant:
            lines += _md_table(
                ["pair", "mean difference", "Welch p (Holm)", "Mann–Whitney p (Holm)", "Hedges' g", "Cliff's δ"],
                [[f"{p['a']} vs {p['b']}", _num(p["mean_difference"]), _num(p["welch_p_holm"]),
                  _num(p["mwu_p_holm"]), _num(p["hedges_g"]), _num(p["cliffs_delta"])] for p in significant])
    return lines


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _md_problems(report: dict[str, Any]) -> list[str]:
    header, rows = problem_table(report)
    lines = ["## Failed, missing and untrained runs", ""]
    return lines + (_md_table(header, rows) if rows else ["Every planned run finished.", ""])


def _md_compute(report: dict[str, Any]) -> list[str]:
    header, rows = compute_table(report)
    return ["## Compute", "", md_text(COMPUTE_NOTE), "", *_md_table(header, rows)] if rows else []


def _md_protocol(report: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    protocol = report["protocol"]
    budgets = {json.dumps(b, sort_keys=True) for b in protocol["budgets"].values()}
    git = manifest.get("git") or {}
    lines = ["## Protocol", "",
             f"- Budget `{protocol['budget']}`: " + "; ".join(md_text(b) for b in sorted(budgets)),
             f"- Seeds: {protocol['seeds']}",
             f"- Evaluation: {md_text(protocol['evaluation'])}",
             "- Parameters: " + "; ".join(f"{md_text(a)} {md_text(t)}" for a, t in protocol["tuning"].items())
             + " (suite parameters per task are in `leaderboard.json`, `protocol.params`)",
             f"- Code: commit `{git.get('commit', 'unknown')}`" + (" (uncommitted changes)" if git.get("dirty") else ""),
             f"- Suite hash `{manifest['suite_hash']}`; {md_text(origin_text(manifest))}; "
             "package versions in `manifest.json`",
             f"- Reproduce: {md_code(reproduce_args('run', report, manifest))} then "
             f"{md_code(reproduce_args('report', report, manifest))}", ""]
    return lines


def reproduce_args(command: str, report: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The command line that makes (run) or re-reports (report) these numbers: the suite and
    every override the report was made with (tasks, algorithms, budget, params...), quoted
    for a POSIX shell."""
    from scenarios import SUITES_DIR

    suite_file = Path(manifest.get("suite_file") or "")
    builtin = suite_file.resolve() == (SUITES_DIR / f"{report['suite']}.yaml").resolve()
    suite = report["suite"] if builtin else str(suite_file)  # a file of the user's: its path
    overrides = manifest.get("overrides") or [f"budget={report['protocol']['budget']}"]
    words = ["harness", command, f"suite={suite}", *overrides]
    return " ".join(shlex.quote(str(w)) for w in words)  # for `md_code`
