"""`index.html`: a self-contained static page with the leaderboard's tables and plots.

Plots are matplotlib PNGs embedded as data URIs and the page's Content-Security-Policy
forbids every external resource, so it opens offline and cannot leak a request. Every
string that comes from a suite, a run or the store goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator, NullLocator

from harness.report import tables
from harness.report.claims import RULES

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
th{background:#f3f3f3}figure{margin:1rem 0}img{max-width:100%}.note{background:#fff8e0;padding:.5rem}
.bad{color:#a00}code{background:#f3f3f3;padding:0 .2rem}
"""
# Sets data-* attributes on <body> once the page has loaded, so a headless browser test can
# check that every plot decoded and no script error happened (and size a full-page screenshot).
CHECK_SCRIPT = """
window.addEventListener('error', function () {
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.broken = String(imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length);
  document.body.dataset.height = String(document.documentElement.scrollHeight);
  document.body.dataset.loaded = 'yes'; });
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def html_page(report: dict[str, Any], manifest: dict[str, Any]) -> str:
    body = [f"<h1>Leaderboard: {esc(report['suite'])}</h1>"]
    banner = tables.smoke_banner(report)
    if banner:
        body.append(f"<p class='banner'><b>{esc(banner)}</b></p>")
    text = esc(tables.preamble(report)).replace("**", "")
    body.append(f"<p>{text.replace('`', '')}</p>")
    if report.get("description"):
        body.append(f"<p>{esc(report['description'])}</p>")
    body += [f"<p class='note'>Note: {esc(n)}</p>" for n in report.get("notes", [])]
    body += _aggregate_section(report)
    body += _claims_section(report)
    for task in report["tasks"]:
        body += _task_section(report, task)
    body += _problems_section(report)
    body += _compute_section(report)
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
    tight = None if fig.get_label() == SMALL_MULTIPLES else "tight"  # see SMALL_MULTIPLES
    fig.savefig(buffer, format="png", dpi=90, bbox_inches=tight)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    # One axes overlays at most MAX_OVERLAID algorithms, so the default ten colours never repeat.
    return plt


# ---------------------------------------------------------------------------------------------
# Sections


def _aggregate_section(report: dict[str, Any]) -> list[str]:
    out = []
    for agg in report["aggregates"]:
        out.append(f"<h2>Across tasks, {esc(agg['split'])} (normalised: 0 = random, 1 = best known)</h2>")
        left = f" Left out: {'; '.join(agg['left_out'])}." if agg["left_out"] else ""
        out.append(f"<p>Tasks: {esc(', '.join(agg['tasks']))}.{esc(left)}</p>")
        out.append(_table(*tables.aggregate_table(agg)))
        out.append(_figure(_profile_plot(agg), f"Performance profiles, {agg['split']}: fraction of runs above a "
                                               "normalised score, with bootstrap bands. "
                                               + line_plot_rule(len(agg["profile"]["algorithms"]))))
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
        out.append(_table(*tables.split_table(report, task["name"], split)))
    header, gaps = tables.gap_table(report, task["name"])
    if gaps:
        out += ["<h3>Generalization gap (train − test, per run)</h3>", _table(header, gaps)]
    sizes = [r for r in report["team_size"] if r["task"] == task["name"]]
    if sizes:
        out.append(_figure(_team_size_plot(sizes, metric), f"{task['name']}: {metric} against team size (mean "
                           "over runs, bootstrap band; shaded: the team sizes trained on). "
                           + line_plot_rule(len(_team_size_series(sizes)))))
    curves = [c for c in report["curves"] if c["task"] == task["name"] and c["points"]]
    for split in dict.fromkeys(c["split"] for c in curves):
        these = [c for c in curves if c["split"] == split]
        out.append(_figure(_curve_plot(these, metric), f"{task['name']}, {split}: sample efficiency (IQM over runs "
                           f"and compositions, bootstrap band). {line_plot_rule(len(these))}"))
    cells = [c for c in report["cells"] if c["task"] == task["name"]]
    if len({(c["split"], c["composition"]) for c in cells}) > 1:
        out.append(_figure(_composition_heatmap(cells, metric), f"{task['name']}: {metric} mean per composition"))
    return out


def _claims_section(report: dict[str, Any]) -> list[str]:
    verdicts = report.get("claims") or []
    if not verdicts:
        return []
    out = ["<h2>Claims</h2>", f"<p>{esc(RULES)}</p>",
           _table(["claim", "verdict", "source"], [[v["name"], v["verdict"], v["source"]] for v in verdicts])]
    for v in verdicts:
        first, *rest = v["text"]
        out.append(f"<h3>{esc(first)}</h3><ul>" + "".join(f"<li>{esc(line.strip())}</li>" for line in rest) + "</ul>")
    return out


def _compute_section(report: dict[str, Any]) -> list[str]:
    header, rows = tables.compute_table(report)
    return ["<h2>Compute</h2>", f"<p>{esc(tables.COMPUTE_NOTE)}</p>", _table(header, rows)] if rows else []


def _problems_section(report: dict[str, Any]) -> list[str]:
    header, rows = tables.problem_table(report)
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
        f"Suite hash {manifest['suite_hash']}; {tables.origin_text(manifest)}; generated {manifest['generated_at']}",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in manifest["packages"].items() if v),
    ]
    return ["<h2>Protocol</h2><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"]


# ---------------------------------------------------------------------------------------------
# Plots (plot labels are drawn by matplotlib into the PNG, so they need no HTML escaping, but
# every user string goes through `plain`)


def plain(text: Any) -> str:
    """A user string drawn as plain text: matplotlib reads text between two `$` as mathtext and
    fails the whole report on a name like `$x^{2$`; an escaped `\\$` is drawn as a `$`."""
    return str(text).replace("$", r"\$")


# Beyond this many algorithms, lines and bands on one axes merge into a coloured mass: the line
# plots switch to small multiples, one panel per algorithm with the others' means in grey.
MAX_OVERLAID = 6
# To the right of the axes, never over the data; `_figure` crops with bbox_inches="tight".
LEGEND_OUTSIDE: dict[str, Any] = {"bbox_to_anchor": (1.02, 1), "loc": "upper left", "borderaxespad": 0,
                                  "fontsize": 8, "frameon": False}
FRACTION_NAME = re.compile(r"(^|_)(rate|fraction|probability)$")
HIGHLIGHT = "#1f77b4"  # the panel's own algorithm in small multiples (its name is the panel title)
CONTEXT = "0.8"  # the other algorithms' means in small multiples
# Small multiples are laid out by hand in inches and saved without the tight bounding box, which
# would cost a second full draw of every panel's ticks (the report of a large board stays fast).
SMALL_MULTIPLES = "small multiples"
PANEL = (2.0, 1.3)  # width, height
GAP = (0.15, 0.34)  # y tick labels only on the left column; a title above every panel
TICK_SIZE = 7


def is_fraction(metric: str) -> bool:
    """Metrics that are fractions by definition (win_rate, success_rate): their axes show exactly
    [0, 1], so no margin or band suggests a rate below 0 or above 1."""
    return bool(FRACTION_NAME.search(metric))


def line_plot_rule(n_algorithms: int) -> str:
    """The caption's sentence on how a line plot is drawn, so a reader knows what grey means."""
    bands = "bands only where two runs or more stand behind a point"
    if n_algorithms > MAX_OVERLAID:
        return (f"More than {MAX_OVERLAID} algorithms: one panel per algorithm, the other algorithms' means "
                f"in thin grey for context, shared axes; {bands}.")
    return f"One line per algorithm; {bands}."


