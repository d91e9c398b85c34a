"""Transition replay: single environment steps for off-policy actor-critic learners (SAC,
VM3-AC, MADDPG), sampled uniformly.

Each stored entry is one env step of one environment: what the agents saw (`obs`, masks,
`state`; for discrete specs also `avail_actions`), the joint action, the team reward, what
followed (`next_*`) and whether the step ended the episode in a way that forbids
bootstrapping (`terminated`; a time-limit truncation bootstraps). Envs whose episode had
already ended (`Transition.active` False) are padding and are skipped. Storage is padded to
the env spec's sizes (a composition with fewer agents or entities fills only part of its
row; the rest stays zero, i.e. masked). `np.zeros` pages memory in only as entries arrive,
so a 5e5 capacity costs what is filled, and checkpoints hold only the filled part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.api import EnvSpec, Step, Transition

# Fields read from `Transition.step` (as NAME) and from `Transition.next` (as next_NAME).
STEP_FIELDS = ("obs", "obs_mask", "state", "state_mask", "agent_mask")


@dataclass(frozen=True)
class Column:
    """One stored array: the shape of a single entry and its dtype."""

    shape: tuple[int, ...]
    dtype: type


def transition_schema(spec: EnvSpec) -> dict[str, Column]:
    a, e, f = spec.max_agents, spec.max_entities, spec.obs_features
    n, g = spec.max_state_entities, spec.state_features
    per_step = {
        "obs": Column((a, e, f), np.float32),
        "obs_mask": Column((a, e), np.bool_),
        "state": Column((n, g), np.float32),
        "state_mask": Column((n,), np.bool_),
        "agent_mask": Column((a,), np.bool_),
    }
    actions = Column((a,), np.int64) if spec.discrete else Column((a, spec.n_actions), np.float32)
    schema = {**per_step, **{f"next_{k}": c for k, c in per_step.items()}}
    schema.update(actions=actions, reward=Column((), np.float32), terminated=Column((), np.bool_))
    if spec.discrete:  # a discrete learner masks its own fresh actions now and its target's next
        schema["avail_actions"] = Column((a, spec.n_actions), np.bool_)
        schema["next_avail_actions"] = Column((a, spec.n_actions), np.bool_)
    return schema


def transition_fields(tr: Transition, schema: dict[str, Column]) -> dict[str, np.ndarray]:
    """The batched arrays [B, ...] of one runner `Transition`, by stored name."""

    def read(step: Step, name: str) -> np.ndarray:
        return getattr(step, name)

    out = {}
    for name in schema:
        if name.startswith("next_"):
            out[name] = read(tr.next, name[len("next_"):])
        elif name in STEP_FIELDS or name == "avail_actions":
            out[name] = read(tr.step, name)
    out["actions"] = tr.actions
    out["reward"] = tr.next.reward
    out["terminated"] = tr.next.terminated
    return out


class TransitionReplay:
    """A ring buffer of `capacity` single-step transitions."""

    def __init__(self, schema: dict[str, Column], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be at least 1, got {capacity}")
        self.schema, self.capacity = schema, capacity
        self.data: dict[str, np.ndarray] = {name: np.zeros((capacity, *c.shape), c.dtype) for name, c in schema.items()}
        self.size = 0
        self.ptr = 0
        self.added = 0  # transitions ever stored (env steps learned from)

    @classmethod
    def for_spec(cls, spec: EnvSpec, capacity: int) -> TransitionReplay:
        return cls(transition_schema(spec), capacity)

    def __len__(self) -> int:
        return self.size

    def add(self, transition: Transition) -> int:
        """Store the active envs' steps of one batched transition; returns how many."""
        active = np.flatnonzero(transition.active)[-self.capacity:]  # a batch larger than the buffer keeps its tail
        n = len(active)
        if n == 0:
            return 0
        idx = (self.ptr + np.arange(n)) % self.capacity
        for name, arr in transition_fields(transition, self.schema).items():
            store, rows = self.data[name], np.asarray(arr)[active]
            if rows.shape[1:] == store.shape[1:]:
                store[idx] = rows
                continue
            if rows.ndim != store.ndim or any(r > s for r, s in zip(rows.shape[1:], store.shape[1:], strict=True)):
                raise ValueError(f"transition field {name!r} of shape {rows.shape} does not fit storage {store.shape}")
            # A smaller team or entity list: the padding must read as absent (zero, False).
            store[idx] = 0
            region: tuple[Any, ...] = (idx, *(slice(0, s) for s in rows.shape[1:]))
            store[region] = rows
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        self.added += n
        return n

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """`batch_size` transitions drawn uniformly with replacement (CPU tensors)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay")
        idx = torch.randint(self.size, (batch_size,), generator=generator).numpy()
        return {name: torch.from_numpy(arr[idx]) for name, arr in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """The filled part, as tensors sharing memory with the buffer (like nn.Module.state_dict)."""
        return {
            "size": self.size,
            "ptr": self.ptr,
            "added": self.added,
            "data": {name: torch.from_numpy(arr[: self.size]) for name, arr in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"checkpointed replay holds {n} transitions, more than capacity {self.capacity}")
        for name, arr in self.data.items():
            arr[:n] = state["data"][name].numpy()
            arr[n : self.size] = 0  # what this buffer held beyond the checkpoint is gone
        self.size, self.ptr, self.added = n, int(state["ptr"]), int(state["added"])
