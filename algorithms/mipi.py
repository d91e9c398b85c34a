"""MIPI (seed 000): mutual-information regularized multi-agent policy iteration.

Each agent acts from a policy pi_i(u | tau_i) and pays, on top of the team reward, the
penalty alpha * log(pi_i(u | tau_i) / marginal_i(u | tau_i^+)), whose expectation is the
conditional MI between its action and the team-related part of its input (everything
but its own entity row) given the team-unrelated part (its own row). Agents that lean
less on who their teammates are carry over better to teams never seen in training.
algorithms.md §3.1; [R] marks choices the paper leaves open.

Networks, on REFIL's entity-attention machinery (`algorithms/refil.py`):
- one recurrent trunk shared by all agents, with three linear heads: the utility Q_i (the
  REFIL agent's head), the policy pi_i and the marginal pi_bar_i [P: the policy shares every
  layer with the utility network but its last]. The marginal reads the trunk run on the
  agent's own row alone (every other row masked), so it sees s_i^+ only [R: no architecture
  is given];
- REFIL's attention-hypernetwork mixer without its nonlinearity,
  Q_jt = sum_i w_i(S) Q_i + b(S) with w_i >= 0 [P];
- target copies of trunk, heads and mixer, hard-updated every 200 episodes [P].

One training step (`_train_step`):
1. Critic (trunk, utility head, mixer): REFIL's loss (1 - lam) L_Q + lam L_Q^imag [P; lam =
   REFIL's 0.5 R] with one MI-augmented target
       y = r + gamma (1 - d) [Qbar_jt(tau', u') - alpha sum_i log(pi_i(u_i') / pi_bar_i(u_i'))],
   u_i' drawn from the current policies [P].
2. M Blahut-Arimoto alternations [P: M = 4 on SMAC, 1 in the matrix game], each one gradient
   step [R] of
   - the marginal head: maximum likelihood of the policy's action distribution under an
     imaginary team: the REFIL partition of the batch, keeping only the agent's own group
     (the `within` view, which the critic's imagined pass computes anyway) [R], written as
     the exact cross-entropy over actions;
   - the policy head: KL to the Blahut-Arimoto target marginal * exp(Q / alpha), i.e.
     sum_u pi(u) [alpha log pi(u) - alpha log sg[pi_bar(u)] - sg[Q(u)]]. It trains the head
     only, on the detached trunk [R, algorithms.md's default].

Acting samples from pi_i in training [R] and takes its argmax at test; only the trunk and
the policy head run at execution (no state, no partitions).

Variants [P]: `mipi_value` (alpha = 0: the environment reward alone) and `mipi_entropy` (the
penalty is log pi, i.e. a uniform marginal: entropy regularisation with the same alpha).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from algorithms.common.batch import AFTER, NOW, loss_mask, taken_values
from algorithms.common.exploration import (
    masked_log_softmax,
    policy_actions,
    sample_categorical,
)
from algorithms.common.networks import RecurrentAgent
from algorithms.common.targets import td_lambda_targets
from algorithms.common.torch_utils import StepTensors, masked_average
from algorithms.common.variants import ablation
from algorithms.refil import REFIL, Partition, REFILConfig, RefilMixer, group_masks
from harness.api import EnvSpec, tunable
from harness.registry import register_algorithm

Regulariser = Literal["mi", "entropy", "none"]


def blahut_arimoto_step(
    policy: torch.Tensor, q: torch.Tensor, context_weights: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One exact Blahut-Arimoto alternation on a tabular problem (for tests and intuition).

    policy, q [C, U]: pi(u | s+, s-_c) and Q(s+, s-_c, u) in each of C contexts sharing s+;
    context_weights [C]: rho~(s-_c | s+), summing to 1. Returns the marginal
    pi_bar = sum_c rho~_c pi_c and the next policy pi_c proportional to pi_bar exp(Q_c / alpha).
    """
    marginal = (context_weights.unsqueeze(-1) * policy).sum(0)
    logits = marginal.log().unsqueeze(0) + q / alpha
    return marginal, logits.softmax(-1)


