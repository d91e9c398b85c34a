"""Claims: each claim a suite declares, checked against the suite's runs, with a verdict.

A claim's runs are ordinary runs of its suite (its task, the algorithms' params as the suite
resolves them, the claim's budget and seeds), so they carry the same run ids as a board's
runs and the two never disagree. The verdict:

- `supported`: every comparison's Holm-adjusted one-sided p-value is at most the claim's alpha
  and every observed effect is at least its `min_effect`;
- `not supported`: the runs are all there and that does not hold;
- `inconclusive`: runs are missing (or failed), a score is missing, or the claim cannot run
  here (`unrunnable`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import comparisons, stats
from harness.config import Claim, Suite
from harness.report.model import RunRecord, read_runs
from harness.run.plan import RunSpec, plan
from harness.run.store import Store

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


def claim_suite(suite: Suite, claim: Claim) -> Suite:
    """The suite cut down to the claim's runs: its task, algorithms, budget and seeds."""
    task = next(t for t in suite.tasks if t.name == claim.task)
    params = {a: task.params[a] if a in task.params else task.claimed[a] for a in claim.algorithms}
    only = dataclasses.replace(task, params=params, budget=claim.budget, claimed={}, skipped={})
    return dataclasses.replace(suite, seeds=list(claim.seeds), tasks=[only], algorithms=list(claim.algorithms))


def claim_runs(suite: Suite, claim: Claim) -> list[RunSpec]:
    return [] if claim.unrunnable else plan(claim_suite(suite, claim))


@dataclass
class Side:
    """One algorithm's per-seed scores (seed order) and the summary printed for them."""

    algorithm: str
    seeds: list[int]
    values: np.ndarray
    summary: stats.Estimate
    binary: bool
    start: np.ndarray | None = None  # binary: did the untrained policy (env step 0) already succeed?

    def text(self) -> str:
        s = self.summary
        if not self.binary:
            return f"{self.algorithm}: mean {_num(s.value)} [{_num(s.low)}, {_num(s.high)}] over {len(self.seeds)} seeds"
        text = f"{self.algorithm}: {int(self.values.sum())}/{self.values.size} = {_num(s.value)} [{_num(s.low)}, {_num(s.high)}]"
        if self.start is not None and self.start.size == self.values.size:
            began = self.start == 1
            kept = int((began & (self.values == 1)).sum())
            rest = self.values[~began]
            text += f"; the untrained policy already succeeded in {int(began.sum())}, kept {kept}"
            if rest.size:
                w = stats.wilson_mean(rest)
                text += f"; from the other {rest.size}: {int(rest.sum())}/{rest.size} = {_num(w.value)} [{_num(w.low)}, {_num(w.high)}]"
        return text

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"algorithm": self.algorithm, "seeds": self.seeds, "values": self.values.tolist(),
                               "summary": self.summary.as_dict(), "binary": self.binary}
        if self.start is not None:
            out["succeeded_untrained"] = self.start.tolist()
        return out


