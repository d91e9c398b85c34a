"""Building blocks of on-policy actor-critic learners (MAPPO, IPPO): a rollout store that
keeps exactly the episodes collected since the last update, generalised advantage
estimation over padded multi-agent episodes, and a running normaliser of value targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.common.replay import EpisodeCollector, EpisodeReplay, Field, episode_schema, spec_limits
from harness.api import EnvSpec, Transition


class RolloutStore:
    """The episodes collected since the last `clear()`, in an `EpisodeReplay` that grows.

    Transitions arrive through an `EpisodeCollector`, as for off-policy learners; the
    difference is the capacity: it is made room for before episodes are stored, so no
    episode is ever overwritten. Synchronous batches reserve room for the whole batch when
    it starts (the number of parallel envs is only known then); continuous rollouts, where
    episodes end at any step, grow it by doubling. Episodes in flight stay in the collector
    across `clear()`: they are stored when they end.

    `extra_fields`: per-step fields beyond the standard ones (given to `observe` each step).
    """

    def __init__(self, spec: EnvSpec, extra_fields: dict[str, Field] | None = None) -> None:
        self.spec = spec
        self.schema = {**episode_schema(spec), **(extra_fields or {})}
        self.replay = EpisodeReplay(self.schema, 0, spec_limits(spec))
        self.collector = EpisodeCollector(self.replay)

    def __len__(self) -> int:
        return len(self.replay)

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps

    @property
    def episodes(self) -> int:
        return self.collector.episodes

    def reserve(self, episodes: int) -> None:
        """Make the replay hold at least `episodes` episodes, keeping what it holds."""
        if episodes <= self.replay.capacity:
            return
        bigger = EpisodeReplay(self.schema, episodes, spec_limits(self.spec))
        bigger.load_state_dict(self.replay.state_dict())
        bigger.ptr = bigger.size  # never wrapped: the next batch goes after the stored episodes
        self.replay = self.collector.replay = bigger

    def observe(self, transition: Transition, extras: dict[str, np.ndarray] | None = None) -> None:
        if transition.first is None:
            if self.collector.t == 0:  # a new batch of episodes starts
                self.reserve(len(self.replay) + transition.step.batch_size)
        else:
            ending = int((transition.active & transition.next.done).sum())
            if len(self.replay) + ending > self.replay.capacity:
                self.reserve(max(len(self.replay) + ending, 2 * self.replay.capacity))
        self.collector.observe(transition, extras)

    def episodes_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Every stored episode, trimmed to the batch's largest extents, on `device`."""
        # `sample` with all episodes: the order is irrelevant here (a fixed throwaway generator
        # leaves the learner's own random stream untouched).
        batch = self.replay.sample(len(self.replay), torch.Generator().manual_seed(0))
        return {name: x.to(device) for name, x in batch.items()}

    def clear(self) -> None:
        self.replay.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.replay.capacity,
            "replay": self.replay.state_dict(),
            "collector": self.collector.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reserve(int(state["capacity"]))
        self.replay.load_state_dict(state["replay"])
        self.collector.load_state_dict(state["collector"])


def generalised_advantages(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    filled: torch.Tensor,
    values: torch.Tensor,
    present: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) per agent, backward over each padded episode.

    reward, terminated, filled: [B, T] (one shared team reward); values, present: [B, T+1, A]
    over observation slots (slot t+1 is the state after step t; values in return units).
    Returns (advantages, returns) [B, T, A], zero where step t is not filled or agent i is
    absent at t, with

        delta_t = r_t + gamma (1 - d_t) V_{t+1} - V_t,    A_t = delta_t + gamma lam c_t A_{t+1},

    where c_t says agent i's own trajectory goes on at t+1 (step t+1 filled, i present, no
    termination at t). A truncated episode's last step bootstraps from the value of its final
    observation slot. An agent that is absent at t+1 (it died at t) bootstraps from the mean
    value of the agents present at t+1: the team reward it shares goes on after its death.
    `torch.where` (not products) keeps junk after the episode end out of every result.
    """
    steps = reward.shape[1]
    alive_next = present[:, 1:]
    team_next = torch.where(alive_next, values[:, 1:], 0.0).sum(-1, keepdim=True) / alive_next.sum(
        -1, keepdim=True
    ).clamp(min=1)
    bootstrap = torch.where(alive_next, values[:, 1:], team_next)  # [B, T, A]
    go_on = ~terminated.unsqueeze(-1)
    delta = reward.unsqueeze(-1) + gamma * torch.where(go_on, bootstrap, 0.0) - values[:, :-1]
    next_filled = torch.cat([filled[:, 1:], torch.zeros_like(filled[:, :1])], dim=1).unsqueeze(-1)
    carries = go_on & next_filled & alive_next
    valid = filled.unsqueeze(-1) & present[:, :-1]
    advantages = [torch.empty(0)] * steps
    running = torch.zeros_like(delta[:, 0])
    for t in reversed(range(steps)):
        running = delta[:, t] + gamma * lam * torch.where(carries[:, t], running, 0.0)
        running = torch.where(valid[:, t], running, 0.0)
        advantages[t] = running
    adv = torch.stack(advantages, dim=1)
    return adv, torch.where(valid, adv + values[:, :-1], 0.0)


class ValueNormalizer(nn.Module):
    """Running mean and variance of the value targets, exact over every target seen (the
    parallel form of Welford's update, like PyMARL2/EPyMARL's RunningMeanStd).

    The critic regresses `norm(returns)`; its outputs go through `denorm` before GAE. The
    statistics are float64 buffers, so they travel with `state_dict()`.
    """

    def __init__(self, min_variance: float = 1e-5) -> None:
        super().__init__()
        self.min_variance = min_variance
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch of targets (any shape; pass only real entries) into the statistics."""
        x = x.detach().to(torch.float64).flatten()
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = x.mean(), x.var(unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total) / total)
        self.count.copy_(total)

    def _std(self) -> torch.Tensor:
        return self.var.clamp(min=self.min_variance).sqrt()

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self._std()).to(x.dtype)

    def denorm(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self._std() + self.mean).to(x.dtype)
