"""Execute one run: train under an env-step budget, evaluate, checkpoint, resume.

The runner owns the environment, the budget, evaluation, checkpoints, logging and seeding;
the algorithm only acts, observes and updates. Runs are resumable: the checkpoint holds the
algorithm (networks, optimiser, buffer), the training env's random state, the evaluation
rows so far and the best checkpoint's score; with `rollout: continuous`, also the episodes in
flight (the backend's batch state, the current Step and the algorithm's memory) where the
backend can save them.

Training plays either synchronous batches of episodes (`rollout`, the default: all envs
reset together, the batch steps until every episode is over) or continuous rounds
(`ContinuousRollout`: auto-resetting envs, a fixed number of batched steps per round).
Evaluation is always synchronous, with fixed seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness import registry
from harness.api import Backend, EnvSpec, Step, Transition, load_policy_state, policy_state, watching_busy
from harness.config import build_config
from harness.errors import RunFailed
from harness.policies import map_memory, reset_memory_rows
from harness.run.plan import RunSpec, stable_hash
from harness.run.store import RunResult

EVAL_BATCH = 64  # evaluation episodes run side by side per environment batch
# Evaluating every composition in one batch (backends that `supports_assigned_compositions`):
# at most this many envs side by side.
EVAL_TOGETHER = 256


class StopRequested(Exception):
    """The user or the coordinator asked to stop: checkpoint at a rollout boundary and leave."""


@contextlib.contextmanager
def graceful_interrupts(flag: threading.Event | None = None) -> Iterator[threading.Event]:
    """First Ctrl-C: finish the current rollout, checkpoint, stop. Second Ctrl-C: stop now.

    Stopping between rollouts keeps the checkpoint consistent (no half-collected episode).
    A worker process passes its own long-lived flag so later runs see the stop too.
    """
    flag = flag or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunFailed("device=cuda was requested but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """One seed drives Python, numpy and torch (the env and algorithm derive theirs from it)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *labels: Any) -> int:
    return int(stable_hash([seed, *labels], length=8), 16)


