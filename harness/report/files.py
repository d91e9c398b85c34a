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
import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from harness.config import COMMAND_LINE, Suite
from harness.errors import ConfigError
from harness.report.html import html_page
from harness.report.markdown import markdown
from harness.report.model import RunRecord
from harness.run.plan import plan, stable_hash

FORMATS = ("md", "json", "html")
REPO_ROOT = Path(__file__).resolve().parents[2]
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