@dataclass
class Comparison:
    other: str
    effect: comparisons.Effect  # better minus other
    p: float  # one-sided, in the claimed direction
    p_holm: float = float("nan")

    def text(self, better: str) -> str:
        e = self.effect
        return (f"{better} - {self.other}: {e.value:+.3g} [{e.low:+.3g}, {e.high:+.3g}], "
                f"p {self.p:.3g}, Holm {self.p_holm:.3g}")

    def as_dict(self) -> dict[str, Any]:
        return {"other": self.other, "effect": self.effect.as_dict(), "p": self.p, "p_holm": self.p_holm}


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    reason: str
    sides: list[Side] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    missing: list[RunSpec] = field(default_factory=list)

    def protocol(self) -> str:
        c = self.claim
        where = f"{c.task} {c.split}" + (f" {c.composition}" if c.composition else "")
        seeds = f"seeds {_seed_text(c.seeds)}"
        holm = f", Holm over {len(c.than)}" if len(c.than) > 1 else ""
        effect = f", minimum effect {c.min_effect:g}" if c.min_effect else ""
        success = f" (success: {c.metric} >= {c.success_at:g})" if c.success_at is not None else ""
        direction = "" if c.direction == "greater" else ", lower is better"
        return (f"{where}, {c.metric}{success}, {seeds}, budget {c.budget_name}, {c.test} one-sided{direction}, "
                f"alpha {c.alpha:g}{holm}{effect}")

    def lines(self) -> list[str]:
        """The claim as printed: verdict, source, statement, protocol, counts, comparisons."""
        c = self.claim
        lines = [f"{c.name}: {self.verdict}" + (f" ({self.reason})" if self.reason else ""),
                 f"  {c.source}: {c.statement}", f"  {self.protocol()}"]
        if c.reported:
            lines.append("  the paper reports: " + ", ".join(f"{a} {_num(v)}" for a, v in c.reported))
        lines += [f"  {side.text()}" for side in self.sides]
        lines += [f"  {comp.text(c.better)}" for comp in self.comparisons]
        return lines

    def as_dict(self) -> dict[str, Any]:
        c = self.claim
        return {"name": c.name, "verdict": self.verdict, "reason": self.reason, "source": c.source,
                "statement": c.statement, "protocol": self.protocol(), "task": c.task, "split": c.split,
                "composition": c.composition, "metric": c.metric, "better": c.better, "than": list(c.than),
                "direction": c.direction, "seeds": list(c.seeds), "test": c.test, "alpha": c.alpha,
                "min_effect": c.min_effect, "budget": c.budget_name, "unrunnable": c.unrunnable,
                "reported": dict(c.reported),
                "sides": [s.as_dict() for s in self.sides], "comparisons": [x.as_dict() for x in self.comparisons],
                "missing_runs": len(self.missing), "text": self.lines()}


def _num(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3g}"


def _seed_text(seeds: tuple[int, ...]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]} ({len(seeds)})"
    return f"{', '.join(map(str, seeds))} ({len(seeds)})"


def _score(run: RunRecord, claim: Claim, step: int | None = None) -> float:
    """The run's score on the claim's split (one composition, or their mean) at evaluation
    `step` (None: the last)."""
    cells = run.cells("curve", step)
    values = [v for (split, comp, metric), v in cells.items()
              if split == claim.split and metric == claim.metric and claim.composition in (None, comp)]
    return float(np.mean(values)) if values else float("nan")


def _outcome(value: float, claim: Claim) -> float:
    if claim.success_at is None or not np.isfinite(value):
        return value
    return float(value >= claim.success_at)


def _side(algorithm: str, runs: list[RunRecord], claim: Claim) -> Side | str:
    """The algorithm's scores, or why they cannot be used."""
    runs = sorted(runs, key=lambda r: r.spec.seed)
    values = np.array([_outcome(_score(r, claim), claim) for r in runs])
    if not np.isfinite(values).all():
        return f"{algorithm} has no final {claim.split} {claim.metric} in {int((~np.isfinite(values)).sum())} run(s)"
    seeds = [r.spec.seed for r in runs]
    if claim.test not in comparisons.BINARY_TESTS:
        return Side(algorithm, seeds, values, stats.bootstrap_mean(values), binary=False)
    if not stats.is_binary(values):
        return (f"{algorithm}'s final {claim.split} {claim.metric} is not a yes/no outcome in every seed "
                "(set success_at)")
    start = np.array([_outcome(_score(r, claim, step=0), claim) for r in runs])
    return Side(algorithm, seeds, values, stats.wilson_mean(values), binary=True,
                start=start if stats.is_binary(start) and start.size == values.size else None)


def _missing_reason(missing: list[RunSpec], records: dict[str, RunRecord]) -> str:
    counts = Counter(records[spec.run_id].status for spec in missing)
    parts = ", ".join(f"{n} {'never run' if s == 'missing' else s}" for s, n in sorted(counts.items()))
    total = len(records)
    return f"runs missing: {len(missing)} of {total} ({parts})"


