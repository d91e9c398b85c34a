"""Claims as code: declared in a suite, validated like it, checked against the store's runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GOOD_SUITE, run_cli
from helpers import write_suite as write

from harness.config import load_suite
from harness.errors import ConfigError
from harness.report import claims
from harness.run.plan import plan
from harness.run.store import RunResult, Store

SUITE = GOOD_SUITE.replace("algorithms: [vdn]\n", """algorithms: [vdn]
configurations:
  vdn_fast: {algorithm: vdn, params: {lr: 0.003}}
""") + """\
claims:
  vdn_beats_qmix:
    source: a test
    statement: VDN reaches the optimum more often than QMIX.
    task: game
    split: train
    metric: win_rate
    better: vdn
    than: [qmix]
    seeds: 8
    test: fisher
"""


BAD_CLAIMS = {
    "unknown_algorithm": (SUITE.replace("than: [qmix]", "than: [qmixx]"),
                          ["claims.vdn_beats_qmix.than[0]", "unknown algorithm", "did you mean 'qmix'", ":19"]),
    "too_few_seeds": (SUITE.replace("seeds: 8", "seeds: 2"),
                      ["claims.vdn_beats_qmix.seeds", "cannot reach p <= 0.05", "at least 3 seeds", ":20"]),
    "too_few_seeds_after_holm": (SUITE.replace("seeds: 8", "seeds: 3").replace("than: [qmix]", "than: [qmix, iql]"),
                                 ["claims.vdn_beats_qmix.seeds", "p <= 0.025", "over 2 comparisons, Holm",
                                  "at least 4 seeds"]),
    "unknown_test": (SUITE.replace("test: fisher", "test: t_test"),
                     ["claims.vdn_beats_qmix.test", "'fisher', 'binomial', 'mann_whitney', 'wilcoxon' or 'bootstrap'",
                      "t_test", ":21"]),
    "unknown_task": (SUITE.replace("task: game", "task: gmae"), ["claims.vdn_beats_qmix.task", "unknown task",
                                                                  "unrunnable"]),
    "missing_split": (SUITE.replace("split: train", "split: test"), ["claims.vdn_beats_qmix.split", "no test split"]),
    "scores_with_a_yes_no_test": (SUITE.replace("metric: win_rate", "metric: return"),
                                  ["claims.vdn_beats_qmix.test", "success_at"]),
    "compared_with_itself": (SUITE.replace("than: [qmix]", "than: [vdn]"), ["claims.vdn_beats_qmix.than", "distinct"]),
    "reported_for_another_algorithm": (SUITE.replace("test: fisher", "test: fisher\n    reported: {vdn: 0.9, qmx: 0.1}"),
                                       ["claims.vdn_beats_qmix.reported.qmx", "not an algorithm the claim compares",
                                        "did you mean 'qmix'"]),
    "missing_statement": (SUITE.replace("    statement: VDN reaches the optimum more often than QMIX.\n", ""),
                          ["claims.vdn_beats_qmix.statement", "missing required key"]),
    "configuration_of_nothing": (SUITE.replace("{algorithm: vdn,", "{algorithm: vdnn,"),
                                 ["configurations.vdn_fast.algorithm", "did you mean 'vdn'"]),
    "configuration_named_as_a_registered_one": (SUITE.replace("vdn_fast:", "qmix:"),
                                                ["configurations.qmix", "a name of its own"]),
    "configuration_with_an_unknown_field": (SUITE.replace("{lr: 0.003}", "{lrr: 0.003}").replace(
        "algorithms: [vdn]", "algorithms: [vdn, vdn_fast]"), ["configurations.vdn_fast.params.lrr", "unknown parameter"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CLAIMS))
def test_a_malformed_claim_exits_2_naming_the_key(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BAD_CLAIMS[case]
    code, out = run_cli(capsys, "validate", f"suite={write(tmp_path, text)}")
    assert code == 2, out
    assert "Traceback" not in out
    for fragment in expected:
        assert fragment in out, (fragment, out)


def test_validate_counts_the_claims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "validate", f"suite={write(tmp_path, SUITE)}")
    assert code == 0 and "1 claims" in out


def test_an_unrunnable_claim_is_kept_and_reported(tmp_path: Path) -> None:
    text = SUITE.replace("task: game", "task: csz\n    unrunnable: SMAX has no colossus")
    suite = load_suite(str(write(tmp_path, text)))
    (v,) = claims.check(suite, None)
    assert v.verdict == "inconclusive" and "not run here: SMAX has no colossus" in v.reason


def test_selecting_tasks_drops_the_claims_on_the_others(tmp_path: Path) -> None:
    text = SUITE.replace("tasks:\n", "tasks:\n  other:\n    env: matrix\n    args: {game: climbing}\n")
    path = write(tmp_path, text)
    assert len(load_suite(str(path)).claims) == 1
    assert load_suite(str(path), ["tasks=[other]"]).claims == []


def test_claimed_algorithms_run_as_if_listed(tmp_path: Path) -> None:
    """A claim may name an algorithm the suite does not run: its runs are the ones the suite
    would plan if it did (same params, same ids), and the board's own runs are unchanged."""
    path = write(tmp_path, SUITE)
    suite = load_suite(str(path))
    assert [s.algorithm for s in plan(suite)] == ["vdn", "vdn"]
    claim_ids = {(s.algorithm, s.seed): s.run_id for s in claims.claim_runs(suite, suite.claims[0])}
    listed = load_suite(str(path), ["algorithms=[vdn, qmix]", "seeds=8"])
    assert {(s.algorithm, s.seed): s.run_id for s in plan(listed)} == claim_ids


