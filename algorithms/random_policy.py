"""The uniform-random policy: the floor every leaderboard number is read against.

It learns nothing. Discrete actions are drawn uniformly among the available ones, continuous
actions uniformly in [-1, 1]^D, from a generator seeded by the run's seed (so evaluation with
`explore=False` is random too: that is the point of the baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.api import EnvSpec, Step, Transition
from harness.registry import register_algorithm


@dataclass
class RandomConfig:
    """No parameters: a uniform policy has nothing to tune."""


@register_algorithm("random")
class RandomPolicy:
    """Uniform-random policy over the available actions (reference score, learns nothing)."""

    name: ClassVar[str]
    Config: ClassVar[type] = RandomConfig
    action_spaces: ClassVar[tuple[str, ...]] = ("discrete", "continuous")
    learns: ClassVar[bool] = False

    def __init__(self, env_spec: EnvSpec, config: RandomConfig, seed: int, device: Any) -> None:
        self.spec = env_spec
        self.rng = np.random.default_rng(seed)
        self.grad_steps = 0

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        if not self.spec.discrete:
            shape = (*step.agent_mask.shape, self.spec.n_actions)
            return self.rng.uniform(-1.0, 1.0, size=shape).astype(np.float32), memory
        # Gumbel-free trick: the argmax of uniform noise restricted to available actions is uniform.
        noise = self.rng.random(step.avail_actions.shape)
        return np.where(step.avail_actions, noise, -1.0).argmax(-1).astype(np.int64), memory

    def observe(self, transition: Transition) -> None:
        return None

    def update(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
