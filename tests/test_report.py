"""`harness report`: the leaderboard files, their numbers, failures and missing runs, escaping,
and the HTML page rendered in a real headless Chromium.

The store is a real SQLite file filled through the coordinator's own `Store` calls with
known evaluation values, so every expected number below is computed by hand from them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.config import load_suite
from harness.registry import took_no_gradient_step
from harness.report.markdown import md_text
from harness.report.model import Bootstrap, _rank, collect
from harness.run.plan import plan
from harness.run.store import RunResult, Store

HOSTILE = "<script>alert('x')</script> & | <b>bold</b>"

SUITE = {
    "description": f"report test suite {HOSTILE}",
    "metric": "return",
    "seeds": 4,
    "budget": {"env_steps": 200, "eval_every": 100, "eval_episodes": 2},
    "algorithms": ["iql", "vdn"],
    "tasks": {
        "climbing": {"env": "matrix", "args": {"game": "climbing"}, "description": HOSTILE,
                     "reference": {"random": -31 / 9, "best": 11}},
        "two_type": {"env": "matrix", "args": {"game": "two_type"},
                     "train": [{"types": ["A", "B"]}, {"types": ["B", "A"]}], "test": [{"types": ["B", "B"]}]},
    },
}


def final_value(task: str, algorithm: str, seed: int, composition_index: int) -> float:
    """The (made-up) final score of each run on each composition: distinct and easy to average."""
    base = 1.0 if algorithm == "iql" else 5.0  # vdn, or a test's plugin standing in for it
    return base + seed + 0.5 * composition_index + (2.0 if task == "two_type" else 0.0)


@pytest.fixture()
def board(tmp_path: Path):
    """A suite file and its store: every run done except vdn/climbing seed 3 (failed) and
    iql/two_type seed 3 (never started); iql/climbing seed 2 took no gradient step."""
    path = tmp_path / "report_suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    suite = load_suite(str(path), [f"store={store_url}"])
    store = Store(store_url)
    specs = plan(suite)
    store.register(specs)
    for spec in specs:
        if (spec.task, spec.algorithm, spec.seed) == ("two_type", "iql", 3):
            continue
        if (spec.task, spec.algorithm, spec.seed) == ("climbing", "vdn", 3):
            store.finish(RunResult(spec.run_id, "failed", "non-finite loss (nan) at env step 100"))
            continue
        untrained = (spec.task, spec.algorithm, spec.seed) == ("climbing", "iql", 2)
        store.finish(RunResult(spec.run_id, "done", None, evals_for(spec), env_steps=200,
                               grad_steps=0 if untrained else 10, seconds=10.0 + spec.seed))
    return path, store_url, suite, store


def evals_for(spec) -> list[dict]:
    rows = []
    comps = [(split, c["name"]) for split, cs in spec.task_config["splits"].items() for c in cs]
    for step in (0, 100, 200):
        for j, (split, name) in enumerate(comps):
            value = final_value(spec.task, spec.algorithm, spec.seed, j) * step / 200
            for metric, v in (("return", value), ("win_rate", float(value > 5))):
                rows.append({"kind": "curve", "env_steps": step, "split": split, "composition": name,
                             "metric": metric, "value": v, "episodes": 2})
                if step == 200:
                    rows.append({"kind": "absolute", "env_steps": step, "split": split, "composition": name,
                                 "metric": metric, "value": v, "episodes": 20})
    return rows


def run_report(path: Path, store_url: str, out: Path, *extra: str) -> int:
    return main(["report", f"suite={path}", f"store={store_url}", f"out={out}", "reps=500", *extra])


def test_report_writes_every_artefact_with_hand_checked_numbers(board, tmp_path):
    path, store_url, suite, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out) == 0
    assert {p.name for p in out.iterdir()} == {"README.md", "leaderboard.json", "marl_eval.json", "index.html",
                                              "manifest.json"}
    doc = json.loads((out / "leaderboard.json").read_text())
    # iql on climbing: 4 done runs with final scores 1, 2, 3, 4.
    row = next(r for r in doc["rows"] if (r["task"], r["split"], r["algorithm"]) == ("climbing", "train", "iql"))
    assert row["return"]["mean"]["value"] == pytest.approx(2.5)
    assert row["return"]["mean"]["n"] == 4
    assert 1.0 <= row["return"]["mean"]["ci_low"] < 2.5 < row["return"]["mean"]["ci_high"] <= 4.0
    # two_type train: the mean over its two compositions per run: 3 + seed + 0.25 (seeds 0..3).
    row = next(r for r in doc["rows"] if (r["task"], r["split"], r["algorithm"]) == ("two_type", "train", "vdn"))
    assert row["return"]["mean"]["value"] == pytest.approx(np.mean([7.25 + s for s in range(4)]))
    assert row["return"]["mean"]["n"] == 4  # runs, not runs x compositions
    row = next(r for r in doc["rows"] if (r["task"], r["split"], r["algorithm"]) == ("two_type", "train", "iql"))
    assert row["return"]["mean"]["n"] == 3 and row["missing"] == 1
    # Wall time per run (10 + seed seconds), over the done runs only: seeds 0, 1, 2.
    assert row["wall_seconds"]["mean"]["value"] == pytest.approx(11.0) and row["wall_seconds"]["mean"]["n"] == 3
    assert "wall s per run" in (out / "README.md").read_text()
    # The generalization gap per run is train − test = (7.25 + s) − (8 + s) = −0.75 exactly.
    gap = next(g for g in doc["generalization_gap"] if (g["task"], g["algorithm"]) == ("two_type", "vdn"))
    assert gap["gap"]["value"] == pytest.approx(-0.75)
    assert gap["gap"]["ci_low"] == pytest.approx(-0.75) and gap["gap"]["ci_high"] == pytest.approx(-0.75)
    # vdn beats iql by 4 on every seed: ranks 1 and 2, intervals apart.
    ranks = {r["algorithm"]: (r["rank"], r["tied"]) for r in doc["rows"] if (r["task"], r["split"]) == ("climbing", "train")}
    assert ranks == {"vdn": (1, False), "iql": (2, False)}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1, 2, 3]
    assert manifest["packages"]["numpy"] == np.__version__
    assert manifest["suite_hash"] and manifest["store"] == store_url
    assert doc["manifest"]["suite_hash"] == manifest["suite_hash"]


def test_compute_sums_the_finished_runs_per_algorithm(board, tmp_path):
    """Per task and algorithm: runs, env steps, gradient steps and wall hours of the done runs
    only (vdn/climbing seed 3 failed; iql/two_type seed 3 never ran; iql/climbing seed 2 took no
    gradient step); every format shows them."""
    path, store_url, _, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out) == 0
    compute = {(c["task"], c["algorithm"]): c for c in json.loads((out / "leaderboard.json").read_text())["compute"]}
    vdn, iql = compute[("climbing", "vdn")], compute[("climbing", "iql")]
    assert (vdn["runs"], vdn["env_steps"], vdn["grad_steps"]) == (3, 600, 30)
    assert vdn["wall_hours"] == pytest.approx((10 + 11 + 12) / 3600)
    assert (iql["runs"], iql["grad_steps"]) == (4, 30) and iql["wall_hours"] == pytest.approx(46 / 3600)
    readme = (out / "README.md").read_text()
    assert "## Compute" in readme and "| climbing | vdn | 3 | 600 | 30 | 0.01 |" in readme
    assert "<h2>Compute</h2>" in (out / "index.html").read_text()


def test_compute_says_n_a_where_runs_did_not_record_gradient_steps():
    from harness.report.tables import compute_table

    entries = [{"task": "t", "algorithm": "a", "runs": 2, "env_steps": 10, "grad_steps": None, "wall_hours": 0.5},
               {"task": "t", "algorithm": "b", "runs": 1, "env_steps": 5, "grad_steps": 7, "wall_hours": 0.25}]
    _, rows = compute_table({"compute": entries})
    assert rows == [["t", "a", "2", "10", "n/a", "0.50"], ["t", "b", "1", "5", "7", "0.25"],
                    ["all", "all", "3", "15", "n/a", "0.75"]]


def test_failed_missing_and_untrained_runs_are_shown_not_hidden(board, tmp_path):
    path, store_url, _, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out, "format=md,json") == 0
    doc = json.loads((out / "leaderboard.json").read_text())
    assert [f["run"] for f in doc["problems"]["failed"]] == ["climbing/vdn/seed3"]
    assert "non-finite loss" in doc["problems"]["failed"][0]["reason"]
    assert [m["run"] for m in doc["problems"]["missing"]] == ["two_type/iql/seed3"]
    row = next(r for r in doc["rows"] if (r["task"], r["split"], r["algorithm"]) == ("climbing", "train", "vdn"))
    assert (row["done"], row["planned"], row["failed"], row["missing"]) == (3, 4, 1, 0)
    readme = (out / "README.md").read_text()
    assert "climbing/vdn/seed3 | failed | non-finite loss (nan) at env step 100" in readme
    assert "two_type/iql/seed3 | pending" in readme
    assert [u["run"] for u in doc["problems"]["untrained"]] == ["climbing/iql/seed2"]
    assert "climbing/iql/seed2 | done, untrained | took no gradient step within the budget" in readme
    assert "3/4 (1 failed)" in readme and "3/4 (1 missing)" in readme
    # The first lines: budget, seeds, finished runs and the interval method.
    first = readme.split("\n\n")[1]
    assert "seeds [0, 1, 2, 3], 14 of 16 planned runs finished" in first
    assert "expanded percentile bootstrap interval (Hesterberg 2015" in first and "Wilson" in first
    assert not (out / "index.html").exists()  # only the formats asked for (and the manifest)


def test_only_learning_algorithms_count_as_untrained_without_gradient_steps():
    assert took_no_gradient_step("qmix", 0)
    assert not took_no_gradient_step("qmix", 5)
    assert not took_no_gradient_step("qmix", None)  # a store written before the count existed
    assert not took_no_gradient_step("random", 0)  # it learns nothing by design


def test_unequal_run_counts_are_counted_in_aggregates(board):
    _, _, suite, store = board
    doc = collect(suite, store, Bootstrap(reps=300))
    (agg,) = doc["aggregates"]  # climbing only: two_type declares no reference scores
    assert agg["split"] == "train" and agg["tasks"] == ["climbing"]
    assert agg["left_out"] == ["two_type (no reference scores)"]
    assert agg["algorithms"]["vdn"]["mean"]["n"] == 3 and agg["algorithms"]["iql"]["mean"]["n"] == 4  # runs
    # normalised: (score − random) / (best − random)
    expected = np.mean([(5 + s + 31 / 9) / (11 + 31 / 9) for s in range(3)])
    assert agg["algorithms"]["vdn"]["mean"]["value"] == pytest.approx(expected)
    poi = {(p["x"], p["y"]): p["value"] for p in agg["probability_of_improvement"]}
    assert poi[("vdn", "iql")] == pytest.approx(1.0)  # vdn's 5, 6, 7 beat iql's 1, 2, 3, 4 in every pair
    assert poi[("vdn", "iql")] + poi[("iql", "vdn")] == pytest.approx(1.0)


def test_user_strings_are_escaped_everywhere(board, tmp_path):
    path, store_url, _, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out) == 0
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; | &lt;b&gt;bold&lt;/b&gt;" in page
    # No external resource: every src is an embedded image, and the CSP forbids the rest.
    assert set(re.findall(r"src='([a-z]+):", page)) == {"data"}
    assert "default-src 'none'" in page
    readme = (out / "README.md").read_text()
    assert "<script>" not in readme and md_text(HOSTILE) in readme


def test_rank_ties_where_intervals_overlap():
    def row(name, value, low, high):
        est = {"value": value, "ci_low": low, "ci_high": high, "n": 5}
        return {"task": "t", "split": "test", "algorithm": name, "return": {"mean": est}}

    rows = _rank([row("a", 1.0, 0.5, 1.5), row("b", 3.0, 2.5, 3.5), row("c", 2.4, 2.0, 2.6),
                  row("d", 0.2, 0.1, 0.3), {"task": "t", "split": "test", "algorithm": "e", "return": {"mean": None}}],
                 "return")
    assert {r["algorithm"]: (r["rank"], r["tied"]) for r in rows} == {
        "b": (1, False), "c": (1, True), "a": (3, False), "d": (4, False), "e": (None, False)}


def test_marl_eval_export_layout(board, tmp_path):
    path, store_url, _, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out, "format=json") == 0
    data = json.loads((out / "marl_eval.json").read_text())
    run = data["matrix"]["two_type_train"]["vdn"]["seed_1"]
    assert sorted(run) == ["absolute_metrics", "step_0", "step_1", "step_2"]
    assert run["step_2"]["step_count"] == 200
    assert run["step_2"]["return"] == [8.0, 8.5]  # one value per composition of the split
    assert run["absolute_metrics"]["return"] == [8.0, 8.5]
    assert "seed_3" not in data["matrix"]["two_type_train"]["iql"]  # never ran


@pytest.mark.parametrize("option, message", [
    ("format=pdf", "expected a comma-separated list of md, json, html"),
    ("format=table,md", "table alone"),
    ("reps=10", "bootstrap resamples >= 100"),
])
def test_bad_options_give_a_clear_error(board, tmp_path, capsys, option, message):
    path, store_url, _, _ = board
    assert main(["report", f"suite={path}", f"store={store_url}", f"out={tmp_path / 'x'}", option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_matrix_games_reference_scores_are_the_payoff_means():
    from scenarios.matrix import BUILTIN_GAMES

    suite = load_suite("matrix_games")
    for task in suite.tasks:
        if task.reference is None:
            continue
        payoff = np.asarray(BUILTIN_GAMES[task.args.game](task.args), dtype=float)
        assert task.reference["random"] == pytest.approx(payoff.mean(), abs=1e-5), task.name
        assert task.reference["best"] == payoff.max(), task.name


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def assert_renders(page: Path, tmp_path: Path) -> dict[str, str]:
    """Load the page in headless Chromium: it loaded, every image decoded, no script error, no
    external request; returns the data-* attributes its check script set on <body>."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1280,1000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("loaded") == "yes", proc.stderr[-2000:]
    assert attrs["images"] == str(page.read_text().count("<img ")) and attrs["broken"] == "0"
    assert "errors" not in attrs  # no script error
    assert "Refused to load" not in proc.stderr  # nothing external was even attempted
    return attrs


