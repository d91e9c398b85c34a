"""Mixers: per-agent utilities q [..., A] (+ the state entity list) -> Q_tot [...].

Every mixer takes `(q, state, state_mask, agent_mask)` with q [..., A], state [..., N, G],
state_mask [..., N], agent_mask [..., A]; leading dims are free (batch, time). Absent
agents count as q_i = 0 with zero weight, so padding cannot change Q_tot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.networks import EntityAttention


class NoMixer(nn.Module):
    """IQL: keep the per-agent utilities [..., A] (absent agents 0): one TD loss per agent."""

    def forward(self, q, state=None, state_mask=None, agent_mask=None) -> torch.Tensor:
        return q if agent_mask is None else torch.where(agent_mask, q, 0.0)


class SumMixer(nn.Module):
    """VDN: Q_tot = sum of the present agents' utilities."""

    def forward(self, q, state=None, state_mask=None, agent_mask=None) -> torch.Tensor:
        if agent_mask is not None:
            q = torch.where(agent_mask, q, 0.0)
        return q.sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [..., K, D] over the rows where mask [..., K] is True (0 when none is)."""
    total = torch.where(mask.unsqueeze(-1), x, 0.0).sum(-2)
    return total / mask.sum(-1, keepdim=True).clamp(min=1)


class AttentionQMixer(nn.Module):
    """Monotonic QMIX mixer whose hypernetworks attend over the state entity list.

    Q_tot = w2 . ELU(W1^T q + b1) + V with W1 = |H1| (one row per agent) and w2 = |H2|, so
    dQ_tot/dq_i >= 0 (IGM). No weight's shape depends on the number of agents or entities:

    - each state entity is embedded (ReLU(Linear)) and attends over all present entities
      (masked multi-head attention), giving a context row per entity;
    - row i of W1 comes from agent i's context row. This assumes the backend lists the
      agents first in the state, in agent-slot order: state[..., :A, :] are the rows of the
      agents whose utilities are q[..., :A];
    - b1, w2 and V come from the masked mean of the context rows over present entities.

    The hypernetworks are thus two layers deep (entity embedding + attention, then a linear
    head), as in REFIL's attention hypernetwork; V is a 2-layer ReLU net as in QMIX.
    """

    def __init__(self, state_features: int, embed: int = 32, hyper_embed: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.entity = nn.Linear(state_features, hyper_embed)
        self.attention = EntityAttention(hyper_embed, heads)
        self.w1 = nn.Linear(hyper_embed, embed)
        self.b1 = nn.Linear(hyper_embed, embed)
        self.w2 = nn.Linear(hyper_embed, embed)
        self.value = nn.Sequential(nn.Linear(hyper_embed, embed), nn.ReLU(), nn.Linear(embed, 1))

    def hyper_inputs(self, state, state_mask, n_agents: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-agent context rows [..., A, D] and the pooled state summary [..., D]."""
        z = F.relu(self.entity(state))
        context = F.relu(self.attention(z, z, state_mask))
        return context[..., :n_agents, :], masked_mean(context, state_mask)

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        agents, pooled = self.hyper_inputs(state, state_mask, q.shape[-1])
        present = agent_mask.unsqueeze(-1)
        w1 = torch.where(present, self.w1(agents).abs(), 0.0)  # [..., A, embed]
        q = torch.where(agent_mask, q, 0.0)
        hidden = F.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(pooled))
        return (hidden * self.w2(pooled).abs()).sum(-1) + self.value(pooled).squeeze(-1)