@dataclass(frozen=True)
class Series:
    """One algorithm's line; `low` and `high` are NaN where a point has no band."""

    label: str
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _values(estimates: list[dict[str, Any]]) -> np.ndarray:
    return np.array([np.nan if e["value"] is None else e["value"] for e in estimates], dtype=float)


def _band(estimates: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Interval ends per point, NaN where fewer than two runs stand behind it: one run has no
    spread, and a band drawn from it would look like certainty."""
    def end(e: dict[str, Any], key: str) -> float:
        return e[key] if e.get(key) is not None and (e.get("n") or 0) >= 2 else np.nan

    return (np.array([end(e, "ci_low") for e in estimates], dtype=float),
            np.array([end(e, "ci_high") for e in estimates], dtype=float))


def _draw(ax: Any, s: Series, colour: Any, marker: str | None, fraction: bool, label: str | None = None) -> None:
    # A fraction lies in [0, 1]: unclipped, a line at exactly 0 or 1 stays visible on the frame.
    ax.plot(s.x, s.y, color=colour, marker=marker, markersize=3, linewidth=1.4, label=label,
            clip_on=not fraction, zorder=3)
    shown = np.isfinite(s.low) & np.isfinite(s.high)
    if shown.any():
        ax.fill_between(s.x, s.low, s.high, where=shown, color=colour, alpha=0.2, linewidth=0, zorder=2)


def _shade(ax: Any, shade: tuple[float, float] | None) -> None:
    if shade:
        ax.axvspan(*shade, color="grey", alpha=0.12, linewidth=0, label="team sizes trained on")


def _line_plot(series: list[Series], xlabel: str, ylabel: str, fraction: bool, marker: str | None = None,
               shade: tuple[float, float] | None = None) -> Any:
    """Overlaid lines with a legend beside them for a few algorithms, small multiples for many.
    A marker means discrete x (team sizes): whole-number ticks."""
    if len(series) > MAX_OVERLAID:
        return _small_multiples(series, xlabel, ylabel, fraction, marker, shade)
    fig, ax = _pyplot().subplots(figsize=(6.5, 3.8))
    for i, s in enumerate(series):
        _draw(ax, s, f"C{i}", marker, fraction, label=plain(s.label))
    _shade(ax, shade)
    if fraction:
        ax.set_ylim(0, 1)
    if marker:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(plain(xlabel))
    ax.set_ylabel(plain(ylabel))
    if series:
        ax.legend(**LEGEND_OUTSIDE)
    return fig


def _small_multiples(series: list[Series], xlabel: str, ylabel: str, fraction: bool, marker: str | None,
                     shade: tuple[float, float] | None) -> Any:
    xlim = _span(np.concatenate([s.x for s in series]))
    ylim = (0.0, 1.0) if fraction else _span(np.concatenate([np.r_[s.y, s.low, s.high] for s in series]))
    fig, axes = _panels(len(series), xlim, ylim, integer_x=marker is not None)
    for ax, s in zip(axes, series, strict=True):
        # One collection for the context lines: one artist to build and draw, not n - 1.
        others = [np.column_stack([o.x, o.y]) for o in series if o is not s]
        ax.add_collection(LineCollection(others, colors=CONTEXT, linewidths=0.7, clip_on=not fraction, zorder=1),
                          autolim=False)
        _draw(ax, s, HIGHLIGHT, marker, fraction)
        _shade(ax, shade)
        ax.set_title(plain(s.label), fontsize=8, pad=2)
    fig.supxlabel(plain(xlabel), fontsize=9)
    fig.supylabel(plain(ylabel), fontsize=9, x=0.05 / fig.get_size_inches()[0])  # in the margin `_panels` left for it
    return fig


def _span(values: np.ndarray) -> tuple[float, float]:
    """The finite values' range with matplotlib's usual 5% margin (a flat line gets one too)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(lo), 1.0)
    return (lo - pad, hi + pad)


