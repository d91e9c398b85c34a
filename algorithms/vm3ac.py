"""VM3-AC (seed 002): variational maximum mutual information multi-agent actor-critic, and
the baselines built from the same code path: MA-AC, VM3-AC without latent, MA-SAC, I-SAC.

Every agent i has its own networks (a fixed team; separate parameters, evaluated for all
agents at once by `AgentwiseMLP`):

- policy pi_i(a | o_i, z): a tanh-squashed, reparameterised Gaussian on the flattened
  observation and a latent z ~ N(0, I) drawn once per env step and shared by the whole
  team, which is what makes the agents' actions correlated (mutual information > 0);
- variational predictor q_i(a_j | a_i, o_i, o_j, onehot(j)) = N(mu_i(...), sigma^2 I) with a
  fixed sigma, one network per i shared over the partners j;
- centralised critics: V_i(x) with a Polyak target, twin Q_i(x, a) (x = all observations
  or the state; the agent's own observation and action get a slot of their own).

Losses (algorithms.md §3.3, paper Appendix B), per agent i, with N the number of agents
present, beta = alpha N, and log q^(ij) = log q(a_i | a_j) + log q(a_j | a_i):

    V~_i   = E_{z, a~pi}[min_k Q_ik(x, a) - beta log pi_i(a_i|o_i,z) + beta/N sum_j log q^(ij)]
    L_V    = 1/2 (V_i(x) - sg[V~_i])^2
    L_Q    = 1/2 (Q_ik(x, a) - sg[r + gamma (1 - d) Vbar_i(x')])^2,  k = 1, 2
    L_pi,q = -Q_i1(x, a~) + beta log pi_i(a~_i|o_i,z) - beta/N sum_j log q_i(sg[a~_j] | a~_i, o_i, o_j)

where a~ are reparameterised samples sharing one fresh z per transition (L = 1). Only the
factor q(a_j | a_i) that predicts the partner from one's own action carries gradient (into
the predictor xi_i and, through a_i, into pi_i); the partner's action a_j is detached, and
Q_i1 sees the other agents' actions detached too, so agent i's loss trains only agent i.

Design choices the paper leaves open [R]:
- sigma^2 = 1/2, so -log q = ||a_j - mu||^2 + const: the "mean-squared error" the paper
  says the loss reduces to (Appendix B); the constant is kept in the value targets.
- The factor q(a_i | a_j) in V~_i is read as agent j's predictor of a_i (q_j), which is
  the network trained to predict a_i from a_j ("agent j predicts agent i's action", §4.3).
- log std clamped to [-20, 2] (SAC's usual bounds); explore=False acts with z = 0 and the
  Gaussian mean, squashed: tanh(mean).
- Agents absent at the next step do not bootstrap (V bar is 0 there); absent agents'
  actions are 0 and enter no loss.

Variants: `vm3ac`; `ma_ac` (beta = 0, no latent, no variational term); `vm3ac_no_latent`
(dim z = 0); `ma_sac` (entropy only: centralised critic, no latent, no variational term,
beta is the entropy weight); `i_sac` (as MA-SAC with critics on (o_i, a_i) only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.agentwise import AgentwiseMLP, own_action_swapped
from algorithms.common.off_policy import AgentInputs, OffPolicyActorCritic, OffPolicyConfig, per_agent_mean
from algorithms.common.targets import soft_update
from algorithms.common.variants import ablation
from harness.api import Step, tunable
from harness.registry import register_algorithm

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------ densities


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of a = tanh(u), u ~ N(mean, exp(log_std)^2 I), summed over the last axis.

    Change of variables: log pi(a) = log N(u) - sum_d log(1 - tanh(u_d)^2), where
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) stays finite where tanh saturates."""
    z = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)
    log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
    return gaussian - log_det


