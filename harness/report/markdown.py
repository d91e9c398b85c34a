"""The leaderboard as Markdown (`README.md` of a board folder): every user string escaped for a
table cell, commands as code spans."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from harness.registry import builtin_suites_dir
from harness.report import tables
from harness.report.claims import RULES
from harness.report.model import fmt_estimate


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




def markdown(report: dict[str, Any], manifest: dict[str, Any]) -> str:
    metric = report["metric"]
    lines = [f"# Leaderboard: {md_text(report['suite'])}", ""]
    banner = tables.smoke_banner(report)
    lines += [f"> **{md_text(banner)}**", ""] if banner else []
    lines += [tables.preamble(report), ""]
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
        lines += _md_table(*tables.aggregate_table(agg))
    return lines


def _md_claims(report: dict[str, Any]) -> list[str]:
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
        lines += _md_table(*tables.split_table(report, task["name"], split))
        if len(comps) > 1:
            lines += _md_compositions(report, task["name"], split, [c["name"] for c in comps], metric)
    header, gaps = tables.gap_table(report, task["name"])
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
    header, rows = tables.problem_table(report)
    lines = ["## Failed, missing and untrained runs", ""]
    return lines + (_md_table(header, rows) if rows else ["Every planned run finished.", ""])


def _md_compute(report: dict[str, Any]) -> list[str]:
    header, rows = tables.compute_table(report)
    return ["## Compute", "", md_text(tables.COMPUTE_NOTE), "", *_md_table(header, rows)] if rows else []


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
             f"- Suite hash `{manifest['suite_hash']}`; {md_text(tables.origin_text(manifest))}; "
             "package versions in `manifest.json`",
             f"- Reproduce: {md_code(reproduce_args('run', report, manifest))} then "
             f"{md_code(reproduce_args('report', report, manifest))}", ""]
    return lines


def reproduce_args(command: str, report: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The command line that makes (run) or re-reports (report) these numbers: the suite and
    every override the report was made with (tasks, algorithms, budget, params...), quoted
    for a POSIX shell."""
    suite_file = Path(manifest.get("suite_file") or "")
    builtin = suite_file.resolve() == (builtin_suites_dir() / f"{report['suite']}.yaml").resolve()
    suite = report["suite"] if builtin else str(suite_file)  # a file of the user's: its path
    overrides = manifest.get("overrides") or [f"budget={report['protocol']['budget']}"]
    words = ["harness", command, f"suite={suite}", *overrides]
    return " ".join(shlex.quote(str(w)) for w in words)  # for `md_code`