def test_a_configuration_is_its_algorithm_as_the_suite_runs_it(tmp_path: Path) -> None:
    text = SUITE.replace("algorithms: [vdn]", "algorithms: [vdn, vdn_fast]") + "params:\n  vdn: {batch_size: 4}\n"
    suite = load_suite(str(write(tmp_path, text)))
    specs = {s.algorithm: s for s in plan(suite) if s.seed == 0}
    assert specs["vdn_fast"].params == {**specs["vdn"].params, "lr": 0.003}
    assert specs["vdn_fast"].params["batch_size"] == 4
    assert specs["vdn_fast"].implementation == "vdn" and specs["vdn"].implementation == "vdn"
    assert specs["vdn_fast"].run_id != specs["vdn"].run_id


def _finish(store: Store, spec, won: float, won_untrained: float = 0.0) -> None:
    rows = [{"kind": "curve", "env_steps": step, "split": "train", "composition": comp, "metric": "win_rate",
             "value": value, "episodes": 2}
            for step, value in ((0, won_untrained), (spec.budget["env_steps"], won))
            for comp in ("2 agents",)]
    store.finish(RunResult(spec.run_id, "done", evals=rows, env_steps=spec.budget["env_steps"], grad_steps=1))


def _stored(tmp_path: Path, outcomes: dict[str, list[float]], text: str = SUITE):
    suite = load_suite(str(write(tmp_path, text)), [f"store=sqlite:///{tmp_path / 'store.db'}"])
    store = Store(suite.store)
    specs = claims.claim_runs(suite, suite.claims[0])
    store.register(specs)
    for spec in specs:
        values = outcomes[spec.algorithm]
        if spec.seed < len(values):
            _finish(store, spec, values[spec.seed], won_untrained=float(spec.seed == 0))
    return suite, store


def test_data_built_to_support_the_claim_support_it(tmp_path: Path) -> None:
    suite, store = _stored(tmp_path, {"vdn": [1] * 8, "qmix": [0] * 8})
    (v,) = claims.check(suite, store)
    assert v.verdict == "supported", v.lines()
    (comparison,) = v.comparisons
    assert comparison.p == pytest.approx(1 / 12870)  # 1 / C(16, 8)
    assert comparison.effect.value == 1.0
    text = "\n".join(v.lines())
    assert "vdn: 8/8 = 1 [0.676, 1]" in text
    assert "the untrained policy already succeeded in 1, kept 1; from the other 7: 7/7" in text


def test_the_papers_figures_are_printed_beside_ours_and_change_nothing(tmp_path: Path) -> None:
    text = SUITE.replace("test: fisher", "test: fisher\n    reported: {vdn: 0.25, qmix: 0.75}")
    suite, store = _stored(tmp_path, {"vdn": [1] * 8, "qmix": [0] * 8}, text)
    (v,) = claims.check(suite, store)
    assert v.verdict == "supported"  # the paper's own numbers say otherwise: they are not tested
    assert v.lines()[3] == "  the paper reports: vdn 0.25, qmix 0.75"
    assert v.lines()[4].startswith("  vdn: 8/8 = 1 [0.676, 1]")
    assert v.as_dict()["reported"] == {"vdn": 0.25, "qmix": 0.75}


