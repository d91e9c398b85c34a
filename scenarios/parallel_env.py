"""Every backend seen as a PettingZoo `ParallelEnv` (one environment, agents by name).

This makes the harness's environments usable from any PettingZoo tool, and lets
`pettingzoo.test.parallel_api_test` check them. Observations are the agent's entity list
flattened ([E * F]). Discrete backends get `Discrete(U)` action spaces, with the available
actions in `infos[agent]["action_mask"]`; continuous backends get `Box(-1, 1, (D,))`, the
harness's continuous action convention (the backend rescales to the env's own bounds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from harness.api import Backend


class BackendParallelEnv(ParallelEnv):
    metadata = {"name": "harness_backend", "render_modes": []}

    def __init__(self, backend_cls: type[Backend], args: Any, compositions: list[Any], seed: int = 0) -> None:
        self.backend_cls, self.args, self.compositions, self.seed = backend_cls, args, compositions, seed
        self.env = backend_cls(args, compositions, 1, seed)
        spec = self.env.spec
        self.possible_agents = [f"agent_{i}" for i in range(spec.max_agents)]
        self.agents: list[str] = []
        shape = (spec.max_entities * spec.obs_features,)
        self._obs_space = spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
        self.discrete = spec.discrete
        self._act_space: spaces.Space = (
            spaces.Discrete(spec.n_actions) if spec.discrete
            else spaces.Box(-1.0, 1.0, (spec.n_actions,), dtype=np.float32)
        )
        self._step: Any = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _info(self, i: int) -> dict[str, Any]:
        # A Box has no action mask (every dimension is always available).
        return {"action_mask": self._step.avail_actions[0, i].astype(np.int8)} if self.discrete else {}

    def _views(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        s = self._step
        obs, infos = {}, {}
        for i, name in enumerate(self.possible_agents):
            if name in self.agents:
                obs[name] = s.obs[0, i].reshape(-1).astype(np.float32)
                infos[name] = self._info(i)
        return obs, infos

    def _joint(self, actions: dict[str, Any]) -> np.ndarray:
        """The backend's [1, A] (discrete) or [1, A, D] (continuous) action array; absent agents get zeros."""
        spec = self.env.spec
        if self.discrete:
            joint = np.zeros((1, len(self.possible_agents)), dtype=np.int64)
        else:
            joint = np.zeros((1, len(self.possible_agents), spec.n_actions), dtype=np.float32)
        for i, name in enumerate(self.possible_agents):
            if name in actions:
                action = actions[name]
                joint[0, i] = int(action) if self.discrete else np.asarray(action, dtype=np.float32)
        return joint

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.seed = seed
        self._step = self.env.reset(seed if seed is not None else None)
        self.agents = [n for i, n in enumerate(self.possible_agents) if self._step.agent_mask[0, i]]
        return self._views()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self._step = self.env.step(self._joint(actions))
        s = self._step
        acting = list(self.agents)
        rewards = {a: float(s.reward[0]) for a in acting}
        done, truncated = bool(s.done[0]), bool(s.done[0] and not s.terminated[0])
        alive = {n for i, n in enumerate(self.possible_agents) if s.agent_mask[0, i]}
        self.agents = [] if done else [a for a in acting if a in alive]
        # An agent leaves by truncation when the episode hits its time limit, else by termination.
        truncations = {a: truncated for a in acting}
        terminations = {a: a not in self.agents and not truncated for a in acting}
        obs, infos = self._views()
        for a in acting:  # agents that just left still get their last observation
            if a not in obs:
                i = self.possible_agents.index(a)
                obs[a] = s.obs[0, i].reshape(-1).astype(np.float32)
                infos[a] = self._info(i)
        return obs, rewards, terminations, truncations, infos

    def close(self) -> None:
        self.env.close()
