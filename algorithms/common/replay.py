"""Episode replay: whole padded episodes in numpy, sampled as trimmed torch batches.

An episode of T steps has T+1 observation slots (slot t is what the agents saw before step
t; slot T is the final `next`, needed to bootstrap a truncated episode) and T per-step
entries (actions, reward, terminated, filled). Storage is padded to the env spec's limits;
each episode records how much of the padding it used, and a sampled batch is cut to the
largest extent among its episodes, so short episodes and small teams cost no more than
they need. `np.zeros` storage is only touched (paged in) as episodes arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.api import EnvSpec, Transition

# Axes an episode may fill only partly: steps, agents, observed entities, state entities.
TRIMMED = ("T", "A", "E", "N")
STEP_FIELDS = ("obs", "obs_mask", "state", "state_mask", "avail_actions", "agent_mask")


@dataclass(frozen=True)
class Field:
    """One stored array: `dims` after the episode axis are "T" (steps), "T+1" (observation
    slots), "A", "E", "N" (padded sizes) or fixed ints (feature sizes)."""

    dims: tuple[str | int, ...]
    dtype: type

    @property
    def per_slot(self) -> bool:
        return self.dims[0] == "T+1"


def episode_schema(spec: EnvSpec) -> dict[str, Field]:
    actions = Field(("T", "A"), np.int64) if spec.discrete else Field(("T", "A", spec.n_actions), np.float32)
    return {
        "obs": Field(("T+1", "A", "E", spec.obs_features), np.float32),
        "obs_mask": Field(("T+1", "A", "E"), np.bool_),
        "state": Field(("T+1", "N", spec.state_features), np.float32),
        "state_mask": Field(("T+1", "N"), np.bool_),
        "avail_actions": Field(("T+1", "A", spec.n_actions), np.bool_),
        "agent_mask": Field(("T+1", "A"), np.bool_),
        "actions": actions,
        "reward": Field(("T",), np.float32),
        "terminated": Field(("T",), np.bool_),
        "filled": Field(("T",), np.bool_),
    }


def spec_limits(spec: EnvSpec) -> dict[str, int]:
    return {"T": spec.episode_limit, "A": spec.max_agents, "E": spec.max_entities, "N": spec.max_state_entities}


def _sizes(limits: dict[str, int]) -> dict[str, int]:
    return {**limits, "T+1": limits["T"] + 1}


class EpisodeReplay:
    """A ring buffer of `capacity` padded episodes.

    Storage is padded to the largest agent, entity and state-entity counts among the episodes
    stored so far, not to the spec's limits, and grows (one copy) when a larger episode comes:
    a task's spec covers its test teams too (8 v 8 on zero_shot_sc2), while training sees the
    train teams (at most 5 v 5), so storage, clearing and checkpoints cost what the data needs.
    """

    def __init__(self, schema: dict[str, Field], capacity: int, limits: dict[str, int]) -> None:
        self.schema, self.capacity, self.limits = schema, capacity, limits
        self.allocated = {d: 0 for d in TRIMMED[1:]}  # the padded extents of `data`
        self.data: dict[str, np.ndarray] = self._allocate(self.allocated)
        self.extents = np.zeros((capacity, len(TRIMMED)), np.int64)  # per episode, in TRIMMED order
        self.size = 0
        self.ptr = 0

    def _allocate(self, extents: dict[str, int]) -> dict[str, np.ndarray]:
        sizes = _sizes({**self.limits, **extents})
        return {
            name: np.zeros((self.capacity, *(sizes[d] if isinstance(d, str) else d for d in f.dims)), f.dtype)
            for name, f in self.schema.items()
        }

    def _fit(self, extents: dict[str, int]) -> None:
        """Grow the padded extents of the storage to at least `extents`, keeping its contents."""
        wanted = {d: max(self.allocated[d], extents.get(d, 0)) for d in self.allocated}
        too_big = [d for d, n in wanted.items() if n > self.limits[d]]
        if too_big:
            raise ValueError(f"episodes with {too_big[0]} = {wanted[too_big[0]]} do not fit the spec's {self.limits[too_big[0]]}")
        if wanted == self.allocated:
            return
        grown = self._allocate(wanted)
        for name, old in self.data.items():
            grown[name][tuple(slice(0, n) for n in old.shape)] = old
        self.data, self.allocated = grown, wanted

    @classmethod
    def for_spec(cls, spec: EnvSpec, capacity: int) -> EpisodeReplay:
        return cls(episode_schema(spec), capacity, spec_limits(spec))

    def __len__(self) -> int:
        return self.size

    def _observed_extents(self, episodes: dict[str, np.ndarray]) -> dict[str, int]:
        seen: dict[str, int] = {}
        for name, f in self.schema.items():
            for axis, d in enumerate(f.dims):
                if d in ("A", "E", "N"):
                    seen[d] = max(seen.get(d, 0), episodes[name].shape[axis + 1])
        return seen

    def add(self, episodes: dict[str, np.ndarray], lengths: np.ndarray) -> None:
        """Store a batch of episodes (arrays [n, steps(+1), ...], possibly less padded)."""
        n = len(lengths)
        idx = (self.ptr + np.arange(n)) % self.capacity
        seen = self._observed_extents(episodes)
        for name, store in self.data.items():
            arr = episodes[name]
            if arr.ndim != store.ndim or arr.shape[1] > store.shape[1] or any(
                    a > self.limits.get(d, a) for a, d in zip(arr.shape[2:], self.schema[name].dims[1:], strict=False)
                    if isinstance(d, str)):
                raise ValueError(f"episode field {name!r} of shape {arr.shape} does not fit storage {store.shape}")
        self._fit(seen)
        # What the overwritten episodes wrote (their extents; the rest is still zero): masks left
        # over from them would read as real data beyond the new episodes' ends.
        stale = _sizes(dict(zip(TRIMMED, self.extents[idx].max(0).tolist(), strict=True))) if self.size else None
        for name, store in self.data.items():
            f = self.schema[name]
            if stale is not None:
                cleared: tuple[Any, ...] = (idx, *(slice(0, stale[d]) if isinstance(d, str) else slice(None)
                                                   for d in f.dims))
                store[cleared] = 0
            arr = episodes[name]
            filled: tuple[Any, ...] = (idx, *(slice(0, s) for s in arr.shape[1:]))
            store[filled] = arr
        self.extents[idx] = [[int(t)] + [seen.get(d, 0) for d in TRIMMED[1:]] for t in lengths]
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def clear(self) -> None:
        """Forget every episode (on-policy learners after each update)."""
        self.size = self.ptr = 0

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """`batch_size` distinct episodes, trimmed to their largest extents (CPU tensors)."""
        idx = torch.randperm(self.size, generator=generator)[:batch_size].numpy()
        sizes = _sizes(dict(zip(TRIMMED, self.extents[idx].max(0).tolist(), strict=True)))
        out = {}
        for name, f in self.schema.items():
            cut: tuple[Any, ...] = (idx, *(slice(0, sizes[d]) if isinstance(d, str) else slice(None) for d in f.dims))
            out[name] = torch.from_numpy(self.data[name][cut])
        return out

    def _used(self, n: int) -> dict[str, tuple[Any, ...]]:
        """Per field, the region the first `n` episodes can have written (padding beyond the
        largest team and episode seen stays zero, so checkpoints leave it out)."""
        extents = self.extents[:n].max(0).tolist() if n else [0] * len(TRIMMED)
        sizes = _sizes(dict(zip(TRIMMED, extents, strict=True)))
        return {
            name: (slice(0, n), *(slice(0, sizes[d]) if isinstance(d, str) else slice(None) for d in f.dims))
            for name, f in self.schema.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """The filled part, as tensors sharing memory with the buffer (like nn.Module.state_dict)."""
        n = self.size
        used = self._used(n)
        return {
            "size": n,
            "ptr": self.ptr,
            "extents": torch.from_numpy(self.extents[:n]),
            "data": {name: torch.from_numpy(arr[used[name]]) for name, arr in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n, before = int(state["size"]), self.size
        for arr in self.data.values():  # only what this buffer itself filled can be non-zero
            arr[:before] = 0
        self.size, self.ptr = n, int(state["ptr"])
        self.extents[:n] = state["extents"].numpy()
        if n:
            self._fit(dict(zip(TRIMMED[1:], self.extents[:n, 1:].max(0).tolist(), strict=True)))
        for name, arr in self.data.items():
            if name not in state["data"]:  # a field added since the checkpoint: left zero
                continue
            saved = state["data"][name].numpy()
            arr[tuple(slice(0, s) for s in saved.shape)] = saved


class EpisodeCollector:
    """Turns the runner's `Transition`s into episodes for an `EpisodeReplay`.

    Synchronous batches (`Transition.first` None): the runner resets all B envs together and
    steps until every env is done; envs that finished early report active=False and are
    stored as unfilled padding. The batch is committed, in env order, when every env is done
    (or the episode limit is reached, which stores the unfinished episodes as truncated:
    they keep their final observation and bootstrap).

    Continuous rollouts (`first` set): every env has its own step index. An active row is
    written at its env's index (a `first` row starts the env's episode at slot 0); an
    episode is committed as soon as it ends, together with the others ending at that step;
    inactive rows (reset steps) carry nothing. Episodes in flight stay in `buffers`.

    `extras`: per-step fields of the replay's schema beyond the standard ones ([B, ...]
    arrays given with each transition, e.g. behaviour log-probabilities).
    """

    def __init__(self, replay: EpisodeReplay) -> None:
        self.replay = replay
        self.max_steps = replay.data["reward"].shape[1]
        self.episodes = 0  # finished episodes
        self.env_steps = 0  # active env steps
        self.buffers: dict[str, np.ndarray] = {}
        self.t = 0  # synchronous batches: the batch's step index
        self.lengths = np.zeros(0, np.int64)  # continuous rollouts: each env's step index

    def _buffer(self, name: str, batch: int, entry_shape: tuple[int, ...]) -> np.ndarray:
        buf = self.buffers.get(name)
        if buf is None:
            f = self.replay.schema[name]
            slots = self.max_steps + int(f.per_slot)
            buf = self.buffers[name] = np.zeros((batch, slots, *entry_shape), f.dtype)
        return buf

    def _put(self, name: str, slot: int, value: np.ndarray) -> None:
        self._buffer(name, value.shape[0], value.shape[1:])[:, slot] = value

    def observe(self, tr: Transition, extras: dict[str, np.ndarray] | None = None) -> bool:
        """Record one batched step; True when it stored episodes in the replay."""
        if tr.first is not None:
            return self._observe_continuous(tr, extras or {})
        if self.t == 0:
            for name in STEP_FIELDS:
                self._put(name, 0, getattr(tr.step, name))
        for name in STEP_FIELDS:
            self._put(name, self.t + 1, getattr(tr.next, name))
        self._put("actions", self.t, tr.actions)
        self._put("reward", self.t, tr.next.reward)
        self._put("terminated", self.t, tr.next.terminated & tr.active)
        self._put("filled", self.t, tr.active)
        for name, value in (extras or {}).items():
            self._put(name, self.t, value)
        self.episodes += int((tr.next.done & tr.active).sum())
        self.env_steps += int(tr.active.sum())
        self.t += 1
        if tr.next.done.all() or self.t >= self.max_steps:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Store whatever has been collected (nothing if empty) and start a new batch."""
        if self.t:
            batch = {n: b[:, : self.t + int(self.replay.schema[n].per_slot)] for n, b in self.buffers.items()}
            self.replay.add(batch, batch["filled"].sum(1))
        self.buffers, self.t = {}, 0

    # ---- continuous rollouts ----------------------------------------------------------------

    def _put_rows(self, name: str, rows: np.ndarray, slots: np.ndarray | int, value: np.ndarray,
                  batch: int) -> None:
        self._buffer(name, batch, value.shape[1:])[rows, slots] = value

    def _start_episodes(self, tr: Transition, rows: np.ndarray, batch: int) -> None:
        """Slot 0 of the envs `rows`: their `step` rows, first observations of new episodes."""
        for buf in self.buffers.values():
            buf[rows] = 0  # the env's previous episode would read as data beyond this one's end
        self.lengths[rows] = 0
        for name in STEP_FIELDS:
            self._put_rows(name, rows, 0, getattr(tr.step, name)[rows], batch)

    def _observe_continuous(self, tr: Transition, extras: dict[str, np.ndarray]) -> bool:
        batch = tr.active.shape[0]
        if self.lengths.shape != (batch,):
            self.lengths = np.zeros(batch, np.int64)
        rows = np.flatnonzero(tr.active)
        assert tr.first is not None  # continuous rollouts always say which envs start an episode
        starting = rows[tr.first[rows]]
        if starting.size:
            self._start_episodes(tr, starting, batch)
        t = self.lengths[rows]
        if t.size and t.max() >= self.max_steps:
            raise ValueError(f"an episode ran past the replay's {self.max_steps} steps (the spec's episode_limit)")
        for name in STEP_FIELDS:
            self._put_rows(name, rows, t + 1, getattr(tr.next, name)[rows], batch)
        per_step = {"actions": tr.actions, "reward": tr.next.reward, "terminated": tr.next.terminated,
                    "filled": tr.active, **extras}
        for name, value in per_step.items():
            self._put_rows(name, rows, t, np.asarray(value)[rows], batch)
        self.lengths[rows] += 1
        self.env_steps += int(rows.size)
        ended = rows[tr.next.done[rows]]
        self.episodes += int(ended.size)
        if ended.size:
            self._commit(ended)
        return bool(ended.size)

    def _commit(self, envs: np.ndarray) -> None:
        """Store the finished episodes of `envs` (cut to the longest of them)."""
        lengths = self.lengths[envs]
        longest = int(lengths.max())
        batch = {n: b[envs, : longest + int(self.replay.schema[n].per_slot)] for n, b in self.buffers.items()}
        self.replay.add(batch, lengths)

    def state_dict(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "t": self.t,
            "lengths": torch.from_numpy(self.lengths),
            "buffers": {n: torch.from_numpy(b) for n, b in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes, self.env_steps, self.t = int(state["episodes"]), int(state["env_steps"]), int(state["t"])
        self.lengths = state["lengths"].numpy().copy() if "lengths" in state else np.zeros(0, np.int64)
        self.buffers = {n: b.numpy().copy() for n, b in state["buffers"].items()}
