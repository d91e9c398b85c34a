"""MADDPG (Lowe et al. 2017; algorithms.md §2.8), continuous actions, with the settings of
VM3-AC's comparison (seed 002, Table 2).

Every agent i has its own deterministic actor mu_i(o_i) (tanh output in [-1, 1]) and its
own centralised critic Q_i(x, a_1..a_n), x = all agents' observations (or the state), plus
Polyak-averaged target copies of both (tau 0.005). Per agent i:

    L_Q  = (Q_i(x, a) - sg[r + gamma (1 - d) Qbar_i(x', mubar_1(o_1'), ..., mubar_n(o_n'))])^2
    L_mu = -Q_i(x, a_1, ..., mu_i(o_i), ..., a_n)

The critic target uses the target actors; in the actor loss the other agents' actions come
from the replay, so actor i gets gradient only through its own action. Each gradient step
updates the critics first, then the actors against the updated critics.

Exploration: Gaussian noise N(0, noise_std^2) on the actor's output, clipped to [-1, 1],
from the algorithm's generator; explore=False acts with mu_i(o_i). noise_std = 0.1 is [R]
(the VM3-AC paper does not state it). A discrete Gumbel-softmax variant is not implemented:
`action_spaces = ("continuous",)`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.common.agentwise import AgentwiseMLP, own_action_swapped
from algorithms.common.off_policy import AgentInputs, OffPolicyActorCritic, OffPolicyConfig, per_agent_mean
from algorithms.common.targets import soft_update
from harness.api import Step, tunable
from harness.registry import register_algorithm


@dataclass
class MADDPGConfig(OffPolicyConfig):
    """VM3-AC's Table 2 column for MADDPG (Adam 3e-4, batch 128, buffer 5e5, gamma 0.99,
    Polyak 0.005, 2x128 ReLU, tanh output). Exploration noise and gradient clipping are not
    given there [R]: noise std 0.1, no clipping (None)."""

    noise_std: float = tunable(0.1, 0.01, 0.5, log=True)
    grad_norm_clip: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_std < 0 or (self.grad_norm_clip is not None and self.grad_norm_clip <= 0):
            raise ValueError(f"{type(self).__name__}: noise_std must be >= 0 and grad_norm_clip > 0 or None, "
                             f"got noise_std={self.noise_std}, grad_norm_clip={self.grad_norm_clip}")


@register_algorithm("maddpg")
class MADDPG(OffPolicyActorCritic):
    """Deterministic per-agent actors with per-agent centralised critics."""

    Config = MADDPGConfig
    cfg: MADDPGConfig

    def _build(self) -> None:
        cfg, n = self.cfg, self.n_agents
        self.actor = AgentwiseMLP(n, self.obs_dim, self.action_dim, cfg.hidden, cfg.hidden_layers).to(self.device)
        self.critic = AgentwiseMLP(n, self.centralised_critic_features(), 1, cfg.hidden, cfg.hidden_layers).to(self.device)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimiser = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_optimiser = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)

    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic,
                "target_actor": self.target_actor, "target_critic": self.target_critic}

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optimiser": self.actor_optimiser, "critic_optimiser": self.critic_optimiser}

    # ---------------------------------------------------------------- acting

    @staticmethod
    def policy_actions(actor: nn.Module, x: AgentInputs) -> torch.Tensor:
        """mu_i(o_i) for every agent [B, A, D], absent agents' zero."""
        return torch.where(x.present.unsqueeze(-1), torch.tanh(actor(x.obs)), 0.0)

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        with torch.inference_mode():
            x = self.step_inputs(step)
            actions = self.policy_actions(self.actor, x)
            if explore:
                noise = self.cfg.noise_std * self.random_normal(*actions.shape)
                actions = (actions + noise).clamp(-1.0, 1.0)
        return self.to_actions(actions, x, step), memory

    # ---------------------------------------------------------------- learning

    def q_values(self, critic: nn.Module, x: AgentInputs, own: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """Q_i for every agent [B, A]; `joint` [B, A, D] or critic i's copy [B, A, A, D]."""
        return critic(self.critic_input(x, own, joint)).squeeze(-1)

    @torch.no_grad()
    def critic_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """y_i = r + gamma (1 - d) Qbar_i(x', mubar(o')) [B, A], from the target actors."""
        after = self.batch_inputs(batch, "next_")
        next_actions = self.policy_actions(self.target_actor, after)
        q_next = self.q_values(self.target_critic, after, next_actions, next_actions)
        go_on = ~batch["terminated"].unsqueeze(-1) & after.present
        return batch["reward"].unsqueeze(-1) + self.cfg.gamma * torch.where(go_on, q_next, 0.0)

    def critic_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over agents of the mean squared TD error, and the mean Q at replayed actions."""
        now = self.batch_inputs(batch)
        q = self.q_values(self.critic, now, batch["actions"], batch["actions"])
        y = self.critic_targets(batch)
        return per_agent_mean((q - y).pow(2), now.present).sum(), per_agent_mean(q.detach(), now.present).mean()

    def actor_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-Q_i(x, a_1..mu_i(o_i)..a_n) per agent [A]: the others' actions from the replay."""
        now = self.batch_inputs(batch)
        mu = self.policy_actions(self.actor, now)
        q = self.q_values(self.critic, now, mu, own_action_swapped(mu, batch["actions"]))
        return per_agent_mean(-q, now.present)

    def _step(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: Any) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_norm_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_norm_clip)
        optimiser.step()

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        critic_loss, q_mean = self.critic_loss(batch)
        self._step(self.critic_optimiser, critic_loss, self.critic.parameters())
        actor_loss = self.actor_losses(batch).sum()
        self._step(self.actor_optimiser, actor_loss, self.actor.parameters())
        soft_update(self.target_critic, self.critic, self.cfg.tau)
        soft_update(self.target_actor, self.actor, self.cfg.tau)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach()),
                "q_mean": float(q_mean)}
