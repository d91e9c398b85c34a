"""ME-IGM (seed 003): maximum-entropy exploration that keeps IGM, via an order-preserving
transformation (`opt_o`) of each agent's utilities into policy logits.

Utilities q_i and Q_tot are learned as in QMIX (or QPLEX), but rollouts sample from
pi_i = softmax(F_i(q_i; S) / alpha) instead of epsilon-greedy. F_i applies the same
monotone scalar map to every action entry, so pi_i's mode is argmax q_i: execution takes
that argmax (no state needed) and IGM makes the joint choice optimal. Three losses, each
updating its own parameters (algorithms.md §3.4, reconstructed [R] where the paper's
equations were lost):

- L_Q (agent, mixer): (Q_tot - G)^2 with a soft TD(lambda) target G whose next actions
  are drawn from the current policies, minus alpha * sum_i log pi_i at every bootstrap;
- L_F (transform): (sg[Q_tot(u)] - sum_i F_i(sg[q_i])_{u_i})^2 at replayed actions, which
  keeps the local softmaxes close to the joint soft-greedy policy (the paper's Eq. 7/9);
- L_alpha (temperature): alpha * (H(pi) - H_target), SAC style, on the joint entropy.

Variants: `me_qmix`, `me_qplex` (QPLEX's duplex mixer), and the ablations
`me_qmix_entropy` ("+Entropy": logits q_i / alpha, no transform) and `me_qmix_mlp`
(an unconstrained MLP instead of the transform, so the order is not preserved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.batch import AFTER, NOW, on_filled_steps, taken_values
from algorithms.common.exploration import masked_argmax, masked_log_softmax, sample_categorical
from algorithms.common.networks import StateContext
from algorithms.common.targets import td_lambda_targets
from algorithms.common.torch_utils import StepTensors
from algorithms.common.variants import ablation
from algorithms.qplex import QPLEX, QPLEXConfig
from algorithms.value_decomposition import QMIX, QMIXConfig, ValueDecomposition
from harness.api import tunable
from harness.registry import register_algorithm

Transform = Literal["opt", "affine", "mlp", "none"]


@dataclass
class MEIGMConfig(QMIXConfig):
    """ME-QMIX's table (Appendix): Adam lr 1e-3, batch 128, TD(lambda) 0.4, target every 200
    episodes, mixing embedding 32, hypernetwork embedding 64, temperature learning rate 0.3,
    target entropy 0.24 nats per agent (Protoss/Zerg; 0.32 for Terran). No epsilon-greedy."""

    lr: float = tunable(1e-3, 1e-4, 3e-3, log=True)
    """Adam's learning rate of the agent and mixer (the paper's table: 1e-3)."""
    optimiser: Literal["rmsprop", "adam"] = "adam"
    """Adam, as the paper's table."""
    batch_size: int = 128
    """Episodes per gradient step (the paper's table: 128)."""
    td_lambda: float = 0.4
    """TD(lambda)'s lambda of the soft targets (the paper's table: 0.4)."""
    transform: Transform = "opt"
    """The utilities-to-logits transform F: "opt", F(q) = sum_k c_k ELU(a_k q + b_k) + d (a, c >= 0;
    the paper's two-layer OPT); "affine", F(q) = a q + d (the single-layer OPT of the SMAC-v2
    runs); "mlp" and "none": ablations."""
    transform_hidden: int = 16
    """H, the hidden units of the two-layer OPT [C: authors' code]."""
    transform_embed: int = 64
    """The transform's hypernetwork embedding [P: Appendix C]."""
    transform_lr: float = 1e-3
    """Adam's learning rate of the transform (L_F)."""
    alpha_lr: float = tunable(0.3, 1e-3, 1.0, log=True)
    """Learning rate of the temperature alpha (L_alpha; the paper's table: 0.3)."""
    alpha_init: float = 1.0
    """Initial temperature: SAC's usual log(alpha) = 0 start [R]."""
    learn_alpha: bool = True
    """False keeps alpha at alpha_init throughout (no L_alpha), as the authors' released code does
    with alpha 0.03; the paper tunes it towards the target entropy."""
    target_entropy_per_agent: float = tunable(0.24, 0.01, 1.0, log=True)
    """The target entropy in nats per present agent that L_alpha steers towards (0.24 on Protoss and
    Zerg, 0.32 on Terran in the paper)."""
    td_weighting: Literal["none", "gap"] = "none"
    """"gap": down-weight some TD errors as the authors' code does (see `loss`); the paper does not."""


