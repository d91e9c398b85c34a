"""Every backend seen as a PettingZoo `ParallelEnv` (one environment, agents by name).

This makes the harness's environments usable from any PettingZoo tool, and lets
`pettingzoo.test.parallel_api_test` check them. Observations are the agent's entity list
flattened ([E * F]); the available actions travel in `infos[agent]["action_mask"]`.
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
        self._act_space = spaces.Discrete(spec.n_actions)
        self._step: Any = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _views(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        s = self._step
        obs, infos = {}, {}
        for i, name in enumerate(self.possible_agents):
            if name in self.agents:
                obs[name] = s.obs[0, i].reshape(-1).astype(np.float32)
                infos[name] = {"action_mask": s.avail_actions[0, i].astype(np.int8)}
        return obs, infos

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.seed = seed
        self._step = self.env.reset(seed if seed is not None else None)
        self.agents = [n for i, n in enumerate(self.possible_agents) if self._step.agent_mask[0, i]]
        return self._views()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        joint = np.zeros((1, len(self.possible_agents)), dtype=np.int64)
        for i, name in enumerate(self.possible_agents):
            if name in actions:
                joint[0, i] = int(actions[name])
        self._step = self.env.step(joint)
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
                infos[a] = {"action_mask": s.avail_actions[0, i].astype(np.int8)}
        return obs, rewards, terminations, truncations, infos

    def close(self) -> None:
        self.env.close()
