"""A tiny Python backend whose envs end their episodes at different steps (tests load it as
`countdown_env:Countdown`): every episode lasts 1..episode_limit steps, the length drawn from
the episode's seed. Observations show the step and the steps left, so a first observation
is recognisable. It saves no state of its own (`env_state` is None), as Python backends do."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.api import EnvSpec
from scenarios.python_batch import Frame, Outcome, PythonBatchBackend


class CountdownArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episode_limit: int = Field(5, ge=1)


class CountdownComposition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: int = Field(2, ge=1)


class Countdown(PythonBatchBackend):
    """Reward: the number of agents choosing action 1; terminated when the countdown ends."""

    Args = CountdownArgs
    Composition = CountdownComposition

    @classmethod
    def default_compositions(cls, args: CountdownArgs) -> list[CountdownComposition]:
        return [CountdownComposition()]

    @classmethod
    def describe(cls, args: CountdownArgs, compositions: list[Any]) -> EnvSpec:
        agents = max(c.agents for c in compositions)
        return EnvSpec(obs_features=2, state_features=2, n_actions=2, max_agents=agents, max_entities=1,
                       max_state_entities=1, episode_limit=args.episode_limit)

    def make_env(self, composition_index: int) -> SimpleNamespace:
        return SimpleNamespace(t=0, left=0, agents=self.compositions[composition_index].agents)

    def reset_env(self, env: SimpleNamespace, composition_index: int, seed: int) -> Frame:
        env.t, env.left = 0, 1 + seed % self.args.episode_limit
        return self._frame(env)

    def step_env(self, env: SimpleNamespace, composition_index: int, actions: np.ndarray) -> Outcome:
        env.t, env.left = env.t + 1, env.left - 1
        return Outcome(self._frame(env), float(actions.sum()), terminated=env.left == 0, truncated=False, won=True)

    @staticmethod
    def _frame(env: SimpleNamespace) -> Frame:
        n = env.agents
        row = np.array([env.t, env.left], np.float32)
        return Frame(obs=np.tile(row, (n, 1, 1)), obs_mask=np.ones((n, 1), bool), state=row[None].copy(),
                     state_mask=np.ones(1, bool), avail_actions=np.ones((n, 2), bool), agent_mask=np.ones(n, bool))


class SynchronousCountdown(Countdown):
    """The same game on a backend that cannot reset its envs one by one."""

    supports_autoreset = False