class OrderPreservingTransform(nn.Module):
    """F_i(q; S) [..., A, U]: per agent, one monotone scalar function applied to every action
    entry, its weights generated from the state (so it adapts to the team, training only).

    Each hidden unit k applies the same scalar weight a_k >= 0 and bias b_k to all entries,
    ELU is strictly increasing, and the output layer weights c_k >= 0: the order of the
    entries is kept (strictly, once some a_k c_k > 0). A per-action bias would break it.
    """

    def __init__(self, state_features: int, hidden: int, embed: int, heads: int, layers: int = 2) -> None:
        super().__init__()
        self.context = StateContext(state_features, embed, heads)
        self.layers = layers
        self.scale_in = nn.Linear(embed, hidden if layers == 2 else 1)
        self.bias_in = nn.Linear(embed, hidden if layers == 2 else 1)
        self.scale_out = nn.Linear(embed, hidden)

    def forward(self, q: torch.Tensor, state: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
        agents, _ = self.context(state, state_mask, q.shape[-2])  # [..., A, D]
        scale, bias = self.scale_in(agents).abs().unsqueeze(-2), self.bias_in(agents).unsqueeze(-2)
        if self.layers == 1:
            return (scale * q.unsqueeze(-1) + bias).squeeze(-1)
        hidden = F.elu(scale * q.unsqueeze(-1) + bias)  # [..., A, U, H]
        return (hidden * self.scale_out(agents).abs().unsqueeze(-2)).sum(-1)


class UnorderedTransform(nn.Module):
    """The `mlp` ablation: a 3-layer MLP with signed weights maps [q_i, context_i] to logits,
    so nothing ties the policy's mode to argmax q_i."""

    def __init__(self, state_features: int, n_actions: int, hidden: int, embed: int, heads: int) -> None:
        super().__init__()
        self.context = StateContext(state_features, embed, heads)
        self.mlp = nn.Sequential(
            nn.Linear(n_actions + embed, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, q: torch.Tensor, state: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
        agents, _ = self.context(state, state_mask, q.shape[-2])
        return self.mlp(torch.cat([q, agents], dim=-1))


class Identity(nn.Module):
    """The `+Entropy` ablation: logits are the utilities themselves."""

    def forward(self, q: torch.Tensor, state: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
        return q


class Temperature(nn.Module):
    """alpha, learned as log(alpha) so it stays positive."""

    def __init__(self, initial: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(initial))))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


def temperature_loss(alpha: torch.Tensor, entropy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_alpha = alpha (H - H_target), averaged: d/d alpha = H - H_target, so a descent step
    raises alpha when the policy is less random than the target, and lowers it otherwise."""
    return (alpha * (entropy - target).detach()).mean()


def soft_td_lambda_targets(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    filled: torch.Tensor,
    bootstrap: torch.Tensor,
    alpha_log_pi: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """G_t = r_t + gamma (1 - d_t) [(1 - lam) B_{t+1} + lam G_{t+1} - alpha log pi(u'_{t+1})]:
    the entropy bonus comes off the bootstrap and the lambda-return alike (ME-IGM Appendix A),
    so it can be folded into the reward of step t. All inputs [B, T]; alpha_log_pi[:, t] is
    alpha * sum_i log pi_i of the action drawn at the state after step t."""
    soft_reward = reward - gamma * torch.where(terminated, 0.0, alpha_log_pi)
    return td_lambda_targets(soft_reward, terminated, filled, bootstrap, gamma, lam)


class MaxEntropyIGM(ValueDecomposition):
    """Mixin over a value-decomposition learner (QMIX, QPLEX): replaces epsilon-greedy by the
    transformed softmax policy and adds the soft target, L_F and L_alpha. Listed before the
    learner (`class MEQMIX(MaxEntropyIGM, QMIX)`), so its methods come first and its `super()`
    calls reach the learner's; deriving from the shared base declares what it builds on."""

    cfg: MEIGMConfig

    def _build_extra(self) -> None:
        cfg, spec = self.cfg, self.spec
        if cfg.transform in ("opt", "affine"):
            layers = 2 if cfg.transform == "opt" else 1
            self.transform = OrderPreservingTransform(
                spec.state_features, cfg.transform_hidden, cfg.transform_embed, cfg.hypernet_heads, layers
            )
        elif cfg.transform == "mlp":
            self.transform = UnorderedTransform(
                spec.state_features,
                spec.n_actions,
                cfg.transform_embed,
                cfg.transform_embed,
                cfg.hypernet_heads,
            )
        else:
            self.transform = Identity()
        self.temperature = Temperature(cfg.alpha_init)
        self.temperature.log_alpha.requires_grad_(cfg.learn_alpha)
        self.transform.to(self.device)
        self.temperature.to(self.device)
        # Separate optimisers: L_F and L_alpha have their own learning rates.
        self.side_optimisers = {
            "alpha_optimiser": torch.optim.Adam(self.temperature.parameters(), lr=cfg.alpha_lr)
        }
        if any(True for _ in self.transform.parameters()):
            self.side_optimisers["transform_optimiser"] = torch.optim.Adam(
                self.transform.parameters(), lr=cfg.transform_lr
            )

    # ---------------------------------------------------------------- acting

    def _log_policy(self, q: torch.Tensor, state, state_mask, avail) -> torch.Tensor:
        """log pi_i over the available actions, from detached utilities q [..., A, U]."""
        logits = self.transform(q, state, state_mask) / self.temperature().detach()
        return masked_log_softmax(logits, avail)

    def _select(self, q: torch.Tensor, x: StepTensors, explore: bool) -> torch.Tensor:
        if explore:  # rollouts sample the transformed softmax (state used: training only)
            log_pi = self._log_policy(q, x.state, x.state_mask, x.avail_actions)
            return sample_categorical(log_pi, x.avail_actions, self.generator)
        # The transform keeps the order, so the policy's mode is argmax q: no state needed.
        return masked_argmax(q, x.avail_actions)

    # ---------------------------------------------------------------- learning

    @torch.no_grad()
    def _targets(self, batch: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
        """Soft TD(lambda) with next actions drawn from the current policies."""
        state, state_mask = batch["state"][:, AFTER], batch["state_mask"][:, AFTER]
        avail, present = batch["avail_actions"][:, AFTER], batch["agent_mask"][:, AFTER]
        log_pi = on_filled_steps(batch, self._log_policy, q[:, AFTER].detach(), state, state_mask, avail)
        u_next = sample_categorical(log_pi, avail, self.generator)
        q_target = self.target_agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])[:, AFTER]
        bootstrap = self._joint_value(self.target_mixer, q_target, u_next, batch, AFTER)
        log_joint = torch.where(present, taken_values(log_pi, u_next), 0.0).sum(-1)
        return soft_td_lambda_targets(
            batch["reward"],
            batch["terminated"],
            batch["filled"],
            bootstrap,
            self.temperature() * log_joint,
            self.cfg.gamma,
            self.cfg.td_lambda,
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """L_Q + L_F + L_alpha. Their parameters are disjoint (L_F sees detached utilities and
        Q_tot, L_alpha a detached entropy), so one backward pass trains each on its own loss."""
        q = self.agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])
        y = self._targets(batch, q)
        chosen = self._joint_value(self.mixer, q[:, NOW], batch["actions"], batch, NOW)
        loss_f, loss_alpha, gap, extra = self._policy_losses(batch, q[:, NOW].detach(), chosen.detach())
        weight = None
        if self.cfg.td_weighting == "gap":
            # [C: authors' development code, not in the paper] halve the TD weight of samples
            # where the target and the transform's sum lie on opposite sides of Q_tot.
            weight = torch.where((gap > 0) == (chosen.detach() < y), 0.5, 1.0)
        loss_q, stats = self._td_loss(chosen, y, batch, weight)
        return loss_q + loss_f + loss_alpha, {**stats, **extra}

    def _policy_losses(
        self, batch: dict[str, torch.Tensor], q: torch.Tensor, q_tot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """L_F, L_alpha, the gap Q_tot - sum_i F_i at the replayed actions [B, T], and stats."""
        filled, present = batch["filled"], batch["agent_mask"][:, NOW]
        state, state_mask = batch["state"][:, NOW], batch["state_mask"][:, NOW]
        count = filled.sum().clamp(min=1)
        # L_F: summed transformed logits of the replayed joint action regress onto Q_tot.
        logits = on_filled_steps(batch, self.transform, q, state, state_mask)
        summed = torch.where(present, taken_values(logits, batch["actions"]), 0.0).sum(-1)
        gap = torch.where(filled, q_tot - summed, 0.0)
        loss_f = gap.pow(2).sum() / count
        # L_alpha on the joint entropy (a sum over present agents) against n_agents * H_target.
        avail = batch["avail_actions"][:, NOW]
        log_pi = masked_log_softmax(logits.detach() / self.temperature().detach(), avail)
        entropy = torch.where(present, -(log_pi.exp() * log_pi).sum(-1), 0.0).sum(-1)
        target = self.cfg.target_entropy_per_agent * present.sum(-1)
        alpha = self.temperature()
        loss_alpha = temperature_loss(alpha, entropy[filled], target[filled]) if self.cfg.learn_alpha else q.new_zeros(())
        stats = {
            "transform_loss": float(loss_f.detach()),
            "alpha": float(alpha.detach()),
            "entropy": float(entropy[filled].mean()) if filled.any() else 0.0,
        }
        return loss_f, loss_alpha, gap.detach(), stats

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        optimisers = (self.optimiser, *self.side_optimisers.values())
        loss, stats = self.loss(batch)
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_norm_clip)
        if "transform_optimiser" in self.side_optimisers:
            torch.nn.utils.clip_grad_norm_(self.transform.parameters(), self.cfg.grad_norm_clip)
        for optimiser in optimisers:
            optimiser.step()
        self.grad_steps += 1
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **stats}

    # ---------------------------------------------------------------- checkpoints

    def _modules(self) -> dict[str, nn.Module]:
        return {**super()._modules(), "transform": self.transform, "temperature": self.temperature}

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super()._optimisers(), **self.side_optimisers}


@register_algorithm("me_qmix")
class MEQMIX(MaxEntropyIGM, QMIX):
    """ME-IGM on QMIX's monotonic mixer with the two-layer order-preserving transform."""

    Config = MEIGMConfig


MEQMIXEntropy = ablation(MEQMIX, "me_qmix_entropy", "MEQMIXEntropy",
                         '"+Entropy" ablation: softmax(q_i / alpha) policies, no transform (Table 3).',
                         transform="none")
MEQMIXMLP = ablation(MEQMIX, "me_qmix_mlp", "MEQMIXMLP",
                     '"MLP instead of OPT" ablation: an order-breaking map from utilities to logits (Table 4).',
                     transform="mlp")


@dataclass
class MEQPLEXConfig(MEIGMConfig, QPLEXConfig):
    """ME-QPLEX's table: as ME-QMIX, with QPLEX's duplex mixer and TD(lambda) 0.6."""

    td_lambda: float = 0.6


@register_algorithm("me_qplex")
class MEQPLEX(MaxEntropyIGM, QPLEX):
    """ME-IGM on QPLEX's duplex dueling mixer (any IGM mixer fits the method)."""

    Config = MEQPLEXConfig
