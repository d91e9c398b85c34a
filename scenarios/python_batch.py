"""Shared machinery for backends built on ordinary (one-episode-at-a-time) Python environments.

A `PythonBatchBackend` holds B slots; at each `reset` every slot draws a composition, gets
an environment instance for it (instances are kept per slot and composition, so a layout or
team size is built once), and returns one `Frame` per slot. The base class pads the frames
to the backend's `EnvSpec` and stacks them into a `Step`; after a slot's episode ends it
keeps reporting done with zero reward, as the batched contract requires, or, with
auto-reset on, starts its next episode at the following `step` (drawing its composition
and seed as `reset` does). The slots' Python environments cannot be saved, so checkpoints
of continuous rollouts on these backends restart their episodes.

A subclass implements three hooks:
- `make_env(composition_index)` -> an environment object (anything);
- `reset_env(env, composition_index, seed)` -> `Frame`;
- `step_env(env, composition_index, actions)` -> `Outcome` (actions: this slot's
  `[A, ...]` rows, of which the first `frame.n_agents` are real).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.api import Backend, Step


@dataclass
class Frame:
    """One environment's view, unpadded: a agents, e entities, n state entities."""

    obs: np.ndarray  # [a, e, F]
    obs_mask: np.ndarray  # [a, e]
    state: np.ndarray  # [n, G]
    state_mask: np.ndarray  # [n]
    avail_actions: np.ndarray  # [a, U]
    agent_mask: np.ndarray  # [a]

    @property
    def n_agents(self) -> int:
        return int(self.obs.shape[0])


@dataclass
class Outcome:
    frame: Frame
    reward: float
    terminated: bool  # ended by the task's own rules (no bootstrapping past it)
    truncated: bool  # ended by the time limit
    won: bool = False


def _pad_into(dst: np.ndarray, src: np.ndarray) -> None:
    dst[tuple(slice(0, s) for s in src.shape)] = src


class EpisodeDraws(Backend):
    """What batches of per-episode-seeded environments share: the composition weights, the
    generator that draws every slot's composition and episode seed at a reset, and that
    generator's checkpoint JSON (plus whatever `extra_state` a subclass adds)."""

    def __init__(self, args: Any, compositions: list[Any], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        self.args, self.compositions, self.num_envs, self.training = args, compositions, num_envs, training
        self.spec = self.describe(args, compositions)
        w = np.ones(len(compositions)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def restart_draws(self, seed: int | None) -> None:
        """A reset's `seed`: the draws start over from it (None: they go on)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def draw_episodes(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Composition indices and episode seeds of `count` new episodes, in slot order."""
        comp = self.rng.choice(len(self.probs), size=count, p=self.probs).astype(np.int64)
        return comp, self.rng.integers(0, 2**31 - 1, size=count)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def rng_state(self) -> str:
        return json.dumps({"rng": self.rng.bit_generator.state, "extra": self.extra_state()})

    def set_rng_state(self, state: str) -> None:
        if state:
            saved = json.loads(state)
            self.rng.bit_generator.state = saved["rng"]
            self.set_extra_state(saved.get("extra", {}))


class PythonBatchBackend(EpisodeDraws):
    """Batched view of B independent Python environments (see the module docstring)."""

    supports_autoreset = True  # `reset_slots` restarts the done slots one by one

    def __init__(self, args: Any, compositions: list[Any], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        super().__init__(args, compositions, num_envs, seed, weights, training)
        self._envs: dict[tuple[int, int], Any] = {}
        self.comp = np.zeros(num_envs, dtype=np.int64)
        self.finished = np.ones(num_envs, dtype=bool)
        self.won = np.zeros(num_envs, dtype=bool)
        self.terminated = np.zeros(num_envs, dtype=bool)
        self.frames: list[Frame | None] = [None] * num_envs

    # ---- hooks -------------------------------------------------------------------------------
    def make_env(self, composition_index: int) -> Any:
        raise NotImplementedError

    def reset_env(self, env: Any, composition_index: int, seed: int) -> Frame:
        raise NotImplementedError

    def step_env(self, env: Any, composition_index: int, actions: np.ndarray) -> Outcome:
        raise NotImplementedError

    def close_env(self, env: Any) -> None:
        close = getattr(env, "close", None)
        if close is not None:
            close()

    # ---- batched contract --------------------------------------------------------------------
    def _env(self, slot: int) -> Any:
        key = (slot, int(self.comp[slot]))
        if key not in self._envs:
            self._envs[key] = self.make_env(key[1])
        return self._envs[key]

    def reset(self, seed: int | None = None) -> Step:
        self.restart_draws(seed)
        self.reset_slots(np.ones(self.num_envs, dtype=bool))
        return self._stack(np.zeros(self.num_envs, dtype=np.float32))

    def reset_slots(self, slots: np.ndarray) -> None:
        """New episodes in the slots `slots` ([B] bool); compositions and seeds are drawn for
        them in slot order (all slots: exactly `reset`'s draws)."""
        chosen = np.flatnonzero(slots)
        self.comp[chosen], env_seeds = self.draw_episodes(len(chosen))
        for b, seed in zip(chosen.tolist(), env_seeds.tolist(), strict=True):
            self.frames[b] = self.reset_env(self._env(b), int(self.comp[b]), int(seed))
        self.finished[chosen] = False
        self.won[chosen] = False
        self.terminated[chosen] = False

    def step(self, actions: np.ndarray) -> Step:
        actions = np.asarray(actions)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        restarting = self.finished.copy() if self.autoreset else np.zeros(self.num_envs, dtype=bool)
        if restarting.any():
            self.reset_slots(restarting)
        for b in range(self.num_envs):
            if self.finished[b] or restarting[b]:
                continue
            frame = self.frames[b]
            assert frame is not None
            out = self.step_env(self._env(b), int(self.comp[b]), actions[b, : frame.n_agents])
            self.frames[b] = out.frame
            reward[b] = out.reward
            self.finished[b] = out.terminated or out.truncated
            self.terminated[b] = out.terminated
            self.won[b] = out.won
        return self._stack(reward)

    def _stack(self, reward: np.ndarray) -> Step:
        spec, b = self.spec, self.num_envs
        a, e, n = spec.max_agents, spec.max_entities, spec.max_state_entities
        u = spec.n_actions
        out = {
            "obs": np.zeros((b, a, e, spec.obs_features), np.float32),
            "obs_mask": np.zeros((b, a, e), bool),
            "state": np.zeros((b, n, spec.state_features), np.float32),
            "state_mask": np.zeros((b, n), bool),
            "avail_actions": np.zeros((b, a, u), bool),
            "agent_mask": np.zeros((b, a), bool),
        }
        for i, frame in enumerate(self.frames):
            assert frame is not None
            for name, arr in out.items():
                _pad_into(arr[i], getattr(frame, name))
        if spec.discrete:  # padded agent slots may "act" but nothing happens: one action each
            out["avail_actions"][~out["agent_mask"], 0] = True
        else:  # continuous: every action dimension is always available
            out["avail_actions"][:] = True
        return Step(
            **out,
            reward=reward,
            done=self.finished.copy(),
            terminated=self.terminated.copy(),
            won=self.won & self.finished,
            composition=self.comp.copy(),
        )

    def close(self) -> None:
        for env in self._envs.values():
            self.close_env(env)
        self._envs.clear()