def versions() -> dict[str, str]:
    return {
        "harness": harness.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


@dataclass
class TaskEnvs:
    backend: Any  # a Backend subclass
    args: Any
    splits: dict[str, list[tuple[str, float, Any]]]  # split -> [(name, weight, composition)]

    @classmethod
    def from_spec(cls, spec: RunSpec) -> TaskEnvs:
        cfg = spec.task_config
        backend = registry.get_env(cfg["env"])
        args = backend.Args.model_validate(cfg["args"])
        splits = {
            split: [
                (c["name"], c["weight"], backend.Composition.model_validate(
                    {k: v for k, v in c.items() if k not in ("name", "weight")}))
                for c in comps
            ]
            for split, comps in cfg["splits"].items()
        }
        return cls(backend, args, splits)

    def all_compositions(self) -> list[Any]:
        return [c for comps in self.splits.values() for _, _, c in comps]

    @functools.cached_property
    def spec(self) -> EnvSpec:
        """The spec covering every composition of the task (what the algorithm is built for)."""
        return self.backend.describe(self.args, self.all_compositions())

    def make(self, split: str, num_envs: int, seed: int, only: str | None = None,
             training: bool = False) -> Backend | ActionPadded:
        chosen = [(n, w, c) for n, w, c in self.splits[split] if only is None or n == only]
        return self._build([c for _, _, c in chosen], num_envs, seed, [w for _, w, _ in chosen], training)

    def make_all(self, num_envs: int, seed: int) -> Backend | ActionPadded:
        """An evaluation batch over every composition of every split, in `splits` order."""
        return self._build(self.all_compositions(), num_envs, seed, None, False)

    def _build(self, compositions: list[Any], num_envs: int, seed: int, weights: list[float] | None,
               training: bool) -> Backend | ActionPadded:
        env = self.backend(self.args, compositions, num_envs, seed, weights=weights, training=training)
        n_actions = self.spec.n_actions
        return ActionPadded(env, n_actions) if env.spec.discrete and env.spec.n_actions < n_actions else env


class ActionPadded:
    """A backend whose compositions have fewer discrete actions than the task's largest one
    (e.g. fewer enemies to attack): its `avail_actions` are padded with unavailable actions so
    the algorithm always sees the task-wide action count."""

    def __init__(self, env: Backend, n_actions: int) -> None:
        self.env, self.spec = env, dataclasses.replace(env.spec, n_actions=n_actions)

    def _pad(self, step: Step) -> Step:
        avail = step.avail_actions
        extra = np.zeros((*avail.shape[:-1], self.spec.n_actions - avail.shape[-1]), dtype=bool)
        return dataclasses.replace(step, avail_actions=np.concatenate([avail, extra], axis=-1))

    def reset(self, seed: int | None = None) -> Step:
        return self._pad(self.env.reset(seed))

    def reset_compositions(self, seed: int | None, compositions: np.ndarray) -> Step:
        return self._pad(self.env.reset_compositions(seed, compositions))

    def step(self, actions: np.ndarray) -> Step:
        return self._pad(self.env.step(actions))

    def __getattr__(self, name: str) -> Any:  # close, rng_state, set_rng_state, ...
        return getattr(self.env, name)


def rollout(env: Backend | ActionPadded, algorithm: Any, explore: bool, seed: int | None, learn: bool,
            compositions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Play one synchronous batch of episodes (each env playing `compositions[b]` when given, on a
    backend that `supports_assigned_compositions`); returns per-env returns, wins and
    compositions."""
    step = env.reset(seed) if compositions is None else env.reset_compositions(seed, compositions)
    memory = None
    returns = np.zeros(step.batch_size, dtype=np.float64)
    env_steps = 0
    for _ in range(env.spec.episode_limit + 1):
        if step.done.all():
            break
        active = ~step.done
        actions, memory = algorithm.act(step, memory, explore)
        nxt = env.step(actions)
        returns += np.where(active, nxt.reward, 0.0)
        env_steps += int(active.sum())
        if learn:
            algorithm.observe(Transition(step=step, actions=actions, next=nxt, active=active))
        step = nxt
    else:
        raise RunFailed(f"environment did not end its episodes within episode_limit={env.spec.episode_limit}")
    return {"returns": returns, "won": step.won.copy(), "composition": step.composition.copy(), "env_steps": np.array(env_steps)}


class ContinuousRollout:
    """Training episodes played back to back (`rollout: continuous`): the backend resets each
    env as soon as its episode has ended (`Backend.enable_autoreset`), so the batch never
    idles while its longest episode finishes; each env spends one step per episode on its
    reset. The current Step, the algorithm's memory and which envs have just started an
    episode carry over from one round of `steps` batched steps to the next.
    """

    def __init__(self, env: Backend | ActionPadded, algorithm: Any, steps: int) -> None:
        env.enable_autoreset()
        self.env, self.algorithm, self.steps = env, algorithm, steps
        self.reset_memory: Callable[[Any, np.ndarray], Any] = getattr(algorithm, "reset_memory", reset_memory_rows)
        self.step: Step | None = None
        self.memory: Any = None
        self.first = np.zeros(0, dtype=bool)  # rows of `step` that are first observations
        self.lengths = np.zeros(0, dtype=np.int64)  # steps taken in each env's current episode

    def _start(self) -> None:
        self.step = self.env.reset(None)
        self.memory = None
        self.first = np.ones(self.step.batch_size, dtype=bool)
        self.lengths = np.zeros(self.step.batch_size, dtype=np.int64)

    def run(self) -> int:
        """One round: `steps` batched steps, each acted, stepped and observed; returns the
        active env steps (envs that were not done when the step began)."""
        if self.step is None:
            self._start()
        limit = self.env.spec.episode_limit
        env_steps = 0
        for _ in range(self.steps):
            step = self.step
            assert step is not None
            active = ~step.done
            actions, memory = self.algorithm.act(step, self.memory, True)
            nxt = self.env.step(actions)
            self.algorithm.observe(Transition(step=step, actions=actions, next=nxt, active=active, first=self.first))
            restarted = ~active  # done before the step: the step began their next episode
            self.memory = self.reset_memory(memory, restarted) if restarted.any() else memory
            self.lengths = np.where(active, self.lengths + 1, 0)
            if ((self.lengths >= limit) & ~nxt.done).any():
                raise RunFailed(f"environment did not end its episodes within episode_limit={limit}")
            self.first, self.step = restarted, nxt
            env_steps += int(active.sum())
        return env_steps

    def state_dict(self) -> dict[str, Any]:
        """The episodes in flight, or {} when the backend cannot save its own part (a resumed
        run then starts new episodes, and the algorithm's collectors drop the unfinished ones)."""
        env_state = self.env.env_state() if self.step is not None else None
        if env_state is None or self.step is None:
            return {}
        return {
            "env": {k: torch.from_numpy(np.array(v)) for k, v in env_state.items()},
            "step": {f.name: torch.from_numpy(np.array(getattr(self.step, f.name))) for f in dataclasses.fields(Step)},
            "memory": self.memory,
            "first": torch.from_numpy(self.first.copy()),
            "lengths": torch.from_numpy(self.lengths.copy()),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Go on with the saved episodes (call after the backend's `set_rng_state`)."""
        if not state:
            self.step = None
            return
        self.env.load_env_state({k: v.numpy() for k, v in state["env"].items()})
        self.step = Step(**{k: v.numpy() for k, v in state["step"].items()})
        self.memory = map_memory(state["memory"], lambda x: x.to(device) if isinstance(x, torch.Tensor) else x)
        self.first, self.lengths = state["first"].numpy(), state["lengths"].numpy()


class Evaluator:
    """Greedy evaluation on every composition of every split, with fixed evaluation seeds.

    On a backend that `supports_assigned_compositions`, every composition of every split
    plays in one batch (of `together_batch` envs, the smallest power of two holding one
    curve evaluation, at most EVAL_TOGETHER): one environment, and on SMAX one compiled
    program, for the whole task. Otherwise each composition gets batches of its own."""

    def __init__(self, envs: TaskEnvs, seed: int, episodes: int) -> None:
        self.envs = envs
        self.seed = seed
        self.plan = [(split, name) for split, comps in envs.splits.items() for name, _, _ in comps]
        self.together = bool(getattr(envs.backend, "supports_assigned_compositions", False))
        self.together_batch = min(_pow2(len(self.plan) * episodes), EVAL_TOGETHER)
        self._cache: dict[tuple[str, str, int], Backend | ActionPadded] = {}

    def _env(self, split: str, name: str, batch: int) -> Backend | ActionPadded:
        key = (split, name, batch)
        if key not in self._cache:
            self._cache[key] = self.envs.make(split, batch, derive_seed(self.seed, "eval", split, name), only=name)
        return self._cache[key]

    @functools.cached_property
    def _together_env(self) -> Backend | ActionPadded:
        return self.envs.make_all(self.together_batch, derive_seed(self.seed, "eval", "together"))

    def evaluate(self, algorithm: Any, episodes: int, env_steps: int, kind: str) -> list[dict[str, Any]]:
        results = self._play_together(algorithm, episodes) if self.together else self._play_apart(algorithm, episodes)
        rows = []
        for (split, name), (returns, wins) in zip(self.plan, results, strict=True):
            for metric, values in (("return", returns), ("win_rate", wins)):
                rows.append({"kind": kind, "env_steps": env_steps, "split": split, "composition": name,
                             "metric": metric, "value": float(np.mean(values)), "episodes": episodes})
        return rows

    def _play_apart(self, algorithm: Any, episodes: int) -> list[tuple[np.ndarray, np.ndarray]]:
        results = []
        for split, name in self.plan:
            returns, wins, done = [], [], 0
            while done < episodes:
                batch = min(EVAL_BATCH, episodes - done)
                out = rollout(self._env(split, name, batch), algorithm, explore=False,
                              seed=derive_seed(self.seed, "eval", split, name, done), learn=False)
                returns.append(out["returns"])
                wins.append(out["won"])
                done += batch
            results.append((np.concatenate(returns), np.concatenate(wins)))
        return results

    def _play_together(self, algorithm: Any, episodes: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`episodes` of every composition in chunks of `together_batch` envs, each chunk with
        the same compositions and seed at every evaluation (so every evaluation plays the same
        battles); the last chunk's spare envs play compositions of their own choosing and are
        not counted."""
        wanted = np.repeat(np.arange(len(self.plan)), episodes)
        batch, env = self.together_batch, self._together_env
        returns, wins = [], []
        for start in range(0, len(wanted), batch):
            chunk = wanted[start : start + batch]
            assigned = np.concatenate([chunk, np.resize(wanted, batch - len(chunk))])
            out = rollout(env, algorithm, explore=False, seed=derive_seed(self.seed, "eval", start), learn=False,
                          compositions=assigned)
            returns.append(out["returns"][: len(chunk)])
            wins.append(out["won"][: len(chunk)])
        all_returns, all_wins = np.concatenate(returns), np.concatenate(wins)
        return [(all_returns[wanted == i], all_wins[wanted == i]) for i in range(len(self.plan))]

    def close(self) -> None:
        for env in self._cache.values():
            env.close()
        if "_together_env" in vars(self):
            self._together_env.close()


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def selection_score(rows: list[dict[str, Any]], metric: str) -> float:
    """Checkpoint selection uses validation compositions when the task has them, never test."""
    splits = {r["split"] for r in rows}
    split = "validation" if "validation" in splits else "train"
    values = [r["value"] for r in rows if r["split"] == split and r["metric"] == metric]
    return float(np.mean(values)) if values else -math.inf


class MetricsLog:
    """Per-run JSON-lines file of training and evaluation metrics, plus TensorBoard if installed.
    TensorBoard is a convenience: if it fails (a full disk, a broken install) it is reported
    once and switched off, and the run goes on."""

    def __init__(self, directory: Path) -> None:
        self.file = open(directory / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(directory / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, env_steps: int, kind: str, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"env_steps": env_steps, "kind": kind, **values}) + "\n")
        if self.tb is not None:
            self._tensorboard(lambda: [self.tb.add_scalar(f"{kind}/{k}", v, env_steps) for k, v in values.items()])

    def _tensorboard(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as exc:
            print(f"harness: TensorBoard logging failed ({type(exc).__name__}: {exc}); it is off for the rest "
                  "of this run, metrics.jsonl keeps everything", file=sys.stderr)
            self.tb = None

    def eval_rows(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.write(r["env_steps"], f"{r['kind']}/{r['split']}/{r['composition']}", {r["metric"]: r["value"]})
        self.file.flush()  # so `tail -f metrics.jsonl` follows a long run eval by eval

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self._tensorboard(self.tb.close)


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically. torch.save goes to memory and we write the bytes: torch's
    own zip writer reports a full disk as "unexpected pos", which names neither the disk nor the
    file; Python's write raises ENOSPC, which we turn into a message with the remedy."""
    data = io.BytesIO()
    torch.save(payload, data)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data.getbuffer())
        os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint intact
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a checkpoint behind
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the disk of the checkpoint folder {path.parent}: free "
                                        "some space, then run again with retry_failed=true") from exc
        raise


def _load(path: Path) -> dict[str, Any] | None:
    """A checkpoint, or None when there is none. One that cannot be read (truncated by a full
    disk, damaged) is moved aside, with a message naming both paths, and the run starts over:
    failing on it would fail every retry until someone deleted the file by hand."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        print(f"harness: the checkpoint {path} could not be read ({type(exc).__name__}: {str(exc)[:200]}); moved to "
              f"{aside.name}, and this run starts over", file=sys.stderr)
        return None


EvalCallback = Callable[[int, list[dict[str, Any]]], None]
PhaseCallback = Callable[[str | None], None]


class PhaseClock:
    """Wall seconds of a run by phase: `setup` (environments, algorithm, a checkpoint to resume
    from), `evaluation` (every evaluation, the absolute one included), `rollout` and `update`
    (training), `checkpoint`; `compile` (set-up work the backends announce with
    `harness.api.busy`, inside the others) and `to_first_update` (run start to the first
    training step: the fixed cost of a run). Resumed runs add up their attempts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


class Run:
    def __init__(self, spec: RunSpec, on_progress: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, interrupt_flag: threading.Event | None = None,
                 on_eval: EvalCallback | None = None, on_phase: PhaseCallback | None = None) -> None:
        self.spec = spec
        self.interrupt_flag = interrupt_flag
        self.on_progress = on_progress or (lambda _steps: None)
        # Sees every curve evaluation (env steps, rows) as it is made: `harness tune` feeds its
        # pruner from it and stops a pruned run through `should_stop`.
        self.on_eval = on_eval or (lambda _steps, _rows: None)
        # Hears what long set-up work is under way ("compiling ...") and when it ends (None).
        self.on_phase = on_phase or (lambda _what: None)
        self.should_stop = should_stop or (lambda: False)
        self.dir = Path(spec.checkpoint_dir) / spec.run_id
        self.dir.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        """Wall seconds over every attempt of this run (earlier attempts come from the checkpoint)."""
        return self.prior_seconds + time.monotonic() - self.started

    def execute(self) -> RunResult:
        self.started, self.prior_seconds = time.monotonic(), 0.0
        self.progress = {"env_steps": 0, "grad_steps": 0}
        self.clock = PhaseClock()
        self.busy_since: float | None = None
        with graceful_interrupts(self.interrupt_flag) as interrupted, watching_busy(self._busy):
            try:
                result = self._train(lambda: interrupted.is_set() or self.should_stop())
            except StopRequested:
                result = RunResult(self.spec.run_id, "interrupted", "stopped before the end; resumes from its last checkpoint")
            except KeyboardInterrupt:
                # A second Ctrl-C stops at once; with no Ctrl-C at all, plugin code raised it.
                result = (RunResult(self.spec.run_id, "interrupted", "stopped before the end; resumes from its last checkpoint")
                          if interrupted.is_set() else
                          RunResult(self.spec.run_id, "failed", "KeyboardInterrupt raised inside the run (no Ctrl-C came)"))
            except SystemExit as exc:  # plugin code that exits would otherwise take the worker, or the suite, with it
                result = RunResult(self.spec.run_id, "failed", f"the run called sys.exit({exc.code!r}); plugins must "
                                   "raise an exception instead")
            except RunFailed as exc:
                result = RunResult(self.spec.run_id, "failed", str(exc))
            except Exception as exc:
                tb = traceback.format_exc(limit=-3)
                result = RunResult(self.spec.run_id, "failed", f"{type(exc).__name__}: {exc}\n{tb}")
        result.env_steps = result.env_steps or self.progress["env_steps"]
        result.grad_steps = result.grad_steps or self.progress["grad_steps"]
        result.seconds = self.elapsed()
        result.versions = versions()
        result.timings = {k: round(v, 3) for k, v in self.clock.seconds.items()}
        return result

    def _busy(self, what: str | None) -> None:
        """A backend's `busy` announcement: shown on the progress line, its time counted."""
        if what is not None:
            self.busy_since = time.perf_counter()
        elif self.busy_since is not None:
            self.clock.add("compile", time.perf_counter() - self.busy_since)
            self.busy_since = None
        self.on_phase(what)

    def _train(self, stop_requested: Callable[[], bool]) -> RunResult:
        spec, budget, clock = self.spec, self.spec.budget, self.clock
        with clock("setup"):
            seed_everything(spec.seed)
            envs = TaskEnvs.from_spec(spec)
            env_spec = envs.spec
            cls = registry.get_algorithm(spec.implementation)
            device = resolve_device(spec.device)
            algorithm = cls(env_spec, build_config(cls, spec.params), spec.seed, device)
            train_env = envs.make("train", spec.task_config["num_envs"], derive_seed(spec.seed, "train"), training=True)
            continuous = None
            if spec.task_config.get("rollout", "episodes") == "continuous":
                steps = spec.task_config.get("rollout_steps") or train_env.spec.episode_limit
                continuous = ContinuousRollout(train_env, algorithm, steps)
            evaluator = Evaluator(envs, spec.seed, budget["eval_episodes"])
            log = MetricsLog(self.dir)
            last_path, best_path = self.dir / "last.pt", self.dir / "best.pt"
            progress = self.progress
            evals: list[dict[str, Any]] = []
            best = {"score": -math.inf, "env_steps": 0}
            saved = _load(last_path)
            if saved is not None:
                algorithm.load_state_dict(saved["algorithm"])
                train_env.set_rng_state(saved["env_rng"])
                progress["env_steps"], evals, best = saved["env_steps"], saved["evals"], saved["best"]
                self.prior_seconds = saved["seconds"]
                torch.set_rng_state(saved["torch_rng"])
                if continuous is not None:
                    continuous.load_state_dict(saved.get("continuous", {}), device)
                for phase, seconds in saved.get("timings", {}).items():
                    clock.add(phase, seconds)

        def checkpoint() -> None:
            with clock("checkpoint"):
                progress["grad_steps"] = int(getattr(algorithm, "grad_steps", 0))
                payload = {"algorithm": algorithm.state_dict(), "env_rng": train_env.rng_state(), "best": best,
                           "env_steps": progress["env_steps"], "evals": evals, "seconds": self.elapsed(),
                           "torch_rng": torch.get_rng_state(), "timings": dict(clock.seconds)}
                if continuous is not None:  # checkpoints fall between rounds, with episodes in flight
                    payload["continuous"] = continuous.state_dict()
                _save(last_path, payload)

        def evaluate() -> None:
            with clock("evaluation"):
                rows = evaluator.evaluate(algorithm, budget["eval_episodes"], progress["env_steps"], "curve")
                evals.extend(rows)
                log.eval_rows(rows)
                score = selection_score(rows, spec.metric)
                if score > best["score"]:
                    best.update(score=score, env_steps=progress["env_steps"])
                    _save(best_path, {"policy": policy_state(algorithm)})
            self.on_eval(progress["env_steps"], rows)

        saved_at = time.monotonic()
        try:
            if not evals:
                evaluate()
            every = budget["eval_every"]
            next_eval = (progress["env_steps"] // every + 1) * every
            train_metrics: dict[str, list[float]] = {}
            if progress["env_steps"] < budget["env_steps"] and "to_first_update" not in clock.seconds:
                clock.add("to_first_update", time.monotonic() - self.started)
            # Where the run starts (a resumed run: its checkpoint's step), so that progress
            # displays count only the steps trained from here on.
            self.on_progress(progress["env_steps"])
            while progress["env_steps"] < budget["env_steps"]:
                if stop_requested():
                    raise StopRequested
                with clock("rollout"):
                    if continuous is not None:
                        progress["env_steps"] += continuous.run()
                    else:
                        out = rollout(train_env, algorithm, explore=True, seed=None, learn=True)
                        progress["env_steps"] += int(out["env_steps"])
                with clock("update"):
                    updated = algorithm.update()
                for key, value in updated.items():
                    if not math.isfinite(value):
                        raise RunFailed(f"non-finite {key} ({value}) at env step {progress['env_steps']}")
                    train_metrics.setdefault(key, []).append(float(value))
                self.on_progress(progress["env_steps"])
                if progress["env_steps"] >= min(next_eval, budget["env_steps"]):
                    log.write(progress["env_steps"], "train", {k: float(np.mean(v)) for k, v in train_metrics.items()})
                    train_metrics.clear()
                    evaluate()
                    # Checkpoints carry the replay (gigabytes on big tasks): write them at most
                    # every `checkpoint_every` seconds; a stop request always writes one.
                    if time.monotonic() - saved_at >= spec.checkpoint_every:
                        checkpoint()
                        saved_at = time.monotonic()
                    next_eval = (progress["env_steps"] // every + 1) * every
            # The absolute metric: the best checkpoint re-evaluated on 10x the episodes.
            with clock("evaluation"):
                best_state = _load(best_path)
                if best_state is not None:
                    load_policy_state(algorithm, best_state["policy"])
                absolute = evaluator.evaluate(algorithm, budget["absolute_episodes"], int(best["env_steps"]), "absolute")
            log.eval_rows(absolute)
            log.write(progress["env_steps"], "timings", {k: round(v, 3) for k, v in clock.seconds.items()})
            # The resume checkpoint holds the replay (gigabytes on SMAX) and a finished run is
            # never resumed: drop it, keep best.pt (policy only) and the metrics.
            last_path.unlink(missing_ok=True)
        except StopRequested:
            checkpoint()  # at a rollout (or round) boundary, so the saved state is consistent
            raise
        finally:
            log.close()
            evaluator.close()
            train_env.close()
        progress["grad_steps"] = int(getattr(algorithm, "grad_steps", 0))
        return RunResult(spec.run_id, "done", None, evals + absolute, progress["env_steps"], progress["grad_steps"])


def execute_run(spec: RunSpec, on_progress: Callable[[int], None] | None = None,
                should_stop: Callable[[], bool] | None = None, interrupt_flag: threading.Event | None = None,
                on_eval: EvalCallback | None = None, on_phase: PhaseCallback | None = None) -> RunResult:
    return Run(spec, on_progress, should_stop, interrupt_flag, on_eval, on_phase).execute()
