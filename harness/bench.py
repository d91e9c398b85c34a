"""Throughput as ratios measured in one run: what `harness bench` and tests/benchmarks measure.

A figure is two loops timed in turns in this process, each turn `seconds / (2 * rounds)` long,
the best turn of each kept (other processes share the cores; a slow turn is their doing, not
ours). Bare steps/s differ between machines and from one minute to the next; the ratio of two
loops measured side by side is what carries over. Three kinds:

- `rollout/<backend>`: the backend's own `step`, as the runner calls it (Step arrays in numpy),
  under a uniformly random policy over the available actions, against the library's own loop
  on the same game at the same batch (the backend's `raw_loop`). matrix has no library: its raw side is the
  bare numpy payoff lookup. `rollout/smax_3m` plays continuous episodes (`rollout: continuous`:
  the backend restarts each finished env inside its step) on JaxMARL's map 3m, against
  JaxMARL's own 3m.
- `act/<algorithm>`: `harness.run.runner.rollout` with the algorithm acting (explore=True,
  learn=False) against the raw loop of the same task: the cost of acting, without learning.
- `train/<algorithm>`: rollouts with `update()` after each, as a run makes them, against the
  same raw loop: the share of the library's speed a training run gets. `train/<algorithm>@protoss16`
  (and `@protoss32`) train on zero_shot_smacv2's protoss task: the 3 to 5 unit training teams, a
  network sized for the 8 unit test teams, 16 or 32 envs; raw: JaxMARL's SMAX 5 v 5 step.
- `run/<algorithm>@protoss`: whole runs of zero_shot_smacv2's protoss task (a short budget), two in
  this process: the first pays for compiling SMAX's programs, the second reuses them. Its
  figure is the second run's env steps/s over the whole run (set-up and evaluation included)
  against the same raw loop; it also records each run's time to its first training step and
  the second run's time by phase (see `harness.run.runner.PhaseClock`).

Both sides count the same thing: env steps of running episodes (a harness env whose episode
has ended waits for the batch's next reset, or in continuous episodes spends one step on its
restart, and is not counted then; raw envs reset one by one).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import registry
from harness.api import Backend, EnvSpec, Loop, Step
from harness.config import COMMAND_LINE, build_config
from harness.errors import ConfigError
from harness.run.runner import ActionPadded, resolve_device, rollout, versions

SECONDS = 3.0  # measuring time per figure (both sides, every round), set-up excluded
ROUNDS = 3
FORMAT = "harness-bench/1"
LIBRARIES = ("jax", "jaxmarl", "mpe2", "pettingzoo", "overcooked-ai")  # versions recorded when installed
WARM_UP_ROLLOUTS = 20  # at most, until an off-policy learner's replay is big enough to update from


# ---------------------------------------------------------------------------------------------
# Loops: one side of a figure each


def random_actions(spec: EnvSpec, step: Step, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random actions among the available ones (discrete), or in [-1, 1] (continuous)."""
    if not spec.discrete:
        return rng.uniform(-1, 1, size=(*step.agent_mask.shape, spec.n_actions)).astype(np.float32)
    return np.where(step.avail_actions, rng.random(step.avail_actions.shape), -1.0).argmax(-1)


class RandomPolicyLoop(Loop):
    """The backend's `step` under a random policy; one batch step per unit, resets as the runner
    does: the whole batch once every episode is over, or (`continuous`, a backend that
    auto-resets) never after the first, each env starting its next episode as its last ends."""

    def __init__(self, env: Backend, seed: int = 0, continuous: bool = False) -> None:
        self.env, self.rng, self.continuous = env, np.random.default_rng(seed), continuous
        if continuous:
            env.enable_autoreset()
        self.step: Step | None = None

    def advance(self) -> int:
        if self.step is None or (self.step.done.all() and not self.continuous):
            self.step = self.env.reset()
        active = int((~self.step.done).sum())  # a continuous env's reset step is not an env step
        self.step = self.env.step(random_actions(self.env.spec, self.step, self.rng))
        return active

    def warm_up(self) -> None:
        # A whole batch of episodes (continuous: as many steps, restarts included): SMAX
        # compiles its reset, step and end-of-episode paths.
        for _ in range(self.env.spec.episode_limit + 1):
            self.advance()
            if self.step is not None and self.step.done.all():
                return

    def close(self) -> None:
        self.env.close()