def test_data_built_against_the_claim_do_not_support_it(tmp_path: Path) -> None:
    suite, store = _stored(tmp_path, {"vdn": [1, 0, 1, 0, 1, 0, 1, 0], "qmix": [1, 1, 1, 1, 1, 0, 1, 0]})
    (v,) = claims.check(suite, store)
    assert v.verdict == "not supported"
    assert v.comparisons[0].effect.value == pytest.approx(-0.25)
    assert "Holm p" in v.reason


def test_direction_less_claims_lower_scores(tmp_path: Path) -> None:
    text = SUITE.replace("test: fisher", "test: fisher\n    direction: less")
    suite, store = _stored(tmp_path, {"vdn": [0] * 8, "qmix": [1] * 8}, text)
    assert claims.check(suite, store)[0].verdict == "supported"


def test_an_effect_below_the_minimum_is_not_support(tmp_path: Path) -> None:
    text = SUITE.replace("test: fisher", "test: fisher\n    min_effect: 0.9")
    suite, store = _stored(tmp_path, {"vdn": [1] * 7 + [0], "qmix": [0] * 8}, text)
    (v,) = claims.check(suite, store)
    assert v.comparisons[0].p_holm < 0.05
    assert v.verdict == "not supported" and "below the minimum 0.9" in v.reason


def test_missing_runs_make_a_claim_inconclusive(tmp_path: Path) -> None:
    suite, store = _stored(tmp_path, {"vdn": [1] * 8, "qmix": [0] * 5})
    (v,) = claims.check(suite, store)
    assert v.verdict == "inconclusive" and "runs missing: 3 of 16 (3 pending)" in v.reason
    assert len(claims.missing_runs([v])) == 3


def test_claims_run_true_runs_what_is_missing_and_then_decides(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """End to end on real runs: `harness run` first, then the claim finds those runs done and
    runs only the rest."""
    text = SUITE.replace("seeds: 8", "seeds: 3").replace("test: fisher", "test: mann_whitney").replace(
        "metric: win_rate", "metric: return")
    path = write(tmp_path, text)
    store = f"store=sqlite:///{tmp_path / 'runs.db'}"
    ck = f"checkpoint_dir={tmp_path / 'ck'}"
    assert run_cli(capsys, "run", f"suite={path}", store, ck, "seeds=3", "workers=0")[0] == 0
    code, out = run_cli(capsys, "claims", f"suite={path}", store)
    assert code == 0 and "runs missing: 3 of 6 (3 never run)" in out
    assert "1 claim(s) wait for 3 run(s) (300 env steps)" in out
    code, out = run_cli(capsys, "claims", f"suite={path}", store, ck, "run=true", "workers=0")
    assert code == 0, out
    assert "3 planned runs: 0 already done" in out
    assert "vdn - qmix:" in out and "0 inconclusive" in out
    code, out = run_cli(capsys, "claims", f"suite={path}", store, "format=json")
    (doc,) = json.loads(out)
    assert doc["verdict"] in ("supported", "not supported") and doc["missing_runs"] == 0
    assert [s["algorithm"] for s in doc["sides"]] == ["vdn", "qmix"]
    board = tmp_path / "board"
    code, out = run_cli(capsys, "report", f"suite={path}", store, f"out={board}", "format=md,json,html", "reps=200")
    assert code == 0, out
    assert f"### vdn_beats_qmix: {doc['verdict']}" in (board / "README.md").read_text()
    assert json.loads((board / "leaderboard.json").read_text())["claims"][0]["verdict"] == doc["verdict"]
    html = (board / "index.html").read_text()
    assert "<h2>Claims</h2>" in html and "a test: VDN reaches the optimum more often than QMIX." in html


def test_a_claims_suite_is_refused_with_params_of_a_missing_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        load_suite(str(write(tmp_path, SUITE.replace("task: game", "task: nope"))))


def test_a_configuration_runs_under_its_own_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SUITE.replace("configurations:\n  vdn_fast: {algorithm: vdn, params: {lr: 0.003}}",
                         "configurations:\n  qmix_sum: {algorithm: qmix, params: {mixer: sum}}")
    path = write(tmp_path, text)
    store = f"store=sqlite:///{tmp_path / 'runs.db'}"
    code, out = run_cli(capsys, "run", f"suite={path}", store, f"checkpoint_dir={tmp_path / 'ck'}",
                        "algorithms=[qmix_sum]", "seeds=1", "workers=0")
    assert code == 0, out
    assert "done game/qmix_sum/seed0" in out
    (row,) = Store(f"sqlite:///{tmp_path / 'runs.db'}").runs()
    assert row["algorithm"] == "qmix_sum" and row["params"]["mixer"] == "sum"