def _ticks(lim: tuple[float, float], integer: bool = False) -> list[float]:
    """At most five round ticks inside the limits (the steps of matplotlib's default locator)."""
    locator = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10], integer=integer)
    return [float(t) for t in locator.tick_values(*lim) if lim[0] <= t <= lim[1]]


def _tick_text(v: float) -> str:
    return f"{v:g}"


def _text_width(fig: Any, texts: list[str], size: float) -> float:
    """The widest single-line text in inches at `size` points."""
    renderer, font = fig.canvas.get_renderer(), FontProperties(size=size)
    return max((renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts), default=0.0) / fig.dpi


def _panels(n: int, xlim: tuple[float, float], ylim: tuple[float, float], integer_x: bool) -> tuple[Any, list[Any]]:
    """n panels in rows of up to five with the same limits and ticks, tick labels on the outer
    panels only, in a figure sized in inches from its parts (so `_figure` needs no tight box)."""
    fig = _pyplot().figure(label=SMALL_MULTIPLES)
    ncols = min(5, math.ceil(math.sqrt(1.5 * n)))
    nrows = math.ceil(n / ncols)
    xticks, yticks = _ticks(xlim, integer_x), _ticks(ylim)
    ytexts = [_tick_text(v) for v in yticks]
    # Left: the shared y label (0.25 in), a gap, the y tick labels (measured, plus hinting slack), the ticks.
    left, right, bottom, top = 0.45 + 1.2 * _text_width(fig, ytexts, TICK_SIZE), 0.3, 0.5, 0.25
    width = left + ncols * PANEL[0] + (ncols - 1) * GAP[0] + right
    height = bottom + nrows * PANEL[1] + (nrows - 1) * GAP[1] + top
    fig.set_size_inches(width, height)
    grid = fig.add_gridspec(nrows, ncols, left=left / width, right=1 - right / width, bottom=bottom / height,
                            top=1 - top / height, wspace=GAP[0] / PANEL[0], hspace=GAP[1] / PANEL[1])
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]
    for i, ax in enumerate(axes):
        ax.set(xlim=xlim, ylim=ylim)
        ax.tick_params(labelsize=TICK_SIZE)
        # Ticks only where their labels show (x where no panel sits below, y on the left column):
        # tick artists are most of a panel's cost. A grid carries the scale into the inner panels.
        _outer_ticks(ax.xaxis, xticks, i + ncols >= n)
        _outer_ticks(ax.yaxis, yticks, i % ncols == 0)
        ax.add_collection(_grid(xticks, yticks, xlim, ylim), autolim=False)
    return fig, axes