class ActingLoop(Loop):
    """`harness.run.runner.rollout` with the algorithm acting: one batch of episodes per unit."""

    def __init__(self, env: Backend, algorithm: Any) -> None:
        self.env, self.algorithm = env, algorithm

    def advance(self) -> int:
        return int(rollout(self.env, self.algorithm, explore=True, seed=None, learn=False)["env_steps"])

    def close(self) -> None:
        self.env.close()


class TrainingLoop(ActingLoop):
    """A run's training loop: a batch of episodes observed, then `update()`."""

    def advance(self) -> int:
        out = rollout(self.env, self.algorithm, explore=True, seed=None, learn=True)
        self.algorithm.update()
        return int(out["env_steps"])

    def warm_up(self) -> None:
        # Off-policy learners update only once their replay holds a batch; timing the rollouts
        # before that would leave the learning out of the figure.
        for _ in range(WARM_UP_ROLLOUTS):
            self.advance()
            if getattr(self.algorithm, "grad_steps", 0) > 0:
                return


# ---------------------------------------------------------------------------------------------
# Tasks and the raw loop of each backend


@dataclass(frozen=True)
class Task:
    """One environment setting: backend name, its `args`, one composition (None: the backend's
    default; the raw loop plays it) and the batch size. `more`: further compositions the
    harness side draws from with it; `covers`: compositions the algorithm is sized for besides
    (a task's test teams, which training never plays)."""

    env: str
    args: Mapping[str, Any]
    composition: Mapping[str, Any] | None
    num_envs: int
    more: tuple[Mapping[str, Any], ...] = ()
    covers: tuple[Mapping[str, Any], ...] = ()

    def parsed(self) -> tuple[Any, Any, Any]:
        """The backend class, its parsed args and composition."""
        cls = registry.get_env(self.env)
        args = cls.Args.model_validate(dict(self.args))
        if self.composition is None:
            return cls, args, cls.default_compositions(args)[0]
        return cls, args, cls.Composition.model_validate(dict(self.composition))

    def played(self) -> list[Any]:
        """The compositions the harness side plays."""
        cls, _, composition = self.parsed()
        return [*(cls.Composition.model_validate(dict(c)) for c in self.more), composition]

    def spec(self) -> EnvSpec:
        """What an algorithm on this task is sized for: the played and the covered compositions."""
        cls, args, _ = self.parsed()
        covered = [cls.Composition.model_validate(dict(c)) for c in self.covers]
        return cls.describe(args, [*self.played(), *covered])

    def build(self, seed: int = 0, training: bool = False) -> Backend:
        cls, args, _ = self.parsed()
        return cls(args, self.played(), self.num_envs, seed, training=training)

    def label(self) -> str:
        cls, args, _ = self.parsed()
        changed = args.model_dump(exclude_defaults=True)
        settings = f" ({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else ""
        names = ", ".join(cls.composition_name(args, c) for c in self.played())
        covered = f" (sized for {self.spec().max_agents} agents)" if self.covers else ""
        return f"{self.env}{settings} {names}{covered}"


@dataclass(frozen=True)
class RawLoop:
    """The raw side of a figure: the task backend's `raw_loop` (with `options`), or what
    `label` names when a figure plays one of the library's own maps."""

    env: str  # the backend whose `raw_loop` builds it
    label: str | None = None  # in words, when not the backend's `raw_loop_label`
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to `raw_loop`

    @property
    def what(self) -> str:
        """The raw side in words (printed under the table and saved with the figure)."""
        return self.label or registry.get_env(self.env).raw_loop_label or f"{self.env}: no raw loop"

    def missing(self, args: Any) -> str | None:
        return registry.get_env(self.env).raw_loop_missing(args)

    def build(self, args: Any, composition: Any, num_envs: int) -> Loop:
        return registry.get_env(self.env).raw_loop(args, composition, num_envs, **self.options)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True)