NO_CHROMIUM = "no Chromium here (Debian: apt install chromium) to render index.html"


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_index_html_renders_in_headless_chromium(board, tmp_path):
    from matplotlib.image import imread

    path, store_url, _, _ = board
    out = tmp_path / "board"
    assert run_report(path, store_url, out, "format=html") == 0
    page = out / "index.html"
    n_images = page.read_text().count("<img ")
    assert n_images >= 5  # team size and curves are absent here; profiles, PoI, curves, heatmap are not
    attrs = assert_renders(page, tmp_path)
    # A full-page screenshot at 1280 px, as a reader's browser would lay the page out.
    shot = tmp_path / "index.png"
    height = min(int(attrs["height"]), 16000)  # Chromium's largest capture
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                    f"--window-size=1280,{height}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = imread(shot)
    assert pixels.shape[:2] == (height, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page


def test_non_finite_statistics_become_null_in_json():
    from harness.report.files import _json

    # Welch's t between two constant samples with different means is ±inf.
    text = _json({"welch_t": float("-inf"), "p": 0.0, "nested": [{"x": float("nan")}, (1.5, float("inf"))]})
    assert json.loads(text) == {"welch_t": None, "p": 0.0, "nested": [{"x": None}, [1.5, None]]}


def test_tables_list_tied_algorithms_best_first():
    from harness.report.tables import split_table

    def row(name, value, low, high):
        est = {"value": value, "ci_low": low, "ci_high": high, "n": 5}
        return {"task": "t", "split": "train", "algorithm": name, "return": {"mean": est, "iqm": est},
                "win_rate": {"mean": None}, "absolute": {"mean": None}, "done": 5, "planned": 5}

    report = {"metric": "return", "rows": _rank([row("random", 0.0, 0.0, 0.0), row("vdn", 0.03, 0.0, 0.08),
                                                 row("qmix", 0.02, 0.0, 0.06)], "return")}
    _, rows = split_table(report, "t", "train")
    assert [(r[0], r[1]) for r in rows] == [("1", "vdn"), ("=1", "qmix"), ("=1", "random")]


def test_a_report_with_other_overrides_does_not_replace_the_published_one(board, tmp_path, monkeypatch, capsys):
    path, store_url, suite, _ = board
    monkeypatch.chdir(tmp_path)  # the default folder is leaderboards/<suite>/ here
    base = ["report", f"suite={path}", f"store={store_url}", "reps=100", "format=json"]
    assert main(base) == 0
    published = tmp_path / "leaderboards" / suite.name / "leaderboard.json"
    before = published.read_text()
    assert main([*base, "tasks=[climbing]"]) == 2
    err = capsys.readouterr().err
    assert "holds a leaderboard made with overrides" in err and "tasks=[climbing]" in err and "replace=true" in err
    assert published.read_text() == before
    assert main([*base, "tasks=[climbing]", f"out={tmp_path / 'partial'}"]) == 0  # elsewhere: fine
    assert main([*base]) == 0  # the same overrides again: a refresh, allowed
    assert main([*base, "tasks=[climbing]", "replace=true"]) == 0
    assert json.loads(published.read_text())["manifest"]["overrides"][-1] == "tasks=[climbing]"


def test_the_reproduce_line_carries_the_overrides_the_board_was_made_with(board, tmp_path):
    """A board made for a subset (tasks=, algorithms=) must say how to remake that subset,
    quoted so the line pastes into a shell."""
    import shlex

    path, store_url, _, _ = board
    out = tmp_path / "subset"
    assert main(["report", f"suite={path}", f"store={store_url}", "reps=100", "format=md", "tasks=[climbing]",
                 f"out={out}"]) == 0
    line = next(x for x in (out / "README.md").read_text().splitlines() if x.startswith("- Reproduce:"))
    commands = line.split("`")[1::2]
    assert [shlex.split(c)[:2] for c in commands] == [["harness", "run"], ["harness", "report"]]
    for command in commands:
        words = shlex.split(command)
        assert f"suite={path}" in words and "tasks=[climbing]" in words
        assert not any(w.startswith(("out=", "format=", "reps=")) for w in words)


def test_ranks_compare_with_the_best_only_not_through_a_chain():
    """c overlaps b, b overlaps the best a, c does not overlap a: b shares rank 1 (=1, not
    distinguishable from the best) and c does not (a chain of overlaps used to carry it up)."""
    def row(name, value, low, high):
        return {"task": "t", "split": "test", "algorithm": name,
                "return": {"mean": {"value": value, "ci_low": low, "ci_high": high, "n": 5}}}

    rows = _rank([row("a", 3.0, 2.8, 3.2), row("b", 2.5, 2.1, 2.9), row("c", 2.0, 1.5, 2.2)], "return")
    assert {r["algorithm"]: (r["rank"], r["tied"]) for r in rows} == {"a": (1, False), "b": (1, True),
                                                                      "c": (3, False)}
    # Equal means below the best share a rank: 1 + the number of higher means.
    rows = _rank([row("a", 8.0, 8.0, 8.0), row("b", 0.0, 0.0, 0.0), row("c", 0.0, 0.0, 0.0), row("d", -1.0, -2, -0.5)],
                 "return")
    assert {r["algorithm"]: r["rank"] for r in rows} == {"a": 1, "b": 2, "c": 2, "d": 4}


def test_a_report_from_fewer_finished_runs_does_not_replace_the_published_one(board, tmp_path, monkeypatch, capsys):
    """A store with fewer finished runs than the published board (a partial re-run) is refused,
    naming both counts, unless replace=true."""
    path, store_url, suite, store = board
    monkeypatch.chdir(tmp_path)
    base = ["report", f"suite={path}", "reps=100", "format=json"]
    assert main([*base, f"store={store_url}"]) == 0
    published = tmp_path / "leaderboards" / suite.name / "leaderboard.json"
    before = published.read_text()
    partial = f"sqlite:///{tmp_path / 'partial.db'}"
    fewer = Store(partial)
    fewer.register(plan(suite))
    spec = plan(suite)[0]
    fewer.finish(RunResult(spec.run_id, "done", None, evals_for(spec), env_steps=200, grad_steps=10, seconds=1.0))
    assert main([*base, f"store={partial}"]) == 2
    err = capsys.readouterr().err
    assert "leaderboard of 14 finished runs and this store has 1" in err and "replace=true" in err
    assert published.read_text() == before
    assert main([*base, f"store={partial}", "replace=true"]) == 0


def test_status_report_and_show_never_create_a_store(tmp_path, capsys):
    """A mistyped store is an error naming the path (exit 2), and nothing is created."""
    missing = tmp_path / "no" / "such" / "runs.db"
    for command in ("status", "report"):
        assert main([command, "suite=matrix_games", f"store=sqlite:///{missing}"]) == 2
        assert f"no results store at {missing}" in capsys.readouterr().err
    assert main(["show", "suite=matrix_games", "tasks=[identity]", f"store=sqlite:///{missing}",
                 f"checkpoint_dir={tmp_path / 'ck'}", "calibrate=false"]) == 0
    assert "estimated time: unknown" in capsys.readouterr().out
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty.db"
    empty.touch()  # a file that is not a store
    assert main(["status", "suite=matrix_games", f"store=sqlite:///{empty}"]) == 2
    assert "holds no harness results" in capsys.readouterr().err


def test_wilson_intervals_only_for_metrics_the_backend_declares_yes_no(board):
    """The matrix backend declares win_rate a per-run outcome: its 0/1 means get Wilson
    intervals; a return that happens to be 0 or 1, or a metric of another backend, does not."""
    from harness.report.model import _estimates

    _, _, suite, store = board
    doc = collect(suite, store, Bootstrap(reps=200))
    row = next(r for r in doc["rows"] if (r["task"], r["split"], r["algorithm"]) == ("climbing", "train", "vdn"))
    assert row["win_rate"]["mean"]["method"] == "wilson" and row["return"]["mean"]["method"] == "expanded"
    zeros_and_ones = np.array([[0.0], [1.0], [1.0]])
    assert _estimates(zeros_and_ones, Bootstrap(reps=200))["mean"]["method"] == "expanded"
    assert _estimates(zeros_and_ones, Bootstrap(reps=200), outcome=True)["mean"]["method"] == "wilson"
    # Two compositions per run: one trial per run (4 runs, 2 wins), not 8 cells; a run with one
    # composition won and one lost is no yes/no outcome.
    agreeing = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    est = _estimates(agreeing, Bootstrap(reps=200), outcome=True)["mean"]
    assert est["method"] == "wilson" and est["ci_low"] == pytest.approx(0.150, abs=1e-3)  # Wilson 2/4
    mixed = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert _estimates(mixed, Bootstrap(reps=200), outcome=True)["mean"]["method"] == "expanded"


def test_the_terminal_table_ranks_like_the_boards_and_names_its_interval(board, capsys):
    path, store_url, _, _ = board
    base = ["report", f"suite={path}", f"store={store_url}", "format=table", "reps=100"]
    assert main([*base, "interval=percentile"]) == 0
    printed = capsys.readouterr().out
    assert "CI over seeds: percentile bootstrap, Wilson for yes/no outcomes" in printed
    lines = [line for line in printed.splitlines() if "│ climbing" in line and "│ train" in line]
    # vdn (mean 6) above iql (mean 2), its interval clear of vdn's: ranks 1 and 2, in that order.
    assert [re.split(r"\s*│\s*", line)[3:5] for line in lines] == [["1", "vdn"], ["2", "iql"]]
    assert main([*base, "interval=studentized"]) == 2
    assert "interval: expected one of expanded, percentile, bca" in " ".join(capsys.readouterr().err.split())


def test_a_board_recomputed_from_its_own_files_has_the_same_numbers(board, tmp_path, capsys):
    """report from=DIR reads the runs back from a published board (leaderboard.json and
    marl_eval.json), for boards whose store is gone: same rows, cells and curves; the manifest
    says where the runs came from; a board of another suite is refused."""
    path, store_url, _, _ = board
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_report(path, store_url, first, "format=json,md") == 0
    assert main(["report", f"suite={path}", f"from={first}", f"out={second}", "reps=500", "format=json,md"]) == 0
    a, b = (json.loads((d / "leaderboard.json").read_text()) for d in (first, second))
    for key in ("rows", "cells", "curves", "generalization_gap", "problems"):
        assert a[key] == b[key], key
    assert b["manifest"]["store"] == a["manifest"]["store"]
    assert b["manifest"]["runs_from"] == {"board": str(first), "generated_at": a["manifest"]["generated_at"],
                                          "commit": a["manifest"]["git"]["commit"]}
    assert f"runs read back from the board in {first}" in (second / "README.md").read_text()
    # Recomputed again from the recomputed board: the origin stays the first board.
    third = tmp_path / "third"
    assert main(["report", f"suite={path}", f"from={second}", f"out={third}", "reps=500", "format=json"]) == 0
    assert json.loads((third / "manifest.json").read_text())["runs_from"] == b["manifest"]["runs_from"]
    other = dict(SUITE, tasks={"climbing": SUITE["tasks"]["climbing"]}, algorithms=["iql"])
    wrong = tmp_path / "other.yaml"
    wrong.write_text(yaml.safe_dump(other | {"seeds": 2}))
    capsys.readouterr()
    assert main(["report", f"suite={wrong}", f"from={tmp_path / 'nowhere'}", "format=table"]) == 2
    assert "not a readable leaderboard folder" in capsys.readouterr().err
# ---------------------------------------------------------------------------------------------
# Hostile input: names that are HTML, table syntax or mathtext; damaged board files; NaN references

MATH_NAME = "$x^{2$"  # unbalanced mathtext: matplotlib fails on it unless it is drawn as plain text
HOSTILE_ALGORITHM = "<i>al$g$</i>|x"  # a plugin's name: HTML, a table column break and mathtext


def finished_board(tmp_path: Path, suite_dict: dict, filename: str) -> tuple[Path, str]:
    """A suite file and a store in which every planned run is done."""
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(suite_dict))
    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = Store(store_url)
    specs = plan(load_suite(str(path), [f"store={store_url}"]))
    store.register(specs)
    for spec in specs:
        store.finish(RunResult(spec.run_id, "done", None, evals_for(spec), env_steps=200, grad_steps=10, seconds=1.0))
    return path, store_url


