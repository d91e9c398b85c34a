"""AQMIX and REFIL: attention QMIX, and randomized entity-wise factorization (algorithms.md §2.4).

AQMIX is QMIX on the entity-attention recurrent agent with REFIL's attention-hypernetwork
mixer, whose first-layer and final mixing weights go through a softmax over the mixing
embedding (`softmax_mixing_weights`, on by default as in REFIL's config) instead of |.|.

REFIL adds an imagined objective. Per sampled episode it draws p ~ U(0, 1) and puts every
entity in group 1 with probability p, else in group 2, for the whole episode. The same agent
network (same zero initial state) then gives two more utilities per agent: q_in, attending
only to the visible entities of its own group (an agent is always in its own group), and
q_out, attending only to the visible entities of the other group (with none, the attention
output is 0: `EntityAttention` guarantees it). The mixer mixes the 2n-vector [q_in; q_out]
with first-layer weights from its attention hypernetwork run under the within-group and the
cross-group masks over the state (no observability), and bias, final weights and V as usual,
giving Q_tot^aux. The loss is

    (1 - lam) (y - Q_tot)^2 + lam (y - Q_tot^aux)^2,

with one shared target y from the full observations (double Q, the base learner's
`_targets`), both terms masked means as in `_td_loss`. Imagined utilities never act.

Groups are drawn per *state* entity row and carried into every agent's view through
`EnvSpec.obs_entity`, so an entity has the same group for every agent and in the mixer.
Where the backend cannot say (`obs_entity` is None, or a row maps to -1 / a state row the
batch lacks) an observation row gets its own draw with the same p [R]: row 0 is the agent
itself and takes the group of its state row (agents are listed first in the state, in slot
order, which the mixer assumes anyway); every other row is an independent Bernoulli(p) per
(agent, row), fixed over the episode. The mixer always uses the per-state-row groups.

Defaults follow REFIL's config (`refil.yaml` / `qmix_atten.yaml` [C]): attention embedding
128, 4 heads, GRU 64, hypernetwork embedding 128, mixing embedding 32, buffer 5000, batch 32,
RMSprop 5e-4, epsilon 1 -> 0.05 over 500k steps, targets every 200 episodes, double Q,
lam = 0.5. REFIL also takes 8 gradient steps per 8 parallel episodes; here, as for QMIX,
`updates_per_round` (one gradient step per `update()` call) is left at the harness default
so that every value-decomposition method of a suite gets the same number of updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.batch import NOW, on_filled_steps, taken_values
from algorithms.common.mixers import AttentionQMixer
from algorithms.value_decomposition import QMIXConfig, ValueDecomposition
from harness.api import EnvSpec, tunable
from harness.registry import register_algorithm


class RefilMixer(AttentionQMixer):
    """`AttentionQMixer` with REFIL's options: softmax (or |.|) mixing weights, optionally no
    nonlinearity (`linear`, REFIL's LinearFlexQMixer, used by MIPI), and a second entry point
    mixing imagined utilities [q_in; q_out] under per-query group masks.

    W1 row i comes from agent i's context row, b1, w2 and V from the pooled state summary
    (see `AttentionQMixer`). With `softmax_weights`, W1's rows and w2 are softmaxes over the
    mixing embedding: non-negative like |.|, so dQ_tot/dq_i >= 0 still holds.
    """

    def __init__(
        self,
        state_features: int,
        embed: int = 32,
        hyper_embed: int = 128,
        heads: int = 4,
        softmax_weights: bool = True,
        linear: bool = False,
    ) -> None:
        super().__init__(state_features, embed, hyper_embed, heads)
        self.softmax_weights = softmax_weights
        # linear: no ELU between the layers (MIPI's mixer), so Q_tot = sum_i w_i(S) q_i + b(S)
        # with w_i = (row i of W1) . w2 >= 0.
        self.activation = nn.Identity() if linear else nn.ELU()

    def _positive(self, w: torch.Tensor) -> torch.Tensor:
        return F.softmax(w, dim=-1) if self.softmax_weights else w.abs()

    def _combine(
        self, q: torch.Tensor, agent_rows: torch.Tensor, pooled: torch.Tensor, agent_mask: torch.Tensor
    ) -> torch.Tensor:
        """Q_tot from utilities q [..., K], W1's source rows [..., K, D] and the summary [..., D]."""
        w1 = torch.where(agent_mask.unsqueeze(-1), self._positive(self.w1(agent_rows)), 0.0)  # [..., K, embed]
        q = torch.where(agent_mask, q, 0.0)
        hidden = self.activation((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(pooled))
        return (hidden * self._positive(self.w2(pooled))).sum(-1) + self.value(pooled).squeeze(-1)

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        agents, pooled = self.hyper_inputs(state, state_mask, q.shape[-1])
        return self._combine(q, agents, pooled, agent_mask)

    def with_imagined(
        self,
        q: torch.Tensor,
        q_in: torch.Tensor,
        q_out: torch.Tensor,
        state: torch.Tensor,
        state_mask: torch.Tensor,
        agent_mask: torch.Tensor,
        within: torch.Tensor,
        cross: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q_tot [...] of q [..., A] and Q_tot^aux [...] of q_in, q_out [..., A]; within, cross
        [..., A, N]: which state entities agent i's hypernetwork query may attend to (own group /
        other group). One pass over the state serves both."""
        agents, pooled, (rows_in, rows_out) = self.context.with_agent_views(
            state, state_mask, q.shape[-1], [within, cross])  # b1, w2 and V see the whole state
        q_tot = self._combine(q, agents, pooled, agent_mask)
        imagined = self._combine(
            torch.cat([q_in, q_out], -1),
            torch.cat([rows_in, rows_out], -2),
            pooled,
            torch.cat([agent_mask, agent_mask], -1),
        )
        return q_tot, imagined


@dataclass
class AQMIXConfig(QMIXConfig):
    """REFIL's `qmix_atten.yaml`: QMIXConfig with a 128-wide hypernetwork, softmax mixing
    weights and epsilon annealed over 500k env steps."""

    epsilon_anneal_steps: int = tunable(500_000, 5_000, 2_000_000, log=True)
    """Env steps over which epsilon falls to epsilon_finish (REFIL: 500k)."""
    hypernet_embed: int = 128
    """Width of the attention hypernetworks (REFIL: 128)."""
    softmax_mixing_weights: bool = True
    """The mixing weights are softmaxes over the mixing embedding (REFIL's
    `softmax_mixing_weights`), instead of absolute values; both keep Q_tot monotonic."""


@dataclass
class REFILConfig(AQMIXConfig):
    """AQMIX plus the weight of the imagined objective (REFIL's `lmbda`, 0.5 in `refil.yaml`)."""

    imagined_weight: float = tunable(0.5, 0.0, 1.0)
    """lambda, the weight of the imagined-group TD loss (REFIL's `lmbda`; 0 is AQMIX)."""


class Partition(NamedTuple):
    """One imagined split per episode; True = group 1.

    state_group [B, N]: the group of each state entity row.
    obs_group [B, A, E]: the group of each row of each agent's observation (row 0 is the agent).
    """

    state_group: torch.Tensor
    obs_group: torch.Tensor


class GroupMasks(NamedTuple):
    """Attention masks of the imagined passes (True = may attend).

    obs_within, obs_cross [B, T+1, A, E]: the agent network's masks for q_in and q_out.
    state_within, state_cross [B, T+1, A, N]: the mixer hypernetwork's per-agent-query masks.
    """

    obs_within: torch.Tensor
    obs_cross: torch.Tensor
    state_within: torch.Tensor
    state_cross: torch.Tensor


def obs_entity_table(spec: EnvSpec) -> torch.Tensor | None:
    """spec.obs_entity as a long tensor [max_agents, max_entities] (-1: no state row), or None."""
    if spec.obs_entity is None:
        return None
    table = torch.full((spec.max_agents, spec.max_entities), -1, dtype=torch.long)
    for a, rows in enumerate(spec.obs_entity[: spec.max_agents]):
        rows = rows[: spec.max_entities]
        table[a, : len(rows)] = torch.tensor(rows, dtype=torch.long)
    return table


def draw_partition(
    generator: torch.Generator, b: int, n_state: int, n_agents: int, n_obs: int, table: torch.Tensor | None
) -> Partition:
    """Per episode p ~ U(0,1); each state entity in group 1 with probability p. Observation
    rows take their entity's group through `table` ([>= A, >= E], -1 = unknown); unknown
    rows (all of them without a table) draw their own Bernoulli(p), except row 0, which is
    the agent itself and takes the group of its state row (agent slot a = state row a)."""
    p = torch.rand(b, 1, generator=generator)
    state_group = torch.rand(b, n_state, generator=generator) < p
    obs_group = torch.rand(b, n_agents, n_obs, generator=generator) < p.unsqueeze(-1)
    if table is not None:
        rows = table[:n_agents, :n_obs]
        known = (rows >= 0) & (rows < n_state)
        mapped = state_group[:, rows.clamp(0, max(n_state - 1, 0))] if n_state else obs_group
        obs_group = torch.where(known, mapped, obs_group)
    own = min(n_agents, n_state)
    obs_group[:, :own, 0] = state_group[:, :own]
    return Partition(state_group, obs_group)


def group_masks(
    partition: Partition, obs_mask: torch.Tensor, state_mask: torch.Tensor, n_agents: int
) -> GroupMasks:
    """Within- and cross-group masks from a partition, intersected with what is visible
    (obs_mask [B, T+1, A, E]) or present (state_mask [B, T+1, N]). An agent's own group is
    the group of its row 0 (in the state: of its state row)."""
    obs_group = partition.obs_group.unsqueeze(1)  # [B, 1, A, E]
    same_obs = obs_group == obs_group[..., :1]
    state_group = partition.state_group
    same_state = (state_group[:, :n_agents, None] == state_group[:, None, :]).unsqueeze(1)  # [B, 1, A, N]
    present = state_mask.unsqueeze(-2)  # [B, T+1, 1, N]
    return GroupMasks(
        obs_within=obs_mask & same_obs,
        obs_cross=obs_mask & ~same_obs,
        state_within=present & same_state,
        state_cross=present & ~same_state,
    )


@register_algorithm("aqmix")
class AQMIX(ValueDecomposition):
    """QMIX with the entity-attention agent and REFIL's attention-hypernetwork mixer."""

    Config = AQMIXConfig

    def _build_mixer(self) -> nn.Module:
        cfg = self.cfg
        assert isinstance(cfg, AQMIXConfig)
        return RefilMixer(
            self.spec.state_features, cfg.mixing_embed, cfg.hypernet_embed, cfg.hypernet_heads, cfg.softmax_mixing_weights
        )


@register_algorithm("refil")
class REFIL(AQMIX):
    """AQMIX plus REFIL's imagined-group objective (weight `imagined_weight`; 0 is AQMIX)."""

    Config = REFILConfig

    def __init__(self, env_spec: EnvSpec, config: REFILConfig, seed: int, device: Any) -> None:
        super().__init__(env_spec, config, seed, device)
        self.obs_entity = obs_entity_table(env_spec)

    def draw_partition(self, batch: dict[str, torch.Tensor]) -> Partition:
        """One partition per episode of the batch, from the learner's own generator."""
        b, _, a, e = batch["obs_mask"].shape
        part = draw_partition(self.generator, b, batch["state_mask"].shape[-1], a, e, self.obs_entity)
        return Partition(*(x.to(self.device) for x in part))

    def imagined_utilities(
        self, batch: dict[str, torch.Tensor], masks: GroupMasks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, q_in, q_out [B, T+1, A, U] from one pass of the agent over the batch seen three
        ways (full observations, own group only, other group only)."""
        views = [batch["obs_mask"], masks.obs_within, masks.obs_cross]
        q, q_in, q_out = self.agent.unroll_views(batch["obs"], views, batch["agent_mask"])
        return q, q_in, q_out

    def loss_terms(
        self, batch: dict[str, torch.Tensor], partition: Partition | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The TD loss of Q_tot and of Q_tot^aux (same targets), and their statistics."""
        partition = self.draw_partition(batch) if partition is None else partition
        n_agents = batch["agent_mask"].shape[-1]
        masks = group_masks(partition, batch["obs_mask"], batch["state_mask"], n_agents)
        q, q_in, q_out = self.imagined_utilities(batch, masks)
        y = self._targets(batch, q)
        return self.imagined_td_losses(q[:, NOW], q_in[:, NOW], q_out[:, NOW], y, batch, masks)

    def imagined_td_losses(
        self,
        q: torch.Tensor,
        q_in: torch.Tensor,
        q_out: torch.Tensor,
        y: torch.Tensor,
        batch: dict[str, torch.Tensor],
        masks: GroupMasks,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The TD losses of Q_tot (from q) and of Q_tot^aux (from q_in, q_out, mixed under the
        group masks) against one target y, and their statistics; utilities at the acting slots
        [B, T, A, U]."""
        actions = batch["actions"]
        assert isinstance(self.mixer, RefilMixer)
        chosen, chosen_aux = on_filled_steps(
            batch,
            self.mixer.with_imagined,
            taken_values(q, actions),
            taken_values(q_in, actions),
            taken_values(q_out, actions),
            batch["state"][:, NOW],
            batch["state_mask"][:, NOW],
            batch["agent_mask"][:, NOW],
            masks.state_within[:, NOW],
            masks.state_cross[:, NOW],
        )
        td_loss, stats = self._td_loss(chosen, y, batch)
        aux_loss, aux_stats = self._td_loss(chosen_aux, y, batch)
        stats = {
            **stats,
            "td_loss": float(td_loss.detach()),
            "imagined_loss": float(aux_loss.detach()),
            "imagined_q_taken_mean": aux_stats["q_taken_mean"],
        }
        return td_loss, aux_loss, stats

    def loss(
        self, batch: dict[str, torch.Tensor], partition: Partition | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert isinstance(self.cfg, REFILConfig)
        lam = self.cfg.imagined_weight
        if lam == 0.0:  # AQMIX: the imagined pass would cost twice the agent's compute for nothing
            return super().loss(batch)
        td_loss, aux_loss, stats = self.loss_terms(batch, partition)
        return (1 - lam) * td_loss + lam * aux_loss, stats
