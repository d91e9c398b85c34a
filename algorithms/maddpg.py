"""MADDPG (Lowe et al. 2017; algorithms.md §2.8), continuous and discrete actions, with the
settings of VM3-AC's comparison (seed 002, Table 2).

Every agent i has its own actor mu_i(o_i) (continuous: deterministic, tanh output in
[-1, 1]; discrete: see below) and its own centralised critic Q_i(x, a_1..a_n), x = all
agents' observations (or the state), plus Polyak-averaged target copies of both (tau
0.005). Per agent i:

    L_Q  = (Q_i(x, a) - sg[r + gamma (1 - d) Qbar_i(x', mubar_1(o_1'), ..., mubar_n(o_n'))])^2
    L_mu = -Q_i(x, a_1, ..., mu_i(o_i), ..., a_n)

The critic target uses the target actors; in the actor loss the other agents' actions come
from the replay, so actor i gets gradient only through its own action. Each gradient step
updates the critics first, then the actors against the updated critics.

Continuous actions (VM3-AC's setting). Exploration: Gaussian noise N(0, noise_std^2) on the
actor's output, clipped to [-1, 1], from the algorithm's generator; explore=False acts with
mu_i(o_i). noise_std = 0.1 is [R] (the VM3-AC paper does not state it).

Discrete actions (the paper's MPE tasks; chosen by `env_spec.discrete`). Actor i outputs
logits l_i(o_i) over the U actions, and the policy is softmax(l_i) over the agent's available
actions (unavailable ones are masked before every softmax, sample and argmax, so they never
get probability, weight or gradient). Critics read actions as one-hot vectors (replayed
indices are encoded; absent agents' rows are zero, like their continuous actions):

    a_i~ = straight-through Gumbel-softmax sample of l_i(o_i) at temperature gumbel_temperature
    L_mu = -Q_i(x, a_1..a_i~..a_n) + logit_reg * mean over available actions of l_i(o_i)^2
    y    = r + gamma (1 - d) Qbar_i(x', onehot(argmax_{u in A_1'} lbar_1(o_1')), ...)

Acting: explore=True draws from softmax(l_i) over the available actions (the Gumbel-max
trick, the hard sample's forward value, with noise from the algorithm's generator);
explore=False takes the most probable available action. Design choices [R]:
- Hard (straight-through) sample in the actor loss: its forward value is a one-hot action,
  the kind of input the critic is trained on (the replay holds executed actions), while the
  gradient is the soft sample's. The authors' code feeds the soft sample itself, but there
  the environment executed soft vectors too. The temperature only shapes that gradient.
  Neither is better everywhere: over 10 seeds of 2-agent matrix games (lr 1e-3), the soft
  sample coordinated more reliably on `identity`, the hard one found the optimum (A,A) of
  `nonmonotonic_3x3` more often (4/10 against 2/10).
- Target actions: the one-hot of the target actor's masked argmax (a deterministic target,
  as mubar(o') is in the continuous case) rather than a sampled one: less target variance.
- The logit regulariser (weight 1e-3, mean squared logits) follows the authors' code; it is
  taken over available actions only and per agent, so it trains only actor i.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.common.agentwise import AgentwiseMLP, own_action_swapped
from algorithms.common.exploration import (
    gumbel_noise,
    masked_argmax,
    sample_categorical,
    straight_through_gumbel_softmax,
)
from algorithms.common.off_policy import AgentInputs, OffPolicyActorCritic, OffPolicyConfig, per_agent_mean
from algorithms.common.targets import soft_update
from harness.api import Step, tunable
from harness.registry import register_algorithm


@dataclass
class MADDPGConfig(OffPolicyConfig):
    """VM3-AC's Table 2 column for MADDPG (Adam 3e-4, batch 128, buffer 5e5, gamma 0.99,
    Polyak 0.005, 2x128 ReLU, tanh output). Exploration noise and gradient clipping are not
    given there [R]: noise std 0.1, no clipping (None). Discrete actions only: the Gumbel-
    softmax temperature 1 and the logit regulariser 1e-3 of the authors' code [R]."""

    noise_std: float = tunable(0.1, 0.01, 0.5, log=True)
    """Continuous actions: standard deviation of the Gaussian exploration noise on the actor's
    output (clipped to [-1, 1]) [R]."""
    grad_norm_clip: float | None = None
    """Global gradient-norm clip of actors and critics; None: no clipping [R]."""
    gumbel_temperature: float = tunable(1.0, 0.1, 10.0, log=True)
    """Discrete actions: the straight-through Gumbel-softmax temperature [R]."""
    logit_reg: float = 1e-3
    """Discrete actions: weight of the mean squared logits in the actor loss [R]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {
            "noise_std": self.noise_std >= 0,
            "grad_norm_clip": self.grad_norm_clip is None or self.grad_norm_clip > 0,
            "gumbel_temperature": self.gumbel_temperature > 0,
            "logit_reg": self.logit_reg >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{type(self).__name__}: noise_std and logit_reg must be >= 0, gumbel_temperature > 0, "
                             "grad_norm_clip > 0 or None; got " + ", ".join(f"{b}={getattr(self, b)!r}" for b in bad))


def mean_square_available(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Mean of the squared logits over the available actions [..., U] -> [...] (0 if none)."""
    return torch.where(avail, logits.pow(2), 0.0).sum(-1) / avail.sum(-1).clamp(min=1)