@pytest.fixture()
def hostile_board(tmp_path, monkeypatch):
    """Task, composition and algorithm names that are HTML, Markdown table syntax and mathtext, on a task with reference scores (so every plot is drawn)."""
    from harness import registry

    monkeypatch.setitem(registry._ALGORITHMS, HOSTILE_ALGORITHM, registry.get_algorithm("vdn"))
    task = {"env": "matrix", "args": {"game": "two_type"}, "description": HOSTILE,
            "reference": {"random": 0.0, "best": 10.0},
            "train": [{"name": MATH_NAME, "types": ["A", "B"]}, {"name": HOSTILE, "types": ["B", "A"]}],
            "test": [{"name": "\\frac{a$", "types": ["B", "B"]}]}
    suite = dict(SUITE, algorithms=["iql", HOSTILE_ALGORITHM], tasks={"a$b$c": task})
    return finished_board(tmp_path, suite, "hostile.yaml")  # suite names are identifiers: no markup there


def test_hostile_names_are_text_in_every_format(hostile_board, tmp_path, capsys):
    """The per-composition table header, headings, rows, plots (no mathtext) and the terminal
    table (no rich markup) all show hostile names as text, and the page still renders."""
    path, store_url = hostile_board
    out = tmp_path / "board"
    assert run_report(path, store_url, out) == 0
    printed = capsys.readouterr().out
    assert "a$b$c" in printed and HOSTILE_ALGORITHM in printed  # left as typed
    readme = (out / "README.md").read_text()
    for raw in ("<i>", "<b>", "<script>"):
        assert raw not in readme
    assert f"| algorithm | {md_text(MATH_NAME)} | {md_text(HOSTILE)} |" in readme  # the per-composition header
    assert f"### train ({md_text(MATH_NAME)}, {md_text(HOSTILE)})" in readme
    assert "### test (\\\\frac{a\\$)" in readme
    assert f"| {md_text(HOSTILE_ALGORITHM)} |" in readme  # a table row with its column break escaped
    page = (out / "index.html").read_text()
    for raw in ("<i>", "<b>", "<script>alert"):
        assert raw not in page
    assert "&lt;i&gt;al$g$&lt;/i&gt;|x" in page
    assert page.count("<img ") >= 4  # profiles, probability of improvement, curves, heatmap
    if chromium() is not None:
        assert_renders(out / "index.html", tmp_path)