def _outer_ticks(axis: Any, ticks: list[float], labelled: bool) -> None:
    if labelled:
        axis.set_ticks(ticks, [_tick_text(v) for v in ticks])
    else:
        axis.set_major_locator(NullLocator())


def _grid(xticks: list[float], yticks: list[float], xlim: tuple[float, float],
          ylim: tuple[float, float]) -> LineCollection:
    """Grid lines at the ticks as one artist (axes' own grid lines come with tick artists)."""
    lines = [[(x, ylim[0]), (x, ylim[1])] for x in xticks] + [[(xlim[0], y), (xlim[1], y)] for y in yticks]
    return LineCollection(lines, colors="0.92", linewidths=0.6, zorder=0)


def _team_size_series(rows: list[dict[str, Any]]) -> list[Series]:
    by_algorithm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["score"] and r["score"]["value"] is not None:
            by_algorithm[r["algorithm"]].append(r)
    out = []
    for algorithm, points in by_algorithm.items():
        points = sorted(points, key=lambda p: p["team_size"])
        scores = [p["score"] for p in points]
        x = np.array([p["team_size"] for p in points], dtype=float)
        out.append(Series(algorithm, x, _values(scores), *_band(scores)))
    return out


def _trained_sizes(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    trained = [r["team_size"] for r in rows if "train" in r["splits"]]
    return (min(trained) - 0.5, max(trained) + 0.5) if trained else None


def _team_size_plot(rows: list[dict[str, Any]], metric: str) -> Any:
    return _line_plot(_team_size_series(rows), "team size (agents)", metric, is_fraction(metric), marker="o",
                      shade=_trained_sizes(rows))


def _curve_plot(curves: list[dict[str, Any]], metric: str) -> Any:
    series = [Series(c["algorithm"], np.array([p["env_steps"] for p in c["points"]], dtype=float),
                     _values(c["points"]), *_band(c["points"])) for c in curves]
    return _line_plot(series, "env steps", f"{metric} (IQM)", is_fraction(metric))


def _profile_plot(agg: dict[str, Any]) -> Any:
    taus = np.array(agg["profile"]["taus"], dtype=float)
    series = []
    for algorithm, p in agg["profile"]["algorithms"].items():
        low, high = np.array(p["low"], dtype=float), np.array(p["high"], dtype=float)
        runs = ((agg["algorithms"].get(algorithm) or {}).get("mean") or {}).get("n") or 0
        if runs < 2:  # one run has no spread to show
            low = high = np.full_like(taus, np.nan)
        series.append(Series(algorithm, taus, np.array(p["fraction"], dtype=float), low, high))
    return _line_plot(series, "normalised score τ", "fraction of runs with score > τ", fraction=True)


# WCAG 2 relative luminance and contrast ratio: value labels must reach 4.5:1 against their cell.
def relative_luminance(rgb: Any) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Any, b: Any) -> float:
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_colour(background: Any) -> str:
    """Black or white, whichever contrasts more; the better of the two is always above 4.5:1."""
    return "black" if contrast_ratio(background, (0, 0, 0)) >= contrast_ratio(background, (1, 1, 1)) else "white"