def regularised_value(
    policy: torch.Tensor, q: torch.Tensor, context_weights: torch.Tensor, alpha: float
) -> torch.Tensor:
    """sum_c rho~_c sum_u pi_c(u) [Q_c(u) - alpha log(pi_c(u) / pi_bar(u))]: what each
    Blahut-Arimoto alternation cannot decrease."""
    marginal = (context_weights.unsqueeze(-1) * policy).sum(0)
    # Actions whose probability has underflowed to 0 contribute 0, not 0 * -inf.
    tiny = torch.finfo(marginal.dtype).tiny
    log_ratio = torch.special.xlogy(policy, policy) - torch.special.xlogy(policy, marginal.clamp_min(tiny))
    per_context = (policy * q - alpha * log_ratio).sum(-1)
    return (context_weights * per_context).sum()


@dataclass
class MIPIConfig(REFILConfig):
    """MIPI on SMAC (Appendix B.2): REFIL's critic and settings (RMSprop, batch 32, buffer
    5000, targets every 200 episodes, imagined weight 0.5, attention 128 x 4 heads, GRU 64),
    learning rate 5e-4, alpha 0.03 (sz, csz; 0.1 on MMM; 0.5 in the matrix game), M = 4
    Blahut-Arimoto alternations. No epsilon-greedy: the policy's own samples explore [R];
    `epsilon_start` > 0 mixes in uniform actions on the usual schedule."""

    alpha: float = tunable(0.03, 1e-3, 1.0, log=True)
    """Weight of the regulariser: alpha log(pi / pi_bar) with the mutual-information regulariser
    (0.03 on sz and csz, 0.1 on MMM, 0.5 in the matrix game)."""
    ba_iterations: int = 4
    """M, the Blahut-Arimoto alternations between the policy and the marginal pi_bar per update."""
    regulariser: Regulariser = "mi"
    """"mi": MIPI's alpha log(pi / pi_bar); "entropy": alpha log pi (a uniform marginal; the Entropy
    ablation); "none": the environment reward alone (the Value ablation)."""
    epsilon_start: float = 0.0
    """Uniform actions mixed into the policy's at the start (0: the policy's own samples explore
    [R])."""
    epsilon_finish: float = 0.0
    """Uniform actions mixed in once annealed."""


class MIPIAgent(RecurrentAgent):
    """The REFIL agent (its `head` gives the utilities) plus policy and marginal heads."""

    def __init__(
        self, obs_features: int, n_actions: int, embed: int, heads: int, hidden: int, self_residual: bool,
        flat_entities: int | None,
    ) -> None:
        super().__init__(obs_features, n_actions, embed, heads, hidden, self_residual, flat_entities)
        self.policy = nn.Linear(hidden, n_actions)
        self.marginal = nn.Linear(hidden, n_actions)

    def critic_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(("policy.", "marginal."))]