class Figure:
    kind: str  # rollout, act, train or run
    subject: str  # the backend (rollout) or algorithm (act, train, run)
    task: Task
    tags: frozenset[str] = field(default_factory=frozenset)  # more names that select it
    continuous: bool = False  # rollout figures: episodes back to back (the backend auto-resets)
    raw: RawLoop | None = None  # the raw side, when not the task backend's own `raw_loop`
    variant: str = ""  # tells figures of one kind and subject apart: train/qmix@protoss16

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.subject}" + (f"@{self.variant}" if self.variant else "")

    @property
    def raw_loop(self) -> RawLoop:
        return self.raw or RawLoop(self.task.env)

    def label(self) -> str:
        """The task in words, and how its episodes are played when not synchronously."""
        return self.task.label() + (", continuous episodes" if self.continuous else "")

    def missing(self) -> str | None:
        """Why this figure cannot be measured here (a package missing), else None."""
        cls, args, _ = self.task.parsed()
        return cls.missing_requirements(args) or self.raw_loop.missing(args)

    def sides(self, device: str = "cpu") -> dict[str, Loop]:
        """The harness loop (the algorithm on `device`) and the raw loop (the caller closes both)."""
        env = self.task.build(training=self.kind == "train")
        try:
            harness = self._harness(env, device)
            raw = self.raw_side()
        except BaseException:
            env.close()
            raise
        return {"harness": harness, "raw": raw}

    def raw_side(self) -> Loop:
        _, args, composition = self.task.parsed()
        return self.raw_loop.build(args, composition, self.task.num_envs)

    def _harness(self, env: Backend, device: str) -> Loop:
        if self.kind == "rollout":
            return RandomPolicyLoop(env, continuous=self.continuous)
        cls = registry.get_algorithm(self.subject)
        spec = self.task.spec()
        algorithm = cls(spec, build_config(cls, {}), 0, resolve_device(device))
        if env.spec.discrete and env.spec.n_actions < spec.n_actions:  # as a run pads a smaller team's actions
            env = ActionPadded(env, spec.n_actions)  # type: ignore[assignment]
        return (TrainingLoop if self.kind == "train" else ActingLoop)(env, algorithm)


def _rollout_figure(subject: str, task: Task, **options: Any) -> Figure:
    return Figure("rollout", subject, task, frozenset({subject, task.env}), **options)


def _protoss(num_envs: int) -> Task:
    """zero_shot_smacv2's protoss task: training teams of 3 to 5 units, test teams up to 8."""
    return Task("smax", {"race": "protoss"}, {"allies": 5}, num_envs, more=({"allies": 3}, {"allies": 4}),
                covers=({"allies": 6}, {"allies": 7}, {"allies": 8}))


SPREAD = Task("mpe_spread", {}, {"n_agents": 3}, 16)  # zero_shot_mpe's spread task
SPREAD_CONTINUOUS = Task("mpe_spread", {"continuous_actions": True}, {"n_agents": 3}, 16)
# JaxMARL's map 3m as an SMAX task (the smax backend's docstring lists the fixed maps).
SMAX_3M = Task("smax", {"race": "terran", "start_positions": "smax"}, {"allies": 3, "units": {"marine": 3}}, 32)
# One of each algorithm family, on the smallest real task its actions fit.
FAMILIES: dict[str, Task] = {
    "qmix": SPREAD,  # value decomposition
    "mappo": SPREAD,  # on-policy PPO
    "maddpg": SPREAD_CONTINUOUS,  # off-policy actor-critic
    "mipi": SPREAD,  # a seed method
}

# One of each algorithm family, and the seed methods, on zero_shot_smacv2's protoss task.
SMAX_FAMILIES = ("qmix", "mappo", "mipi", "me_qmix")
RUN_FIGURES = ("qmix",)
# The whole-run figure's budget: a few rounds of training between evaluations.
RUN_BUDGET = {"env_steps": 12_000, "eval_every": 6_000, "eval_episodes": 8, "absolute_episodes": 16}