def verdict(suite: Suite, claim: Claim, store: Store | None) -> Verdict:
    """The claim's verdict from the runs in `store` (None: no store yet, so no runs)."""
    if claim.unrunnable:
        return Verdict(claim, INCONCLUSIVE, f"not run here: {claim.unrunnable}")
    if store is None:
        specs = claim_runs(suite, claim)
        return Verdict(claim, INCONCLUSIVE, f"runs missing: {len(specs)} of {len(specs)} (never run)", missing=specs)
    records = {r.spec.run_id: r for r in read_runs(claim_suite(suite, claim), store)}  # planned once, here
    specs = [r.spec for r in records.values()]
    missing = [s for s in specs if records[s.run_id].status != "done"]
    if missing:
        return Verdict(claim, INCONCLUSIVE, _missing_reason(missing, records), missing=missing)
    by_algorithm: dict[str, list[RunRecord]] = {a: [] for a in claim.algorithms}
    for record in records.values():
        by_algorithm[record.spec.algorithm].append(record)
    sides: list[Side] = []
    for algorithm in claim.algorithms:
        side = _side(algorithm, by_algorithm[algorithm], claim)
        if isinstance(side, str):
            return Verdict(claim, INCONCLUSIVE, side, sides=sides)
        sides.append(side)
    return _decide(claim, sides)


def _decide(claim: Claim, sides: list[Side]) -> Verdict:
    better, others = sides[0], sides[1:]
    test = comparisons.P_VALUE[claim.test]
    results = []
    for other in others:
        x, y = (better.values, other.values) if claim.direction == "greater" else (other.values, better.values)
        results.append(Comparison(other.algorithm, comparisons.effect(claim.test, better.values, other.values), test(x, y)))
    for result, adjusted in zip(results, stats.holm([r.p for r in results]), strict=True):
        result.p_holm = float(adjusted)
    sign = 1.0 if claim.direction == "greater" else -1.0
    failing = [r for r in results if not (r.p_holm <= claim.alpha and sign * r.effect.value >= claim.min_effect)]
    if not failing:
        return Verdict(claim, SUPPORTED, "", sides, results)
    why = "; ".join(f"vs {r.other}: Holm p {r.p_holm:.3g} > {claim.alpha:g}" if r.p_holm > claim.alpha
                    else f"vs {r.other}: effect {r.effect.value:+.3g} below the minimum {claim.min_effect:g}"
                    for r in failing)
    return Verdict(claim, NOT_SUPPORTED, why, sides, results)


def check(suite: Suite, store: Store | None) -> list[Verdict]:
    return [verdict(suite, claim, store) for claim in suite.claims]


def missing_runs(verdicts: list[Verdict]) -> list[RunSpec]:
    """The runs the claims still wait for, each once (claims share runs)."""
    unique: dict[str, RunSpec] = {}
    for v in verdicts:
        for spec in v.missing:
            unique.setdefault(spec.run_id, spec)
    return list(unique.values())


def waiting_line(suite: Suite, verdicts: list[Verdict], command: str) -> str | None:
    """What running the missing runs would take: claims, runs, env steps and budgets."""
    runs = missing_runs(verdicts)
    if not runs:
        return None
    waiting = sum(bool(v.missing) for v in verdicts)
    steps = sum(s.budget["env_steps"] for s in runs)
    budgets = sorted({v.claim.budget_name for v in verdicts if v.missing})
    return (f"{waiting} claim(s) wait for {len(runs)} run(s) ({steps:,} env steps) at budget "
            f"{', '.join(budgets)}: {command} run=true runs them")


RULES = ("Each claim is pre-registered in the suite file (seeds, test, level); its runs are the suite's "
         "own runs. supported: every comparison's Holm-adjusted one-sided p-value is at most alpha and every "
         "effect at least the claim's minimum; not supported: all runs are in and that does not hold; "
         "inconclusive: runs missing, or the claim cannot run here. Effects are the claimed algorithm minus the "
         "other, with 95% intervals (Newcombe's for success rates, a bootstrap over seeds for scores).")


def summary_counts(verdicts: list[Verdict]) -> dict[str, int]:
    counts = {SUPPORTED: 0, NOT_SUPPORTED: 0, INCONCLUSIVE: 0}
    for v in verdicts:
        counts[v.verdict] += 1
    return counts