class PolicyActor(nn.Module):
    """A MIPI agent's trunk and policy head as one acting network: one step gives the policy
    logits and the new recurrent state (the utility head's output is not needed to act)."""

    def __init__(self, agent: MIPIAgent) -> None:
        super().__init__()
        self.agent = agent

    def initial_state(self, batch: int, agents: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.agent.initial_state(batch, agents, device)

    def forward(self, obs, obs_mask, agent_mask, h) -> tuple[torch.Tensor, torch.Tensor]:
        _, h = self.agent(obs, obs_mask, agent_mask, h)
        return self.agent.policy(h), h


class Views(NamedTuple):
    """Recurrent states [B, T+1, A, H] of one batch seen four ways: the real observation, the
    agent's imagined own group (`within`) and other group (`cross`), and its own row alone."""

    full: torch.Tensor
    within: torch.Tensor
    cross: torch.Tensor
    alone: torch.Tensor


def own_row_only(obs_mask: torch.Tensor) -> torch.Tensor:
    """The observation mask with every row but the agent's own (row 0) hidden: s_i^+."""
    alone = torch.zeros_like(obs_mask)
    alone[..., 0] = obs_mask[..., 0]
    return alone


@register_algorithm("mipi")
class MIPI(REFIL):
    """MIPI; the penalty is chosen by `regulariser` (mi, entropy, none)."""

    Config = MIPIConfig

    def __init__(self, env_spec: EnvSpec, config: MIPIConfig, seed: int, device: Any) -> None:
        super().__init__(env_spec, config, seed, device)
        assert isinstance(self.agent, MIPIAgent)
        self.params = [*self.agent.critic_parameters(), *self.mixer.parameters()]
        self.optimiser = self._make_optimiser(self.params, config.lr)
        self.policy_optimiser = self._make_optimiser(list(self.agent.policy.parameters()), config.lr)
        self.marginal_optimiser = self._make_optimiser(list(self.agent.marginal.parameters()), config.lr)
        self.policy_actor = PolicyActor(self.agent)  # shares the agent's weights; no state of its own

    @property
    def mipi_cfg(self) -> MIPIConfig:
        assert isinstance(self.cfg, MIPIConfig)
        return self.cfg

    @property
    def alpha(self) -> float:
        return 0.0 if self.mipi_cfg.regulariser == "none" else self.mipi_cfg.alpha

    def _build_agent(self) -> nn.Module:
        cfg, spec = self.cfg, self.spec
        return MIPIAgent(spec.obs_features, spec.n_actions, cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden,
                         cfg.attn_self_residual, self.flat_entities)

    def _build_mixer(self) -> nn.Module:
        cfg = self.mipi_cfg
        return RefilMixer(
            self.spec.state_features,
            cfg.mixing_embed,
            cfg.hypernet_embed,
            cfg.hypernet_heads,
            cfg.softmax_mixing_weights,
            linear=True,
        )

    # ---------------------------------------------------------------- acting

    @property
    def acting_network(self) -> nn.Module:
        """The trunk with the policy head: only the policy acts."""
        return self.policy_actor

    def _select(self, logits: torch.Tensor, x: StepTensors, explore: bool) -> torch.Tensor:
        return policy_actions(logits, x.avail_actions, explore, self.epsilon(self.env_steps), self.generator)

    # ---------------------------------------------------------------- learning

    def views(self, batch: dict[str, torch.Tensor], within: torch.Tensor, cross: torch.Tensor) -> Views:
        """The trunk over the four views of the batch in one pass."""
        obs_mask = batch["obs_mask"]
        masks = [obs_mask, within, cross, own_row_only(obs_mask)]
        return Views(*self.agent.unroll_hidden_views(batch["obs"], masks, batch["agent_mask"]))

    def log_policy(self, h: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        return masked_log_softmax(self.agent.policy(h), avail)

    def log_marginal(self, h_alone: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        """log pi_bar over the available actions; the Entropy variant's marginal is uniform."""
        if self.mipi_cfg.regulariser == "entropy":
            return masked_log_softmax(torch.zeros_like(avail, dtype=h_alone.dtype), avail)
        return masked_log_softmax(self.agent.marginal(h_alone), avail)

    @torch.no_grad()
    def mi_targets(self, batch: dict[str, torch.Tensor], views: Views) -> torch.Tensor:
        """y [B, T]: the TD(lambda) target with the penalty of the next joint action u' ~ pi
        taken off every bootstrap (like a soft target)."""
        avail, present = batch["avail_actions"][:, AFTER], batch["agent_mask"][:, AFTER]
        log_pi = self.log_policy(views.full[:, AFTER], avail)
        u_next = sample_categorical(log_pi, avail, self.generator)
        penalty = taken_values(log_pi - self.log_marginal(views.alone[:, AFTER], avail), u_next)
        penalty = torch.where(present, penalty, 0.0).sum(-1)
        q_target = self.target_agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])[:, AFTER]
        bootstrap = self._joint_value(self.target_mixer, q_target, u_next, batch, AFTER) - self.alpha * penalty
        cfg = self.mipi_cfg
        return td_lambda_targets(
            batch["reward"], batch["terminated"], batch["filled"], bootstrap, cfg.gamma, cfg.td_lambda
        )

    def critic_views(
        self, batch: dict[str, torch.Tensor], partition: Partition | None = None
    ) -> tuple[torch.Tensor, dict[str, float], Views]:
        """REFIL's mixed loss (1 - lam) L_Q + lam L_Q^imag on the MI-augmented target, its
        statistics, and the trunk's views of the batch (one imagined partition per episode)."""
        partition = self.draw_partition(batch) if partition is None else partition
        masks = group_masks(partition, batch["obs_mask"], batch["state_mask"], batch["agent_mask"].shape[-1])
        views = self.views(batch, masks.obs_within, masks.obs_cross)
        y = self.mi_targets(batch, views)
        agents_now = batch["agent_mask"][:, NOW]
        q, q_in, q_out = (self.agent.output(h[:, NOW], agents_now) for h in (views.full, views.within, views.cross))
        lam = self.mipi_cfg.imagined_weight
        if lam == 0.0:
            td_loss, stats = self._td_loss(self._joint_value(self.mixer, q, batch["actions"], batch, NOW), y, batch)
            return td_loss, stats, views
        td_loss, aux_loss, stats = self.imagined_td_losses(q, q_in, q_out, y, batch, masks)
        return (1 - lam) * td_loss + lam * aux_loss, stats, views

    def loss(
        self, batch: dict[str, torch.Tensor], partition: Partition | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The critic's loss (the heads' losses follow it in `_train_step`)."""
        loss, stats, _ = self.critic_views(batch, partition)
        return loss, stats

    def marginal_loss(self, batch: dict[str, torch.Tensor], views: Views) -> torch.Tensor:
        """Cross-entropy of the marginal against the policy under an imaginary team [B, T, A]
        (maximum likelihood of the policy's actions, summed over actions exactly)."""
        avail = batch["avail_actions"][:, NOW]
        imagined = self.log_policy(views.within[:, NOW], avail).exp().detach()
        return -(imagined * self.log_marginal(views.alone[:, NOW].detach(), avail)).sum(-1)

    def policy_loss(self, batch: dict[str, torch.Tensor], views: Views) -> torch.Tensor:
        """KL to the Blahut-Arimoto target pi_bar exp(Q / alpha), scaled by alpha [B, T, A]:
        sum_u pi(u) [alpha log pi(u) - alpha log sg[pi_bar(u)] - sg[Q(u)]]."""
        avail, h = batch["avail_actions"][:, NOW], views.full[:, NOW].detach()
        log_pi = self.log_policy(h, avail)
        q = self.agent.output(h, batch["agent_mask"][:, NOW]).detach()
        regulariser = self.alpha * (log_pi - self.log_marginal(views.alone[:, NOW], avail).detach())
        return (log_pi.exp() * torch.where(avail, regulariser - q, 0.0)).sum(-1)

    def _masked_mean(self, per_agent: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over real entries (filled steps x present agents)."""
        return masked_average(per_agent, loss_mask(per_agent, batch))

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        loss, stats, views = self.critic_views(batch)
        grad_norm = self._optimise(self.optimiser, loss, self.params)
        # The heads learn on the trunk's features, detached, so M alternations cost no
        # further passes through the trunk.
        policy_params = list(self.agent.policy.parameters())
        marginal_params = list(self.agent.marginal.parameters())
        for _ in range(self.mipi_cfg.ba_iterations):
            if self.mipi_cfg.regulariser == "mi":
                marginal = self._masked_mean(self.marginal_loss(batch, views), batch)
                self._optimise(self.marginal_optimiser, marginal, marginal_params)
                stats["marginal_loss"] = float(marginal.detach())
            policy = self._masked_mean(self.policy_loss(batch, views), batch)
            self._optimise(self.policy_optimiser, policy, policy_params)
            stats["policy_loss"] = float(policy.detach())
        stats.update(self._policy_stats(batch, views))
        self.grad_steps += 1
        return {"loss": float(loss.detach()), "grad_norm": grad_norm, **stats}

    @torch.no_grad()
    def _policy_stats(self, batch: dict[str, torch.Tensor], views: Views) -> dict[str, float]:
        """Mean policy entropy and mean KL(pi || pi_bar) (the MI estimate) per agent-step."""
        avail = batch["avail_actions"][:, NOW]
        log_pi = self.log_policy(views.full[:, NOW], avail)
        pi = log_pi.exp()
        entropy = -(pi * torch.where(avail, log_pi, 0.0)).sum(-1)
        stats = {"policy_entropy": float(self._masked_mean(entropy, batch))}
        if self.mipi_cfg.regulariser == "mi":
            log_marginal = self.log_marginal(views.alone[:, NOW], avail)
            kl = (pi * torch.where(avail, log_pi - log_marginal, 0.0)).sum(-1)
            stats["mi_estimate"] = float(self._masked_mean(kl, batch))
        return stats

    # ---------------------------------------------------------------- checkpoints

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super()._optimisers(), "policy_optimiser": self.policy_optimiser,
                "marginal_optimiser": self.marginal_optimiser}


MIPIValue = ablation(MIPI, "mipi_value", "MIPIValue",
                     "MIPI's `Value` ablation: the same actor-critic on the environment reward alone (alpha = 0).",
                     regulariser="none")
MIPIEntropy = ablation(MIPI, "mipi_entropy", "MIPIEntropy",
                       "MIPI's `Entropy` ablation: the penalty alpha log pi (a uniform marginal) replaces "
                       "alpha log(pi / pi_bar), with the same alpha.", regulariser="entropy")