def _label_cells(ax: Any, image: Any, matrix: np.ndarray, fmt: Any) -> None:
    for (i, j), v in np.ndenumerate(matrix):
        if np.isfinite(v):
            ax.text(j, i, fmt(v), ha="center", va="center", fontsize=8, color=text_colour(image.cmap(image.norm(v))))


def _short(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


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
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdBu")  # a probability: the scale is exactly [0, 1]
    labels = [plain(n) for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    if len(names) <= 12:
        _label_cells(ax, image, matrix, lambda v: f"{v:.2f}")
    fig.colorbar(image, ax=ax, label="P(row > column)")
    return fig


def wrap_name(name: str, width: int = 14) -> str:
    """A composition name in lines of about `width` characters, broken after its separators
    (commas, spaces, underscores, hyphens); a longer piece stays whole and the column widens."""
    lines: list[str] = []
    line = ""
    for piece in re.findall(r"[^,\s_-]*[,\s_-]*", name):
        if line and len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    return "\n".join([*lines, line.rstrip()])


def _widest(fig: Any, labels: list[Any]) -> float:
    """The widest label in inches (a text's extent does not depend on where it sits)."""
    renderer = fig.canvas.get_renderer()
    return max((t.get_window_extent(renderer).width for t in labels), default=0.0) / fig.dpi


def _cell_matrix(cells: list[dict[str, Any]], metric: str) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """[algorithm, (split, composition)] of the metric's mean, NaN where there is none."""
    columns = list(dict.fromkeys((c["split"], c["composition"]) for c in cells))
    algorithms = list(dict.fromkeys(c["algorithm"] for c in cells))
    matrix = np.full((len(algorithms), len(columns)), np.nan)
    for c in cells:
        est = c[metric]["mean"] if c[metric] else None
        if est and est["value"] is not None:
            matrix[algorithms.index(c["algorithm"]), columns.index((c["split"], c["composition"]))] = est["value"]
    return matrix, algorithms, columns


def _composition_heatmap(cells: list[dict[str, Any]], metric: str) -> Any:
    matrix, algorithms, columns = _cell_matrix(cells, metric)
    fig = _pyplot().figure()
    ax = fig.add_subplot()
    limits = (0, 1) if is_fraction(metric) else (None, None)
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=limits[0], vmax=limits[1])
    ax.set_xticks(range(len(columns)), [plain(f"{s}\n{wrap_name(n)}") for s, n in columns], fontsize=8)
    ax.set_yticks(range(len(algorithms)), [plain(a) for a in algorithms], fontsize=8)
    _label_cells(ax, image, matrix, _short)
    # Columns as wide as their widest label (plus a gap), so horizontal labels never touch.
    column = max(0.8, _widest(fig, ax.get_xticklabels()) + 0.15)
    _place(fig, ax, column * len(columns), max(1.2, 0.3 * len(algorithms)))  # the colour bar needs some height
    fig.colorbar(image, cax=fig.add_axes(_colorbar_rect(fig, ax)), label=plain(metric))
    return fig


def _place(fig: Any, ax: Any, width: float, height: float) -> None:
    """Axes of exactly width x height inches; tick labels and the colour bar may fall outside the
    figure, which the tight bounding box of `_figure` takes in."""
    fig.set_size_inches(width + 1.2, height + 0.2)
    ax.set_position((0.05 / (width + 1.2), 0.1 / (height + 0.2), width / (width + 1.2), height / (height + 0.2)))


def _colorbar_rect(fig: Any, ax: Any) -> tuple[float, float, float, float]:
    fig_width = fig.get_size_inches()[0]
    box = ax.get_position()
    return (box.x1 + 0.12 / fig_width, box.y0, 0.15 / fig_width, box.height)