@register_algorithm("maddpg")
class MADDPG(OffPolicyActorCritic):
    """Deterministic (continuous) or Gumbel-softmax (discrete) per-agent actors with per-agent
    centralised critics."""

    Config = MADDPGConfig
    cfg: MADDPGConfig
    action_spaces = ("continuous", "discrete")

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
            if self.spec.discrete:
                indices = self.discrete_actions(x, self.step_avail_actions(step), explore)
                return self.to_discrete_actions(indices, x, step), memory
            actions = self.policy_actions(self.actor, x)
            if explore:
                noise = self.cfg.noise_std * self.random_normal(*actions.shape)
                actions = (actions + noise).clamp(-1.0, 1.0)
        return self.to_actions(actions, x, step), memory

    def discrete_actions(self, x: AgentInputs, avail: torch.Tensor, explore: bool) -> torch.Tensor:
        """Action indices [B, A]: a draw from softmax(l_i(o_i)) over the available actions, or
        its most probable available action when not exploring."""
        logits = self.actor(x.obs)
        if explore:
            return sample_categorical(logits, avail, self.generator)
        return masked_argmax(logits, avail)

    # ---------------------------------------------------------------- learning

    def q_values(self, critic: nn.Module, x: AgentInputs, own: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """Q_i for every agent [B, A]; `joint` [B, A, D] or critic i's copy [B, A, A, D]."""
        return critic(self.critic_input(x, own, joint)).squeeze(-1)

    def replayed_actions(self, batch: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The replayed joint action as the critics read it [B, A, D]: as stored (continuous)
        or one-hot (discrete)."""
        if self.spec.discrete:
            return self.one_hot_actions(batch["actions"], present)
        return batch["actions"]

    def target_actions(self, after: AgentInputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target actors' actions at x' [B, A, D]: mubar(o'), or the one-hot of the target
        logits' argmax over the next step's available actions."""
        if not self.spec.discrete:
            return self.policy_actions(self.target_actor, after)
        greedy = masked_argmax(self.target_actor(after.obs), batch["next_avail_actions"])
        return self.one_hot_actions(greedy, after.present)

    @torch.no_grad()
    def critic_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """y_i = r + gamma (1 - d) Qbar_i(x', abar') [B, A], abar' from the target actors."""
        after = self.batch_inputs(batch, "next_")
        next_actions = self.target_actions(after, batch)
        q_next = self.q_values(self.target_critic, after, next_actions, next_actions)
        go_on = ~batch["terminated"].unsqueeze(-1) & after.present
        return batch["reward"].unsqueeze(-1) + self.cfg.gamma * torch.where(go_on, q_next, 0.0)

    def critic_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over agents of the mean squared TD error, and the mean Q at replayed actions."""
        now = self.batch_inputs(batch)
        replayed = self.replayed_actions(batch, now.present)
        q = self.q_values(self.critic, now, replayed, replayed)
        y = self.critic_targets(batch)
        return per_agent_mean((q - y).pow(2), now.present).sum(), per_agent_mean(q.detach(), now.present).mean()

    def actor_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-Q_i(x, a_1..mu_i(o_i)..a_n) per agent [A]: the others' actions from the replay.
        Discrete actions: mu_i(o_i) is a straight-through Gumbel-softmax sample, and the loss
        adds logit_reg times the mean squared available logits."""
        now = self.batch_inputs(batch)
        if not self.spec.discrete:
            mu = self.policy_actions(self.actor, now)
            q = self.q_values(self.critic, now, mu, own_action_swapped(mu, batch["actions"]))
            return per_agent_mean(-q, now.present)
        logits, avail = self.actor(now.obs), batch["avail_actions"]
        sample = straight_through_gumbel_softmax(logits, avail, gumbel_noise(logits, self.generator),
                                                 self.cfg.gumbel_temperature)
        own = torch.where(now.present.unsqueeze(-1), sample, 0.0)
        q = self.q_values(self.critic, now, own, own_action_swapped(own, self.replayed_actions(batch, now.present)))
        penalty = per_agent_mean(mean_square_available(logits, avail), now.present)
        return per_agent_mean(-q, now.present) + self.cfg.logit_reg * penalty

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
