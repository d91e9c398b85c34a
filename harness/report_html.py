"""`index.html`: a self-contained static page with the leaderboard's tables and plots.

Plots are matplotlib PNGs embedded as data URIs and the page's Content-Security-Policy
forbids every external resource, so it opens offline and cannot leak a request. Every
string that comes from a suite, a run or the store goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any

import numpy as np

from harness.leaderboard import aggregate_table, gap_table, preamble, problem_table, smoke_banner, split_table

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
th{background:#f3f3f3}figure{margin:1rem 0}img{max-width:100%}.note{background:#fff8e0;padding:.5rem}
.bad{color:#a00}code{background:#f3f3f3;padding:0 .2rem}
"""
# Sets data-* attributes on <body> once the page has loaded, so a headless browser test can
# check that every plot decoded and no script error happened.
CHECK_SCRIPT = """
window.addEventListener('error', function () {
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.broken = String(imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length);
  document.body.dataset.loaded = 'yes'; });
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def html_page(report: dict[str, Any], manifest: dict[str, Any]) -> str:
    body = [f"<h1>Leaderboard: {esc(report['suite'])}</h1>"]
    banner = smoke_banner(report)
    if banner:
        body.append(f"<p class='banner'><b>{esc(banner)}</b></p>")
    text = esc(preamble(report)).replace("**", "")
    body.append(f"<p>{text.replace('`', '')}</p>")
    if report.get("description"):
        body.append(f"<p>{esc(report['description'])}</p>")
    body += [f"<p class='note'>Note: {esc(n)}</p>" for n in report.get("notes", [])]
    body += _aggregate_section(report)
    for task in report["tasks"]:
        body += _task_section(report, task)
    body += _problems_section(report)
    body += _protocol_section(report, manifest)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{esc(report['suite'])} leaderboard</title><style>{STYLE}</style>"
            f"<script>{CHECK_SCRIPT}</script></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: Any, caption: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt
    from cycler import cycler

    # 20 distinct colours (the default cycle repeats after 10; suites list up to ~20 algorithms).
    # Every plot walks algorithms in suite order, so an algorithm keeps its colour across plots.
    tab20 = plt.get_cmap("tab20")
    plt.rcParams["axes.prop_cycle"] = cycler(color=[tab20(i) for i in range(20)])
    return plt


# ---------------------------------------------------------------------------------------------
# Sections


def _aggregate_section(report: dict[str, Any]) -> list[str]:
    out = []
    for agg in report["aggregates"]:
        out.append(f"<h2>Across tasks, {esc(agg['split'])} (normalised: 0 = random, 1 = best known)</h2>")
        left = f" Left out: {'; '.join(agg['left_out'])}." if agg["left_out"] else ""
        out.append(f"<p>Tasks: {esc(', '.join(agg['tasks']))}.{esc(left)}</p>")
        out.append(_table(*aggregate_table(agg)))
        out.append(_figure(_profile_plot(agg), f"Performance profiles, {agg['split']}: fraction of runs above a "
                                               "normalised score, with bootstrap bands"))
        out.append(_figure(_poi_plot(agg), f"Probability of improvement P(row > column), {agg['split']}"))
    return out


def _task_section(report: dict[str, Any], task: dict[str, Any]) -> list[str]:
    metric = report["metric"]
    out = [f"<h2>{esc(task['name'])}</h2>"]
    if task.get("description"):
        out.append(f"<p>{esc(task['description'])}</p>")
    for algorithm, why in task.get("skipped", {}).items():
        out.append(f"<p>{esc(algorithm)} skipped: {esc(why)}</p>")
    for split, comps in task["splits"].items():
        out.append(f"<h3>{esc(split)} ({esc(', '.join(c['name'] for c in comps))})</h3>")
        out.append(_table(*split_table(report, task["name"], split)))
    header, gaps = gap_table(report, task["name"])
    if gaps:
        out += ["<h3>Generalization gap (train − test, per run)</h3>", _table(header, gaps)]
    sizes = [r for r in report["team_size"] if r["task"] == task["name"]]
    if sizes:
        out.append(_figure(_team_size_plot(sizes, metric), f"{task['name']}: {metric} against team size "
                                                            "(mean over runs, bootstrap band)"))
    curves = [c for c in report["curves"] if c["task"] == task["name"] and c["points"]]
    for split in dict.fromkeys(c["split"] for c in curves):
        out.append(_figure(_curve_plot([c for c in curves if c["split"] == split], metric),
                           f"{task['name']}, {split}: sample efficiency (IQM over runs and compositions, band)"))
    cells = [c for c in report["cells"] if c["task"] == task["name"]]
    if len({(c["split"], c["composition"]) for c in cells}) > 1:
        out.append(_figure(_composition_heatmap(cells, metric), f"{task['name']}: {metric} mean per composition"))
    return out


def _problems_section(report: dict[str, Any]) -> list[str]:
    header, rows = problem_table(report)
    if not rows:
        return ["<h2>Failed, missing and untrained runs</h2>", "<p>Every planned run finished.</p>"]
    return ["<h2>Failed, missing and untrained runs</h2>", f"<div class='bad'>{_table(header, rows)}</div>"]


def _protocol_section(report: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    protocol = report["protocol"]
    git = manifest.get("git") or {}
    items = [
        f"Budgets: {protocol['budgets']}",
        f"Evaluation: {protocol['evaluation']}",
        "Parameters: " + "; ".join(f"{a} {t}" for a, t in protocol["tuning"].items()),
        f"Code: commit {git.get('commit', 'unknown')}" + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"Suite hash {manifest['suite_hash']}; store {manifest['store']}; generated {manifest['generated_at']}",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in manifest["packages"].items() if v),
    ]
    return ["<h2>Protocol</h2><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"]


# ---------------------------------------------------------------------------------------------
# Plots (plot labels are drawn by matplotlib into the PNG, so they need no HTML escaping)


def _team_size_plot(rows: list[dict[str, Any]], metric: str) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    by_algorithm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["score"] and r["score"]["value"] is not None:
            by_algorithm[r["algorithm"]].append(r)
    for algorithm, points in by_algorithm.items():
        x = [p["team_size"] for p in points]
        y = [p["score"]["value"] for p in points]
        line = ax.plot(x, y, marker="o", label=algorithm)[0]
        low = [p["score"]["ci_low"] if p["score"]["ci_low"] is not None else p["score"]["value"] for p in points]
        high = [p["score"]["ci_high"] if p["score"]["ci_high"] is not None else p["score"]["value"] for p in points]
        ax.fill_between(x, low, high, alpha=0.15, color=line.get_color())
    trained = sorted({r["team_size"] for r in rows if "train" in r["splits"]})
    if trained:
        ax.axvspan(min(trained) - 0.5, max(trained) + 0.5, color="grey", alpha=0.1, label="train sizes")
    ax.set_xlabel("team size (agents)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2)
    return fig


def _curve_plot(curves: list[dict[str, Any]], metric: str) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for c in curves:
        x = [p["env_steps"] for p in c["points"]]
        y = [p["value"] for p in c["points"]]
        line = ax.plot(x, y, label=c["algorithm"])[0]
        # A band only where the point has an interval (two runs or more behind it).
        low = np.array([np.nan if p["ci_low"] is None else p["ci_low"] for p in c["points"]])
        high = np.array([np.nan if p["ci_high"] is None else p["ci_high"] for p in c["points"]])
        ax.fill_between(x, low, high, where=np.isfinite(low), alpha=0.15, color=line.get_color())
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"{metric} (IQM)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _profile_plot(agg: dict[str, Any]) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    taus = agg["profile"]["taus"]
    for algorithm, p in agg["profile"]["algorithms"].items():
        line = ax.plot(taus, p["fraction"], label=algorithm)[0]
        ax.fill_between(taus, p["low"], p["high"], alpha=0.15, color=line.get_color())
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _poi_plot(agg: dict[str, Any]) -> Any:
    plt = _pyplot()
    names = list(agg["algorithms"])
    matrix = np.full((len(names), len(names)), np.nan)
    index = {n: i for i, n in enumerate(names)}
    for p in agg["probability_of_improvement"]:
        if p["x"] in index and p["y"] in index and p["value"] is not None:
            matrix[index[p["x"]], index[p["y"]]] = p["value"]
    size = 1.2 + 0.45 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    if len(names) <= 12:
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="P(row > column)")
    return fig


def _composition_heatmap(cells: list[dict[str, Any]], metric: str) -> Any:
    plt = _pyplot()
    columns = list(dict.fromkeys((c["split"], c["composition"]) for c in cells))
    algorithms = list(dict.fromkeys(c["algorithm"] for c in cells))
    matrix = np.full((len(algorithms), len(columns)), np.nan)
    for c in cells:
        est = c[metric]["mean"] if c[metric] else None
        if est and est["value"] is not None:
            matrix[algorithms.index(c["algorithm"]), columns.index((c["split"], c["composition"]))] = est["value"]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(columns), 1.0 + 0.35 * len(algorithms)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), [f"{s}\n{n}" for s, n in columns], fontsize=7)
    ax.set_yticks(range(len(algorithms)), algorithms, fontsize=7)
    for (i, j), v in np.ndenumerate(matrix):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, label=metric)
    return fig