def fixed_sigma_log_density(target: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(target; mean, sigma^2 I) summed over the last axis:
    -||target - mean||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2)."""
    d = target.shape[-1]
    return -(target - mean).pow(2).sum(-1) / (2 * sigma**2) - 0.5 * d * (LOG_2PI + 2 * math.log(sigma))


# ------------------------------------------------------------------------------ networks


class SquashedGaussianPolicy(nn.Module):
    """pi_i(a | o_i, z) for every agent i: mean and log std from a per-agent MLP, a = tanh(u)."""

    def __init__(self, n_agents: int, obs_dim: int, latent_dim: int, action_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = AgentwiseMLP(n_agents, obs_dim + latent_dim, 2 * action_dim, hidden, layers)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, A, O], z [B, dim z] (shared by the team) -> mean, log std [B, A, D]."""
        if self.latent_dim:
            obs = torch.cat([obs, z.unsqueeze(-2).expand(*obs.shape[:-1], self.latent_dim)], dim=-1)
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, z: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised a = tanh(mean + std * noise) [B, A, D] and log pi(a) [B, A]."""
        mean, log_std = self(obs, z)
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    def greedy(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs, z)[0])


class PartnerPredictor(nn.Module):
    """The means of q_i(a_j | a_i, o_i, o_j) for all pairs: network i (its own parameters)
    is shared over partners j, which it tells apart by onehot(j)."""

    def __init__(self, n_agents: int, obs_dim: int, action_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.net = AgentwiseMLP(n_agents, action_dim + 2 * obs_dim + n_agents, action_dim, hidden, layers)

    def forward(self, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """actions [B, A, D] (agent i's own, conditioning q_i), obs [B, A, O] -> mu [B, i, j, D]."""
        b, a = actions.shape[:2]
        # Layout [B, j, i, ...]: the predictor's agent axis i second to last, as AgentwiseMLP wants.
        own_action = actions.unsqueeze(1).expand(b, a, a, actions.shape[-1])
        own_obs = obs.unsqueeze(1).expand(b, a, a, obs.shape[-1])
        partner_obs = obs.unsqueeze(2).expand(b, a, a, obs.shape[-1])
        partner_id = torch.eye(a, device=obs.device, dtype=obs.dtype).unsqueeze(1).expand(b, a, a, a)
        mu = self.net(torch.cat([own_action, own_obs, partner_obs, partner_id], dim=-1))
        return mu.transpose(1, 2)


# ------------------------------------------------------------------------------ learner


@dataclass
class VM3ACConfig(OffPolicyConfig):
    """VM3-AC's Tables 2-3 (Appendix E): Adam 3e-4, batch 128, buffer 5e5, gamma 0.99,
    Polyak 0.005, 2x128 ReLU, tanh output; beta 0.1 and dim z 8 (cooperative navigation
    N = 3; multiwalker N = 3 used 0.05). The range of beta is linear so that 0 (MA-AC) stays
    reachable; the paper swept {0, 0.05, 0.1, 0.15}."""

    beta: float = tunable(0.1, 0.0, 0.3)
    """Weight of the entropy and variational mutual-information bonus (linear range, so that 0, MA-
    AC, stays reachable)."""
    latent_dim: int = 8
    """Dimension of the latent z shared by the agents' policies (0: no latent)."""
    mutual_information: bool = True
    """Add the variational term (off: MA-AC, MA-SAC, I-SAC)."""
    variational_sigma: float = math.sqrt(0.5)
    """Standard deviation of the Gaussian variational distribution q(a_j | ...), so that -log q =
    ||a_j - mu||^2 / (2 sigma^2) + const; sqrt(0.5) makes it ||a_j - mu||^2 [R]."""
    critic: Literal["centralised", "independent"] = "centralised"
    """"centralised": each agent's critics see every agent's input and action; "independent": only
    its own (I-SAC)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0 or self.latent_dim < 0 or self.variational_sigma <= 0:
            raise ValueError(f"{type(self).__name__}: beta and latent_dim must be >= 0 and variational_sigma > 0, "
                             f"got beta={self.beta}, latent_dim={self.latent_dim}, "
                             f"variational_sigma={self.variational_sigma}")
        if self.critic not in ("centralised", "independent"):
            raise ValueError(f"{type(self).__name__}: critic must be 'centralised' or 'independent', got {self.critic!r}")


@register_algorithm("vm3ac")
class VM3AC(OffPolicyActorCritic):
    """VM3-AC: shared latent, entropy plus variational mutual-information bonus."""

    Config = VM3ACConfig
    cfg: VM3ACConfig

    def _build(self) -> None:
        cfg, n, d = self.cfg, self.n_agents, self.action_dim
        central = cfg.critic == "centralised"
        critic_in = self.centralised_critic_features() if central else self.independent_critic_features()
        value_in = self.obs_dim + (self.context_dim if central else 0)
        self.policy = SquashedGaussianPolicy(n, self.obs_dim, cfg.latent_dim, d, cfg.hidden, cfg.hidden_layers)
        # Twin critics as one per-agent network over 2A "agents": rows [0, A) are Q_i1, [A, 2A) Q_i2.
        self.critic = AgentwiseMLP(2 * n, critic_in, 1, cfg.hidden, cfg.hidden_layers)
        self.value = AgentwiseMLP(n, value_in, 1, cfg.hidden, cfg.hidden_layers)
        # Built last, so that the other networks start from the same weights with or without it.
        self.variational = (
            PartnerPredictor(n, self.obs_dim, d, cfg.hidden, cfg.hidden_layers) if cfg.mutual_information else None
        )
        for module in self._modules().values():
            module.to(self.device)
        self.target_value = copy.deepcopy(self.value).requires_grad_(False)
        actor_params = [*self.policy.parameters(), *(self.variational.parameters() if self.variational else [])]
        self.actor_optimiser = torch.optim.Adam(actor_params, lr=cfg.lr)
        self.critic_optimiser = torch.optim.Adam([*self.critic.parameters(), *self.value.parameters()], lr=cfg.lr)

    def _modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"policy": self.policy, "critic": self.critic, "value": self.value}
        if getattr(self, "target_value", None) is not None:
            modules["target_value"] = self.target_value
        if self.variational is not None:
            modules["variational"] = self.variational
        return modules

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optimiser": self.actor_optimiser, "critic_optimiser": self.critic_optimiser}

    # ---------------------------------------------------------------- acting

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        with torch.inference_mode():
            x = self.step_inputs(step)
            b, a = x.present.shape
            if explore:  # one latent per env step, shared by the team; fresh noise per agent
                z = self.random_normal(b, self.cfg.latent_dim)
                actions, _ = self.policy.sample(x.obs, z, self.random_normal(b, a, self.action_dim))
            else:  # decentralised execution: z = 0 and the Gaussian mean
                actions = self.policy.greedy(x.obs, torch.zeros(b, self.cfg.latent_dim, device=self.device))
        return self.to_actions(actions, x, step), memory

    # ---------------------------------------------------------------- learning

    def twin_q(self, critic_input: torch.Tensor) -> torch.Tensor:
        """[B, A, in] -> [B, 2, A]: Q_i1 and Q_i2 of every agent."""
        b, a = critic_input.shape[:2]
        return self.critic(torch.cat([critic_input, critic_input], dim=1)).view(b, 2, a)

    def value_input(self, x: AgentInputs) -> torch.Tensor:
        if self.cfg.critic == "independent":
            return x.obs
        return torch.cat([x.obs, x.context.unsqueeze(1).expand(*x.obs.shape[:2], x.context.shape[-1])], dim=-1)

    def q_input(self, x: AgentInputs, actions: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        return self.critic_input(x, actions, None if self.cfg.critic == "independent" else joint)

    def partner_log_likelihood(self, x: AgentInputs, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log q_i(sg[a_j] | a_i, o_i, o_j) [B, i, j] (gradient into xi_i and a_i only) and the
        mask of real pairs (i != j, both present)."""
        assert self.variational is not None
        mu = self.variational(actions, x.obs)  # [B, i, j, D]
        log_q = fixed_sigma_log_density(actions.detach().unsqueeze(1), mu, self.cfg.variational_sigma)
        a = actions.shape[1]
        distinct = ~torch.eye(a, dtype=torch.bool, device=actions.device)
        pairs = x.present.unsqueeze(2) & x.present.unsqueeze(1) & distinct
        return torch.where(pairs, log_q, 0.0), pairs

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss term of one batch: the actor's parts per agent [A] (their sum is
        L_pi,q), and the critic losses L_V, L_Q (scalars, summed over agents and twins)."""
        cfg, beta = self.cfg, self.cfg.beta
        now, after = self.batch_inputs(batch), self.batch_inputs(batch, "next_")
        present = now.present
        b, a = present.shape
        n_present = present.sum(-1, keepdim=True).clamp(min=1)

        # Fresh reparameterised actions, one shared latent per transition.
        z = self.random_normal(b, cfg.latent_dim)
        sampled, log_pi = self.policy.sample(now.obs, z, self.random_normal(b, a, self.action_dim))
        sampled = torch.where(present.unsqueeze(-1), sampled, 0.0)
        q_sampled = self.twin_q(self.q_input(now, sampled, own_action_swapped(sampled, sampled.detach())))

        # Variational term: agent i's own factor (gradient), and both factors (values only).
        mi_own = mi_both = torch.zeros_like(log_pi)
        if self.variational is not None:
            log_q, _ = self.partner_log_likelihood(now, sampled)
            mi_own = log_q.sum(-1) / n_present
            mi_both = (log_q + log_q.transpose(1, 2)).detach().sum(-1) / n_present

        with torch.no_grad():
            soft_value = q_sampled.min(dim=1).values - beta * log_pi + beta * mi_both
            v_next = self.target_value(self.value_input(after)).squeeze(-1)
            go_on = ~batch["terminated"].unsqueeze(-1) & after.present
            y = batch["reward"].unsqueeze(-1) + cfg.gamma * torch.where(go_on, v_next, 0.0)

        v = self.value(self.value_input(now)).squeeze(-1)
        q_taken = self.twin_q(self.q_input(now, batch["actions"], batch["actions"]))
        return {
            "actor_value": per_agent_mean(-q_sampled[:, 0], present),
            "actor_entropy": per_agent_mean(beta * log_pi, present),
            "actor_mi": per_agent_mean(-beta * mi_own, present),
            "value": per_agent_mean(0.5 * (v - soft_value).pow(2), present).sum(),
            "q": per_agent_mean(0.5 * (q_taken - y.unsqueeze(1)).pow(2), present).sum(),
            # for the metrics
            "log_pi": per_agent_mean(log_pi.detach(), present).mean(),
            "log_q": per_agent_mean(mi_own.detach(), present).mean(),
            "q_mean": per_agent_mean(q_taken.detach()[:, 0], present).mean(),
        }

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        parts = self.losses(batch)
        actor_loss = (parts["actor_value"] + parts["actor_entropy"] + parts["actor_mi"]).sum()
        critic_loss = parts["value"] + parts["q"]
        # The actor loss also reaches the critic's weights through Q(x, a~): those gradients
        # are cleared before the critic's own backward pass.
        self.actor_optimiser.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.critic_optimiser.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimiser.step()
        self.actor_optimiser.step()
        soft_update(self.target_value, self.value, self.cfg.tau)
        return {
            "actor_loss": float(actor_loss.detach()),
            "value_loss": float(parts["value"].detach()),
            "q_loss": float(parts["q"].detach()),
            "entropy": -float(parts["log_pi"]),
            "log_q": float(parts["log_q"]),
            "q_mean": float(parts["q_mean"]),
        }


# MA-AC (paper §6): with beta = 0 the variational term is zero anyway, so its network is skipped.
MAAC = ablation(VM3AC, "ma_ac", "MAAC", "Multi-agent actor-critic: VM3-AC's centralised critics, no entropy "
                "(beta = 0), no latent.", beta=0.0, latent_dim=0, mutual_information=False)


VM3ACNoLatent = ablation(VM3AC, "vm3ac_no_latent", "VM3ACNoLatent",
                         "VM3-AC without the latent variable (dim z = 0, Fig. 5): the actions are independent given "
                         "the observations, so the variational term cannot raise their mutual information.",
                         latent_dim=0)


MASAC = ablation(VM3AC, "ma_sac", "MASAC", "Multi-agent soft actor-critic: per-agent SAC (V, twin Q, Polyak "
                 "target V) with centralised critics; beta weighs the entropy alone (the paper's Table 3 note), no "
                 "latent, no variational term.", latent_dim=0, mutual_information=False)
ISAC = ablation(MASAC, "i_sac", "ISAC", "Independent SAC: every agent's critics see only its own observation and "
                "action.", critic="independent")