def test_markdown_escapes_cannot_be_undone_and_code_spans_stay_pasteable():
    from harness.report.markdown import md_code

    # A backslash before a pipe would escape the escape: "a\\|b" must stay one table cell.
    assert md_text("a\\|b") == "a\\\\\\|b"
    assert md_text("$x$ \r<i>") == "\\$x\\$  &lt;i&gt;"  # no GitHub math, no line break, no HTML
    # Code spans show backslashes: only HTML is escaped, and backticks cannot close the span.
    assert md_code("harness run 'a|b$c'") == "`harness run 'a|b$c'`"
    assert md_code("a`b``c <i>") == "```a`b``c &lt;i&gt;```"


def test_plot_labels_are_drawn_as_plain_text(plt):
    from harness.report.html import _composition_heatmap, _curve_plot, plain

    names = [MATH_NAME, "a$b$c", "\\frac{x}", "a\\$b$"]
    curves = [dict(c, algorithm=name) for c, name in zip(fraction_curves(4), names, strict=True)]
    cells = [{"split": "train", "composition": name, "algorithm": name,
              "return": {"mean": {"value": 1.0, "ci_low": None, "ci_high": None, "n": 1}}} for name in names]
    for fig in (_curve_plot(curves, "return"), _composition_heatmap(cells, "return")):
        fig.canvas.draw()  # mathtext would raise here on MATH_NAME
        for text in texts_of(fig):
            shown, is_math = text._preprocess_math(text.get_text())
            assert not is_math, text.get_text()
    legend = [t.get_text() for t in _curve_plot(curves, "return").axes[0].get_legend().get_texts()]
    assert legend == [plain(n) for n in names]
    label = plt.figure().text(0, 0, plain("a\\$b$"))
    assert label._preprocess_math(label.get_text()) == ("a\\$b$", False)  # shown exactly as named