FIGURES: dict[str, Figure] = {
    f.name: f
    for f in [
        _rollout_figure("matrix", Task("matrix", {"game": "climbing", "episode_length": 10}, None, 32)),
        _rollout_figure("mpe_spread", SPREAD),
        _rollout_figure("mpe_spread@mpe2", Task("mpe_spread", {"engine": "mpe2"}, {"n_agents": 3}, 16)),
        _rollout_figure("mpe_tag", Task("mpe_tag", {"prey_policy": "random"}, None, 8)),
        _rollout_figure("multiwalker", Task("multiwalker", {}, {"n_walkers": 3}, 8)),
        _rollout_figure("pettingzoo", Task("pettingzoo", {"env": "mpe2.simple_spread_v3", "kwargs": {"N": 3}},
                                           None, 8)),
        _rollout_figure("overcooked", Task("overcooked", {"horizon": 100}, {"layout": "cramped_room"}, 8)),
        _rollout_figure("smax", Task("smax", {"race": "protoss"}, {"allies": 5}, 32)),
        _rollout_figure("smax_3m", SMAX_3M, continuous=True,
                        raw=RawLoop("smax", "JaxMARL SMAX step_env on its map 3m (HeuristicEnemySMAX scenario 3m), "
                                    "jitted and vmapped", {"map_name": "3m"})),
        *(Figure(kind, algorithm, task, frozenset({algorithm}))
          for algorithm, task in FAMILIES.items() for kind in ("act", "train")),
        *(Figure("train", algorithm, _protoss(envs), frozenset({"zero_shot_smacv2"}), variant=f"protoss{envs}")
          for algorithm in SMAX_FAMILIES for envs in (16, 32)),
        *(Figure("run", algorithm, _protoss(16), frozenset({"zero_shot_smacv2"}), variant="protoss")
          for algorithm in RUN_FIGURES),
    ]
}


def names() -> list[str]:
    """Every name `select` accepts: figure names, backends and algorithms."""
    return sorted({*FIGURES, *(tag for f in FIGURES.values() for tag in f.tags)})


def _subjects(kind: str) -> list[str]:
    return [f.subject for f in FIGURES.values() if f.kind == kind]


