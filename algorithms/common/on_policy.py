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
        """Every stored episode, trimmed to the batch's largest extents, on `device`; with a
        `policy_version`, also `episode_version`: each step's copy of the version its episode
        began with."""
        # `sample` with all episodes: the order is irrelevant here (a fixed throwaway generator
        # leaves the learner's own random stream untouched).
        batch = self.replay.sample(len(self.replay), torch.Generator().manual_seed(0))
        if "policy_version" in batch:
            batch["episode_version"] = batch["policy_version"][:, :1].expand_as(batch["policy_version"])
        return {name: x.to(device) for name, x in batch.items()}

    @property
    def per_slot(self) -> set[str]:
        """The fields stored per observation slot (T+1 per episode); the others are per step."""
        return {name for name, f in self.schema.items() if f.per_slot}

    def packed_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """`episodes_batch` laid end to end in lanes (`pack_episodes`)."""
        return pack_episodes(self.episodes_batch(torch.device("cpu")), self.per_slot, device)

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


def lane_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Where `pack_episodes` puts each episode: (lane, offset) per episode and the lane length
    in observation slots, or None when packing would not save any lane.

    An episode of T steps takes T+1 observation slots and one separator slot. Lanes are as
    long as the longest episode needs, so none is ever split, and they are filled first fit
    decreasing: longest episodes first, each into the first lane with room (within 11/9 of
    the fewest lanes possible). Which lane an episode lands in changes nothing it computes.
    """
    spans = lengths + 2
    length = int(spans.max())
    free = np.full(len(spans), length, np.int64)  # room left in each lane (at most one per episode)
    lanes, offsets = np.zeros(len(spans), np.int64), np.zeros(len(spans), np.int64)
    for i in np.argsort(-spans, kind="stable").tolist():  # once per update, over episodes: no hot path
        lane = int(np.argmax(free >= spans[i]))
        lanes[i], offsets[i] = lane, length - free[lane]
        free[lane] -= spans[i]
    used = int(lanes.max()) + 1
    if used >= len(spans):
        return None
    return lanes, offsets, length


def pack_episodes(
    batch: dict[str, torch.Tensor], per_slot: set[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """Padded episodes [B, T(+1), ...] -> lanes [K, L(-1), ...] with several episodes back to
    back in each lane, so short episodes next to a long one cost no padding.

    Each episode is followed by one empty slot: no agent present, no step filled. That is all
    the consumers of an episode batch need to keep episodes apart: a recurrent unroll zeroes
    an absent agent's state (so the next episode starts from zero), generalised advantages
    stop at unfilled steps and bootstrap a truncated episode from its own final slot, and
    losses average over filled steps of present agents. Fields in `per_slot` are per
    observation slot (L per lane); the others per step (L - 1 per lane, step t acting in slot
    t). Returns the batch unchanged when packing saves no lane (e.g. equal-length episodes).
    Gathers on the CPU (where the replay is), then moves the lanes to `device`.
    """
    filled = batch["filled"]
    lengths = filled.sum(1).numpy()
    layout = lane_layout(lengths)
    if layout is None:
        return {name: x.to(device) for name, x in batch.items()}
    lanes, offsets, length = layout
    episodes, steps = filled.shape
    # Source row of every lane position in the flattened [B * (T+1)] slots; -1 = empty.
    positions = np.arange(length)
    t = positions[None, :] - offsets[:, None]  # [B, L]: episode e's slot index at each position
    slot_source = np.full((lanes.max() + 1, length), -1, np.int64)
    step_source = np.full((lanes.max() + 1, length - 1), -1, np.int64)
    for source, limit, width in ((slot_source, lengths + 1, steps + 1), (step_source, lengths, steps)):
        rows, cols = np.nonzero((t >= 0) & (t < limit[:, None]))  # (episode, position) pairs
        source[lanes[rows], cols] = rows * width + t[rows, cols]
    out = {}
    for name, x in batch.items():
        source = slot_source if name in per_slot else step_source
        flat = x.flatten(0, 1)
        flat = torch.cat([flat, flat.new_zeros((1, *flat.shape[1:]))])  # row -1: the empty slot
        out[name] = flat[torch.from_numpy(source)].to(device)
    return out


def cut_into_chunks(
    data: dict[str, torch.Tensor], per_slot: set[str], length: int, states: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Lanes of `T` steps [K, T(+1), ...] -> chunks of `length` steps [N, length(+1), ...], for
    truncated backpropagation through time (Yu et al.'s `data_chunk_length`): a recurrent
    unroll then walks `length` steps instead of the whole lane, and mini-batches mix pieces
    of many episodes.

    Each chunk keeps its `length` per-step entries and the observation slots they act in,
    then one empty slot (zeros: no agent present), so per-slot fields stay one longer than
    per-step ones; the slot after a chunk was only needed for the advantages, computed
    before. `states` names per-slot recurrent states [K, T+1, A, H] of the full lanes (from
    an unroll of the whole lanes) and the field that receives each chunk's initial state
    [N, A, H]: the state of the slot before the chunk, zero for a lane's first chunk.
    Chunks without a filled step (the tails of short lanes) are dropped.
    """
    steps = data["filled"].shape[1]
    padded = -(-steps // length) * length

    def pieces(x: torch.Tensor) -> torch.Tensor:  # [K, steps, ...] -> [K * padded / length, length, ...]
        x = torch.cat([x, x.new_zeros((x.shape[0], padded - steps, *x.shape[2:]))], 1)
        return x.unflatten(1, (-1, length)).flatten(0, 1)

    out = {}
    for name, x in data.items():
        if name in states:
            before = torch.cat([torch.zeros_like(x[:, :1]), x[:, : steps - 1]], 1)  # state of slot t - 1
            out[states[name]] = pieces(before)[:, 0]
        elif name in per_slot:
            chunk = pieces(x[:, :steps])
            out[name] = torch.cat([chunk, torch.zeros_like(chunk[:, :1])], 1)
        else:
            out[name] = pieces(x)
    keep = out["filled"].any(1)
    return {name: x[keep] for name, x in out.items()}


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