@pytest.mark.parametrize("name, content, problem", [
    ("manifest.json", "{not json", "is not valid JSON (line 1 col 2"),
    ("manifest.json", "[1, 2]", "holds a JSON array, not an object"),
    ("manifest.json", "42", "holds a JSON number, not an object"),
    ("manifest.json", '{"overrides": 5}', "overrides is not a list of strings"),
    ("leaderboard.json", "{\"runs\": ", "is not valid JSON"),
    ("leaderboard.json", '"board"', "holds a JSON string, not an object"),
    ("leaderboard.json", '{"runs": 3}', "has no list of runs"),
])
def test_a_damaged_published_board_is_an_error_naming_the_file(board, tmp_path, monkeypatch, capsys, name,
                                                               content, problem):
    """The refuse-to-replace check reads the published manifest and board: damaged, they are
    exit 2 naming the file and the ways out, not a JSONDecodeError; replace=true still works."""
    path, store_url, suite, _ = board
    monkeypatch.chdir(tmp_path)
    base = ["report", f"suite={path}", f"store={store_url}", "reps=100", "format=json"]
    assert main(base) == 0
    damaged = Path("leaderboards") / suite.name / name
    damaged.write_text(content)
    capsys.readouterr()
    assert main(base) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{damaged} {problem}" in err or f"{damaged}: {problem}" in err, err
    assert "fix or delete it" in err and "out=DIR" in err and "replace=true" in err and "Traceback" not in err
    assert damaged.read_text() == content  # nothing was replaced
    assert main([*base, "replace=true"]) == 0