def select(only: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The figures to measure, in table order, and those skipped here with the reason.

    `only` names figures (`train/qmix`), backends (`smax`: its rollout figures) or algorithms
    (`qmix`: its act and train figures); None is every figure."""
    unknown = [n for n in only or () if n not in names()]
    if unknown:
        backends, algorithms = ", ".join(_subjects("rollout")), ", ".join(_subjects("train"))
        figures = "rollout/NAME, act/NAME, train/NAME"
        expected = f"a backend ({backends}), an algorithm ({algorithms}) or a figure ({figures})"
        raise ConfigError.single(("only",), f"unknown benchmark; expected {expected}", found=unknown[0],
                                 choices=names(), file=COMMAND_LINE)
    chosen = [n for n, f in FIGURES.items() if only is None or n in only or f.tags & set(only)]
    skipped = {n: problem for n in chosen if (problem := FIGURES[n].missing()) is not None}
    return [n for n in chosen if n not in skipped], skipped


# ---------------------------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch uses `threads` threads inside, the previous number after. One by default: on
    machines with few cores torch's pool and JAX's (SMAX) otherwise fight over the same cores,
    and the figure would measure that fight (as it would the spinning of an oversubscribed
    pool), not the harness."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def timed_rate(loop: Loop, seconds: float) -> float:
    """Env steps per second of `loop` over at least `seconds` (whole units of work)."""
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += loop.advance()
    loop.settle()
    return steps / (time.perf_counter() - start)


def interleaved_rates(loops: Mapping[str, Loop], seconds: float, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` steps/s of each loop, timed in turns: a burst of load from elsewhere
    slows one turn, not one side."""
    for loop in loops.values():
        loop.warm_up()
    turn = seconds / (rounds * len(loops))
    best = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for name, loop in loops.items():
            best[name] = max(best[name], timed_rate(loop, turn))
    return best


def measure(name: str, seconds: float = SECONDS, rounds: int = ROUNDS, threads: int = 1,
            device: str = "cpu") -> dict[str, Any]:
    """One figure: the harness and raw rates, their ratio, and what was measured."""
    figure = FIGURES[name]
    extra: dict[str, Any] = {}
    with torch_threads(threads):
        if figure.kind == "run":
            rates, extra = _whole_runs(figure, seconds, device)
        else:
            loops: dict[str, Loop] = {}
            try:
                loops = figure.sides(device)
                rates = interleaved_rates(loops, seconds, rounds)
            finally:
                for loop in loops.values():
                    loop.close()
    return {
        "name": name, "kind": figure.kind, "subject": figure.subject, "task": figure.label(),
        "batch": figure.task.num_envs, "raw_loop": figure.raw_loop.what,
        "harness_steps_per_s": rates["harness"], "raw_steps_per_s": rates["raw"],
        "ratio": rates["harness"] / rates["raw"], **extra,
    }


def _whole_runs(figure: Figure, seconds: float, device: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Two whole runs of zero_shot_smacv2's protoss task (`RUN_BUDGET`) in this process, then the raw
    loop for `seconds`: rates (the second run's env steps/s over its whole wall time) and what
    the runs recorded."""
    from harness.config import load_suite
    from harness.run.plan import plan
    from harness.run.runner import execute_run

    with tempfile.TemporaryDirectory() as scratch:
        overrides = ["tasks=[protoss]", f"algorithms=[{figure.subject}]", "seeds=[0,1]", f"device={device}",
                     f"budget={json.dumps(RUN_BUDGET)}", f"store=sqlite:///{scratch}/bench.db",
                     f"checkpoint_dir={scratch}/checkpoints"]
        results = [execute_run(spec) for spec in plan(load_suite("zero_shot_smacv2", overrides))]
    failed = [r.reason for r in results if r.status != "done"]
    if failed:
        raise RuntimeError(f"a whole-run figure's run did not finish: {failed[0]}")
    first, second = results
    raw = figure.raw_side()
    try:
        raw_rate = interleaved_rates({"raw": raw}, seconds, 1)["raw"]
    finally:
        raw.close()
    extra = {
        "env_steps": second.env_steps,
        "first_run_to_first_update_s": first.timings.get("to_first_update"),
        "to_first_update_s": second.timings.get("to_first_update"),
        "run_seconds": second.seconds,
        "shares": {phase: second.timings.get(phase, 0.0) / second.seconds
                   for phase in ("setup", "rollout", "update", "evaluation", "checkpoint")},
    }
    return {"harness": second.env_steps / second.seconds, "raw": raw_rate}, extra


def machine(threads: int) -> dict[str, Any]:
    """What the figures depend on besides the code: cores, threads, versions."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity else os.cpu_count(),
        "torch_threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "versions": {**versions(), **_library_versions()},
    }


def _library_versions() -> dict[str, str]:
    found = {}
    for library in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[library] = metadata.version(library)
    return found


def run(chosen: Sequence[str], seconds: float = SECONDS, rounds: int = ROUNDS, threads: int = 1,
        progress: Callable[[str, int, int], None] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Measure `chosen` figures (names from `select`) one after the other, the algorithms on
    `device`; the results as saved."""
    figures = {}
    for i, name in enumerate(chosen):
        if progress is not None:
            progress(name, i + 1, len(chosen))
        figures[name] = measure(name, seconds, rounds, threads, device)
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {"seconds": seconds, "rounds": rounds, "threads": threads, "device": device},
        "machine": machine(threads),
        "figures": figures,
    }


# ---------------------------------------------------------------------------------------------
# Saved results


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def load(path: str | Path, key: str = "compare") -> dict[str, Any]:
    """Results saved by `harness bench` (ConfigError at `key` if the file is not one)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError.single((key,), f"cannot read a harness bench JSON file ({exc})", found=str(path),
                                 file=COMMAND_LINE) from None
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise ConfigError.single((key,), f"not a results file of harness bench (format {FORMAT})",
                                 found=str(path), file=COMMAND_LINE)
    return results


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per figure in either file: both ratios and new/old of the ratio and of the harness rate
    (None where a figure is in one file only)."""
    rows = []
    for name in [*new["figures"], *(n for n in old["figures"] if n not in new["figures"])]:
        was, now = old["figures"].get(name), new["figures"].get(name)
        both = was is not None and now is not None
        rows.append({
            "name": name,
            "old_ratio": was and was["ratio"],
            "new_ratio": now and now["ratio"],
            "ratio_change": now["ratio"] / was["ratio"] if both else None,
            "harness_change": now["harness_steps_per_s"] / was["harness_steps_per_s"] if both else None,
        })
    return rows
