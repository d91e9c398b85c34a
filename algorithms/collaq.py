"""CollaQ: self and interactive utilities with the MARA regulariser (algorithms.md §2.5).

Each agent's utility is split into a term that sees only the agent itself and a term that
sees its whole observation,

    q_i = q_i^self(o_i^self, .) + q_i^int(o_i, .),

two recurrent entity-attention networks of the same shape (shared by all agents, like the
one network of the other value-decomposition learners). o_i^self is row 0 of the entity
list alone: every other entity removed. The interactive term should explain only what the
other entities add, so the MARA loss pushes it to 0 on the self-only observation:

    L_MARA = mean over filled steps, present agents and available actions of q_i^int(o_i^self, u)^2,

added with weight `mara_weight` (1, CollaQ's `regulization: all_` [C:
`facebookresearch/CollaQ`, `q_interactive_learner.py`]) to the QMIX TD loss on q_i (double Q,
the base learner's targets, which use the target copy of both networks).

The mixer is AQMIX's (REFIL's attention hypernetwork with softmax mixing weights): MIPI
reimplemented CollaQ on entity observations inside REFIL's code base [P], whose mixer this
is [R]. Other defaults: CollaQ's config (epsilon over 50k steps, buffer 5000, targets every
200 episodes, double Q) and REFIL's network sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from algorithms.common.batch import NOW
from algorithms.common.networks import RecurrentAgent
from algorithms.refil import AQMIX, AQMIXConfig
from harness.api import tunable
from harness.registry import register_algorithm


def self_only(obs: torch.Tensor, obs_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """o_i^self: row 0 (the agent itself) with every other entity removed."""
    return obs[..., :1, :], obs_mask[..., :1]


class CollaQAgent(nn.Module):
    """Two recurrent entity-attention networks: `alone` on the own row, `interactive` on the
    whole observation. Acting and targets use their sum; the recurrent state is the two
    GRU states side by side ([..., 2 * hidden])."""

    def __init__(self, obs_features: int, n_outputs: int, embed: int = 128, heads: int = 4, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.alone = RecurrentAgent(obs_features, n_outputs, embed, heads, hidden)
        self.interactive = RecurrentAgent(obs_features, n_outputs, embed, heads, hidden)

    def initial_state(self, batch: int, agents: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, agents, 2 * self.hidden, device=device)

    def parts(self, obs, obs_mask, agent_mask, h) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: (q_self, q_int) [B, A, U] and the new recurrent state."""
        h_self, h_int = h.split(self.hidden, dim=-1)
        q_self, h_self = self.alone(*self_only(obs, obs_mask), agent_mask, h_self)
        q_int, h_int = self.interactive(obs, obs_mask, agent_mask, h_int)
        return q_self, q_int, torch.cat([h_self, h_int], -1)

    def forward(self, obs, obs_mask, agent_mask, h) -> tuple[torch.Tensor, torch.Tensor]:
        q_self, q_int, h = self.parts(obs, obs_mask, agent_mask, h)
        return q_self + q_int, h

    def unroll_parts(
        self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole episodes: q_self, q_int and q_int on the self-only observation, [B, T, A, U]."""
        alone_obs, alone_mask = self_only(obs, obs_mask)
        return (
            self.alone.unroll(alone_obs, alone_mask, agent_mask),
            self.interactive.unroll(obs, obs_mask, agent_mask),
            self.interactive.unroll(alone_obs, alone_mask, agent_mask),
        )

    def unroll(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor) -> torch.Tensor:
        alone_obs, alone_mask = self_only(obs, obs_mask)
        return self.alone.unroll(alone_obs, alone_mask, agent_mask) + self.interactive.unroll(obs, obs_mask, agent_mask)


@dataclass
class CollaQConfig(AQMIXConfig):
    """AQMIX's sizes with CollaQ's exploration (epsilon over 50k steps) and the MARA weight."""

    epsilon_anneal_steps: int = tunable(50_000, 5_000, 500_000, log=True)
    """Env steps over which epsilon falls to epsilon_finish (CollaQ: 50k)."""
    mara_weight: float = tunable(1.0, 0.1, 10.0, log=True)
    """Weight of the MARA loss, which pushes the interactive utility to 0 on the self-only
    observation (CollaQ's `regulization: all_`: 1)."""


def mara_loss(q_int_alone: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of q_int(o^self, u)^2 over filled steps x present agents x available actions;
    q_int_alone is [B, T, A, U] for the T steps (not the final observation slot)."""
    mask = batch["filled"][..., None, None] & batch["agent_mask"][:, NOW, :, None] & batch["avail_actions"][:, NOW]
    return torch.where(mask, q_int_alone, 0.0).pow(2).sum() / mask.sum().clamp(min=1)


@register_algorithm("collaq")
class CollaQ(AQMIX):
    """QMIX TD loss on q_self + q_int plus the MARA loss (q_int on the self-only observation -> 0)."""

    Config = CollaQConfig

    def _build_agent(self) -> nn.Module:
        cfg, spec = self.cfg, self.spec
        return CollaQAgent(spec.obs_features, spec.n_actions, cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        assert isinstance(self.agent, CollaQAgent) and isinstance(self.cfg, CollaQConfig)
        q_self, q_int, q_int_alone = self.agent.unroll_parts(batch["obs"], batch["obs_mask"], batch["agent_mask"])
        q = q_self + q_int
        y = self._targets(batch, q)
        chosen = self._joint_value(self.mixer, q[:, NOW], batch["actions"], batch, NOW)
        td_loss, stats = self._td_loss(chosen, y, batch)
        mara = mara_loss(q_int_alone[:, NOW], batch)
        stats = {**stats, "td_loss": float(td_loss.detach()), "mara_loss": float(mara.detach())}
        return td_loss + self.cfg.mara_weight * mara, stats