@pytest.mark.parametrize("leaderboard, problem", [
    ("[1, 2]", "holds a JSON array, not an object"),
    ("3.5", "holds a JSON number, not an object"),
    ("{oops", "is not valid JSON"),
    ('{"runs": 3}', "do not have the layout harness report writes"),
    ('{"runs": [5]}', "do not have the layout harness report writes"),
    ('{"runs": [], "problems": []}', "do not have the layout harness report writes"),
])
def test_report_from_a_folder_of_other_json_is_an_error(board, tmp_path, capsys, leaderboard, problem):
    path, _, _, _ = board
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "leaderboard.json").write_text(leaderboard)
    (folder / "marl_eval.json").write_text("{}")
    capsys.readouterr()
    assert main(["report", f"suite={path}", f"from={folder}", "format=table"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert problem in err and "not a readable leaderboard folder" in err and "Traceback" not in err


def test_a_damaged_manifest_in_the_source_board_only_loses_its_history(board, tmp_path):
    """from=DIR needs leaderboard.json and marl_eval.json; the manifest only says where the runs
    came from, so a damaged one (not an object, or fields of the wrong type) is read as absent."""
    path, store_url, _, _ = board
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_report(path, store_url, first, "format=json") == 0
    for manifest in ("[]", '{"git": "abc", "runs_from": 7, "generated_at": "then"}'):
        (first / "manifest.json").write_text(manifest)
        assert main(["report", f"suite={path}", f"from={first}", f"out={second}", "reps=100", "format=json,md"]) == 0
        origin = json.loads((second / "manifest.json").read_text())["runs_from"]
        assert origin["board"] == str(first) and origin["commit"] is None


def test_tasks_with_non_finite_reference_scores_are_left_out_of_aggregates(board):
    """A suite may carry `.nan` or `.inf` reference scores: the aggregates leave that task out and
    say why; the rest of the report is computed as usual."""
    _, _, suite, store = board
    tasks = {t.name: t for t in suite.tasks}
    tasks["climbing"].reference = {"random": float("nan"), "best": 1.0}
    tasks["two_type"].reference = {"random": 0.0, "best": 10.0}
    doc = collect(suite, store, Bootstrap(reps=200))
    agg = next(a for a in doc["aggregates"] if a["split"] == "train")  # climbing has no test split
    assert agg["tasks"] == ["two_type"]
    assert agg["left_out"] == ["climbing (reference scores not finite: random nan, best 1.0)"]
    assert {r["task"] for r in doc["rows"]} == {"climbing", "two_type"}
    tasks["two_type"].reference = {"random": 0.0, "best": float("inf")}
    doc = collect(suite, store, Bootstrap(reps=200))
    assert doc["aggregates"] == []  # no task left to aggregate, and no crash
    from harness.report.html import html_page
    from harness.report.markdown import markdown

    manifest = {"suite_hash": "h", "store": "s", "generated_at": "now", "packages": {}, "suite_file": suite.path,
                "overrides": []}
    assert "## climbing" in markdown(doc, manifest) and "<h2>climbing</h2>" in html_page(doc, manifest)


# ---------------------------------------------------------------------------------------------
# Plot layout: the page's figures, drawn from hand-made report pieces and measured


LONG_NAMES = [f"marine,marine,stalker,zealot,colossus_{i}" for i in range(5)] + \
    [f"supercalifragilistic_team_{i}" for i in range(3)]


@pytest.fixture()
def plt():
    from harness.report.html import _pyplot

    pyplot = _pyplot()
    yield pyplot
    pyplot.close("all")


def texts_of(fig) -> list:
    """Every visible, non-empty text the figure draws: tick labels, titles, axis labels, legends."""
    out = list(fig.texts)
    for ax in fig.axes:
        out += [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend():
            out += ax.get_legend().get_texts()
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def assert_no_text_overlaps(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(0.98, 0.98)) for t in texts_of(fig)]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def assert_legends_outside(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    for legend in legends:
        for ax in fig.axes:
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def fraction_curves(n_algorithms: int) -> list[dict]:
    """Win-rate curves from 0 to about 1; the first algorithm has one run behind every point."""
    curves = []
    for k in range(n_algorithms):
        points = []
        for step in (0, 1000, 2000, 3000):
            v = min(1.0, step / 3000 * (k + 1) / n_algorithms * 1.2)
            points.append({"env_steps": step, "value": v, "ci_low": max(0.0, v - 0.2),
                           "ci_high": min(1.0, v + 0.2), "n": 1 if k == 0 else 5})
        curves.append({"task": "t", "split": "train", "algorithm": f"algorithm_{k}", "points": points})
    return curves


def fraction_team_sizes(n_algorithms: int) -> list[dict]:
    return [{"task": "t", "algorithm": f"algorithm_{k}", "team_size": size,
             "splits": ["train"] if size <= 3 else ["test"],
             "score": {"value": max(0.0, 1 - 0.2 * (size - 2) - 0.05 * k), "ci_low": 0.0, "ci_high": 1.0, "n": 5}}
            for k in range(n_algorithms) for size in (2, 3, 4, 5, 6)]


def profile_aggregate(n_algorithms: int) -> dict:
    taus = np.linspace(-0.5, 1.0, 11)
    names = [f"algorithm_{k}" for k in range(n_algorithms)]
    fraction = np.clip(1 - taus, 0, 1)
    return {"algorithms": {a: {"mean": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}} for a in names},
            "profile": {"taus": taus.tolist(),
                        "algorithms": {a: {"fraction": fraction.tolist(), "low": np.clip(fraction - 0.1, 0, 1).tolist(),
                                           "high": np.clip(fraction + 0.1, 0, 1).tolist()} for a in names}}}


def test_wcag_contrast_ratio_matches_the_standard_s_reference_values():
    from harness.report.html import contrast_ratio, text_colour

    assert contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21.0)
    assert contrast_ratio((1, 1, 1), (1, 1, 1)) == pytest.approx(1.0)
    assert contrast_ratio((0x76 / 255,) * 3, (1, 1, 1)) == pytest.approx(4.54, abs=0.01)  # #767676 on white
    assert text_colour((0.99, 0.91, 0.14)) == "black" and text_colour((0.27, 0.0, 0.33)) == "white"  # viridis ends


def test_heatmap_labels_do_not_overlap_and_every_value_contrasts_with_its_cell(plt):
    from matplotlib.colors import to_rgba

    from harness.report.html import _composition_heatmap, contrast_ratio

    values = np.linspace(0.0, 1.0, 4 * len(LONG_NAMES)).reshape(4, -1)
    cells = [{"split": "test" if j > 4 else "train", "composition": name, "algorithm": f"algorithm_{i}",
              "win_rate": {"mean": {"value": float(values[i, j]), "ci_low": None, "ci_high": None, "n": 3}}}
             for i in range(4) for j, name in enumerate(LONG_NAMES)]
    fig = _composition_heatmap(cells, "win_rate")
    assert_no_text_overlaps(fig)  # the tick labels of neighbouring columns above all
    heatmap = fig.axes[0]
    image = heatmap.images[0]
    assert image.norm.vmin == 0 and image.norm.vmax == 1  # a rate: the colour scale is [0, 1]
    assert len(heatmap.texts) == values.size
    for label in heatmap.texts:
        j, i = (round(c) for c in label.get_position())
        cell = image.cmap(image.norm(values[i, j]))
        assert contrast_ratio(to_rgba(label.get_color()), cell) >= 4.5, (label.get_text(), label.get_color())


@pytest.mark.parametrize("n_algorithms", [3, 14])
def test_line_plots_keep_rates_in_0_1_legends_outside_and_text_apart(plt, n_algorithms):
    from matplotlib.collections import LineCollection

    from harness.report.html import MAX_OVERLAID, _curve_plot, _profile_plot, _team_size_plot, line_plot_rule

    figures = {"curves": _curve_plot(fraction_curves(n_algorithms), "win_rate"),
               "team sizes": _team_size_plot(fraction_team_sizes(n_algorithms), "success_rate"),
               "profiles": _profile_plot(profile_aggregate(n_algorithms))}
    for name, fig in figures.items():
        for ax in fig.axes:
            assert ax.get_ylim() == (0.0, 1.0), name
        assert_legends_outside(fig)
        assert_no_text_overlaps(fig)
        if n_algorithms > MAX_OVERLAID:  # small multiples: one panel per algorithm, named in its title
            assert [ax.get_title() for ax in fig.axes] == [f"algorithm_{k}" for k in range(n_algorithms)], name
        else:
            assert len(fig.axes) == 1 and fig.axes[0].get_legend() is not None, name
    # Bands only where two runs or more stand behind a point: none for algorithm_0 (one run each).
    curves = figures["curves"].axes
    bands = [sum(not isinstance(c, LineCollection) for c in ax.collections) for ax in curves]
    assert bands == ([0] + [1] * (n_algorithms - 1) if n_algorithms > MAX_OVERLAID else [n_algorithms - 1])
    assert ("one panel per algorithm" in line_plot_rule(n_algorithms)) == (n_algorithms > MAX_OVERLAID)
