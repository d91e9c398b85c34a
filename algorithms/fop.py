"""FOP: factorized multi-agent soft actor-critic under the IGO condition (Zhang et al., ICML
2021; algorithms.md §2.6, with the released code `liyheng/FOP` [C] where the doc says so).

Individual-Global-Optimal (IGO): the joint maximum-entropy optimum is a product of local
policies, so each agent can improve its own soft policy against its own soft utility. On the
harness's value-decomposition learner (episode replay, recurrent entity-attention networks,
hard target copies, TD(lambda)):

- Critic: twin sets k = 1, 2 of per-agent soft utilities q_i^(k)(tau_i, .) (one shared
  `RecurrentAgent` per set) with soft values V_i = alpha logsumexp(q_i / alpha) over the
  available actions, each set with its own `FOPMixer`:
      Q_tot = sum_i q_i(u_i) + v(S) + sum_i (lambda_i(S, u) - 1) sg[q_i(u_i) - V_i],
  lambda_i > 0 from K heads (QPLEX's construction, `duplex_lambda`). Each set regresses onto
  one shared target
      y_t = G_t - alpha * agg_i log pi_i(u'_i | tau_i,t+1),
  where u' ~ pi is drawn from the *current* actor at t+1, G is the TD(lambda) return of
  min_k Qbar_tot^(k)(t+1, u') (target networks), and agg is the mean over present agents
  [C: `fop_learner.py`], or their sum (`entropy_reduction: sum`, the joint policy's entropy).
- Actor: a separate `RecurrentAgent` gives pi_i(. | tau_i) (a masked softmax); its loss is
  sum_u pi_i(u) [alpha log pi_i(u) - sg[min_k q_i^(k)(u)]] (discrete SAC), so its gradient
  reaches the actor only.
- alpha anneals linearly; the released code uses max(0.05, 0.5 - t / 200000), i.e. it reaches
  0.05 after 90k env steps (algorithms.md's "over 200k" reads the slope's denominator as the
  duration): `alpha_anneal_steps: 90000` reproduces it exactly.
- Acting: only the actor runs (no state). Training samples u_i ~ pi_i and, with probability
  epsilon (1 -> 0.05 over 50k steps), takes a uniform available action instead (ME-IGM's
  "multinomial" selector); test time takes argmax pi_i.

Defaults (`FOPConfig`) follow ME-IGM's FOP table [P] over the released config [C]. Choices
the sources leave open [R]:
- the unnamed 0.4 of ME-IGM's table is read as TD lambda (the released `fop.yaml` has 0.8);
- the code subtracts the entropy term after TD(lambda) with no discount and also after a
  terminal step; here it is left out after termination (there is no next state), otherwise
  as in the code;
- the code's multinomial selector softmaxes over *all* actions and mixes an epsilon floor
  into pi before sampling, and trains on that floored pi; here pi is the softmax over the
  available actions, used unfloored in every loss, and epsilon only acts in rollouts;
- V_i sums over the available actions (the code: all actions);
- the code's critics are feed-forward MLPs on (obs, agent id); here they are the harness's
  recurrent entity-attention agents, like the actor, so every network is size-agnostic;
- training starts once the buffer holds `burn_in_episodes` (100 [C]) episodes, capped by
  the buffer's capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.batch import AFTER, NOW, taken_values
from algorithms.common.exploration import (
    LinearSchedule,
    masked_log_softmax,
    policy_actions,
    sample_categorical,
)
from algorithms.common.mixers import duplex_lambda, mlp, with_agent_inputs
from algorithms.common.networks import StateContext
from algorithms.common.targets import hard_update, td_lambda_targets
from algorithms.common.torch_utils import StepTensors
from algorithms.value_decomposition import ValueDecomposition, ValueDecompositionConfig
from harness.api import EnvSpec, tunable
from harness.registry import register_algorithm


@dataclass
class FOPConfig(ValueDecompositionConfig):
    """ME-IGM's FOP table (Appendix E) [P]: multinomial selector with epsilon 1 -> 0.05 over 50k
    steps, buffer 5000, targets every 200 episodes, 4 heads, mixing embedding 32, lr 5e-4,
    burn-in 100, and 0.4 (read as TD lambda [R]). From the released code [C]: RMSprop for
    actor and critics (same lr), batch 32 episodes, gamma 0.99, gradient clip 10, alpha 0.5 ->
    0.05. Entity attention 128 / 4 heads / GRU 64 as the other harness methods."""

    td_lambda: float = 0.4
    """TD(lambda)'s lambda of the critic targets (the table's 0.4, read as lambda [R])."""
    burn_in_episodes: int = 100
    """Episodes in the buffer before the first update [C]."""
    alpha_start: float = tunable(0.5, 0.05, 2.0, log=True)
    """Entropy temperature at the start."""
    alpha_finish: float = 0.05
    """Entropy temperature once annealed."""
    alpha_anneal_steps: int = 90_000
    """Env steps over which alpha falls linearly to alpha_finish: max(0.05, 0.5 - t / 200000) as the
    released code [C]."""
    entropy_reduction: Literal["mean", "sum"] = "mean"
    """How the agents' entropies combine in the critic target: their mean or their sum [C]."""
    mixing_embed: int = 32
    """Hidden width of the state value v(S)."""
    hypernet_embed: int = 64
    """Width of the mixer's state context (entity attention over the state)."""
    hypernet_heads: int = 4
    """Attention heads of that context."""
    n_kernels: int = 4
    """K, the number of lambda heads of the mixer (FOP's `n_head`)."""

    def __post_init__(self) -> None:
        if not (self.alpha_start > 0 and self.alpha_finish > 0):
            raise ValueError(f"alpha must stay positive (alpha_start={self.alpha_start}, "
                             f"alpha_finish={self.alpha_finish})")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must lie in [0, 1], got {self.td_lambda}")
        if self.entropy_reduction not in ("mean", "sum"):
            raise ValueError(f"entropy_reduction must be 'mean' or 'sum', got {self.entropy_reduction!r}")
        if self.n_kernels < 1:
            raise ValueError(f"n_kernels must be at least 1, got {self.n_kernels}")


def soft_value(q: torch.Tensor, avail: torch.Tensor, alpha: float) -> torch.Tensor:
    """V = alpha logsumexp(q / alpha) over the available actions: q [..., U] -> [...], 0 where
    no action is available. V >= max q, and V -> max q as alpha -> 0."""
    v = alpha * torch.logsumexp(q.masked_fill(~avail, float("-inf")) / alpha, dim=-1)
    return torch.where(avail.any(-1), v, 0.0)


class FOPMixer(nn.Module):
    """FOP's mixer with attention hypernetworks over the state entity list:

        Q_tot = sum_i q_i(u_i) + v(S) + sum_i (lambda_i(S, u) - 1) sg[q_i(u_i) - V_i].

    Its value equals sum_i V_i + v(S) + sum_i lambda_i (q_i(u_i) - V_i), a duplex dueling mix
    of soft values and soft advantages; with the stop-gradient the utilities learn through
    sum_i q_i(u_i) (VDN-like) and lambda through its own factor. lambda_i comes from K heads as
    in QPLEX (`duplex_lambda`): keys from the pooled state context, agent gates from agent
    i's context row, action gates from agent i's row of a second context run over the state
    with every present agent's action one-hot appended to its row. The heads are single
    linear layers (the released mixer's); v(S) is a ReLU MLP (`mixing_embed` wide) on the
    pooled context. No weight depends on the number of agents or entities; absent agents
    add nothing and their actions reach no one's row.
    """

    def __init__(
        self, state_features: int, n_actions: int, embed: int = 32, hyper_embed: int = 64,
        heads: int = 4, kernels: int = 4,
    ) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.context = StateContext(state_features, hyper_embed, heads)
        self.action_context = StateContext(state_features + n_actions, hyper_embed, heads)
        self.key = nn.Linear(hyper_embed, kernels)
        self.agent_gate = nn.Linear(hyper_embed, kernels)
        self.action_gate = nn.Linear(hyper_embed, kernels)
        self.value = mlp(hyper_embed, embed, 1)

    def parts(self, q_taken, v_soft, actions, state, state_mask, agent_mask) -> dict[str, torch.Tensor]:
        """`taken` q_i(u_i), `advantage` q_i(u_i) - V_i (both [..., A], 0 for absent agents),
        `lambda` [..., A] (> 0; meaningless for absent agents) and `state_value` v(S) [...]."""
        n_agents = q_taken.shape[-1]
        agents, pooled = self.context(state, state_mask, n_agents)
        onehot = F.one_hot(actions, self.n_actions).to(state.dtype)
        acted = self.action_context(with_agent_inputs(state, onehot, agent_mask), state_mask, n_agents)[0]
        taken = torch.where(agent_mask, q_taken, 0.0)
        return {
            "taken": taken,
            "advantage": taken - torch.where(agent_mask, v_soft, 0.0),
            "lambda": duplex_lambda(self.key(pooled), self.agent_gate(agents), self.action_gate(acted)),
            "state_value": self.value(pooled).squeeze(-1),
        }

    def forward(self, q_taken, v_soft, actions, state, state_mask, agent_mask) -> torch.Tensor:
        """Q_tot [...] of the joint action `actions` [..., A] (long), from q_taken [..., A] and
        the soft values v_soft [..., A]; state [..., N, G] with the agents' rows first."""
        p = self.parts(q_taken, v_soft, actions, state, state_mask, agent_mask)
        dueling = ((p["lambda"] - 1.0) * p["advantage"].detach()).sum(-1)
        return p["taken"].sum(-1) + p["state_value"] + dueling


@register_algorithm("fop")
class FOP(ValueDecomposition):
    """FOP on the value-decomposition learner: `agent`/`mixer` (and their targets) are critic
    set 1, `critic2`/`mixer2` set 2, `actor` the policy that acts."""

    Config = FOPConfig
    action_spaces: ClassVar[tuple[str, ...]] = ("discrete",)
    cfg: FOPConfig

    def __init__(self, env_spec: EnvSpec, config: FOPConfig, seed: int, device: Any) -> None:
        super().__init__(env_spec, config, seed, device)
        self.target_critic2 = self._frozen_copy(self.critic2)
        self.target_mixer2 = self._frozen_copy(self.mixer2)
        # One optimiser for both critic sets (disjoint parameters and losses, so the same as
        # FOP's two RMSprops with equal settings), one for the actor; clipping is per set.
        self.critic_sets = [
            [*self.agent.parameters(), *self.mixer.parameters()],
            [*self.critic2.parameters(), *self.mixer2.parameters()],
        ]
        self.params = [p for group in self.critic_sets for p in group]
        self.optimiser = self._make_optimiser(self.params, config.lr)
        self.actor_optimiser = self._make_optimiser(list(self.actor.parameters()), config.lr)
        self.alpha_schedule = LinearSchedule(config.alpha_start, config.alpha_finish, config.alpha_anneal_steps)

    def _build_mixer(self) -> nn.Module:
        cfg = self.cfg
        return FOPMixer(
            self.spec.state_features,
            self.spec.n_actions,
            embed=cfg.mixing_embed,
            hyper_embed=cfg.hypernet_embed,
            heads=cfg.hypernet_heads,
            kernels=cfg.n_kernels,
        )

    def _build_extra(self) -> None:
        """The second critic set and the actor (same architecture; the actor's head gives logits)."""
        self.critic2 = self._build_agent().to(self.device)
        self.mixer2 = self._build_mixer().to(self.device)
        self.actor = self._build_agent().to(self.device)

    @property
    def alpha(self) -> float:
        return self.alpha_schedule(self.env_steps)

    @property
    def burn_in(self) -> int:
        """Episodes needed before learning: the burn-in, at most a full buffer, at least a batch."""
        cfg = self.cfg
        return max(cfg.batch_size, min(cfg.burn_in_episodes, cfg.buffer_size))

    # ---------------------------------------------------------------- acting

    @property
    def acting_network(self) -> nn.Module:
        """Only the actor acts (no state, no critic)."""
        return self.actor

    def _select(self, logits: torch.Tensor, x: StepTensors, explore: bool) -> torch.Tensor:
        """Training: u ~ pi, or with probability epsilon a uniform available action; test: argmax pi."""
        return policy_actions(logits, x.avail_actions, explore, self.epsilon(self.env_steps), self.generator)

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        if len(self.replay) < self.burn_in:
            return {}
        return {**super().update(), "alpha": self.alpha}

    def _update_targets(self) -> None:
        super()._update_targets()
        hard_update(self.target_critic2, self.critic2)
        hard_update(self.target_mixer2, self.mixer2)

    def _joint_value(
        self, mixer: nn.Module, q: torch.Tensor, actions: torch.Tensor, batch: dict, slots: slice
    ) -> torch.Tensor:
        """Q_tot of `actions` [B, T, A] from all utilities q [B, T, A, U] (soft values at the
        current alpha)."""
        v = soft_value(q.detach(), batch["avail_actions"][:, slots], self.alpha)
        return mixer(
            taken_values(q, actions),
            v,
            actions,
            batch["state"][:, slots],
            batch["state_mask"][:, slots],
            batch["agent_mask"][:, slots],
        )

    @torch.no_grad()
    def _soft_targets(self, batch: dict[str, torch.Tensor], log_pi_next: torch.Tensor) -> torch.Tensor:
        """y [B, T]: TD(lambda) over min_k Qbar_tot^(k) at u' ~ pi (t+1), minus alpha times the
        mean (or sum) over present agents of log pi_i(u'_i); no entropy term after termination."""
        avail, present = batch["avail_actions"][:, AFTER], batch["agent_mask"][:, AFTER]
        u_next = sample_categorical(log_pi_next, avail, self.generator)
        inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
        bootstrap = torch.minimum(
            self._joint_value(self.target_mixer, self.target_agent.unroll(*inputs)[:, AFTER], u_next, batch, AFTER),
            self._joint_value(self.target_mixer2, self.target_critic2.unroll(*inputs)[:, AFTER], u_next, batch, AFTER),
        )
        returns = td_lambda_targets(
            batch["reward"], batch["terminated"], batch["filled"], bootstrap, self.cfg.gamma, self.cfg.td_lambda
        )
        log_joint = torch.where(present, taken_values(log_pi_next, u_next), 0.0).sum(-1)
        if self.cfg.entropy_reduction == "mean":
            log_joint = log_joint / present.sum(-1).clamp(min=1)
        return returns - self.alpha * torch.where(batch["terminated"], 0.0, log_joint)

    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The critic loss (both sets, their mixers only) and the actor loss (the actor only)."""
        inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
        avail = batch["avail_actions"]
        log_pi = masked_log_softmax(self.actor.unroll(*inputs), avail)  # [B, T+1, A, U]
        y = self._soft_targets(batch, log_pi[:, AFTER].detach())
        q1, q2 = self.agent.unroll(*inputs), self.critic2.unroll(*inputs)
        loss1, stats = self._td_loss(self._joint_value(self.mixer, q1[:, NOW], batch["actions"], batch, NOW), y, batch)
        loss2, _ = self._td_loss(self._joint_value(self.mixer2, q2[:, NOW], batch["actions"], batch, NOW), y, batch)
        actor_loss, actor_stats = self._actor_loss(
            log_pi[:, NOW], torch.minimum(q1, q2)[:, NOW].detach(), batch
        )
        return {"critic": loss1 + loss2, "actor": actor_loss}, {**stats, **actor_stats}

    def _actor_loss(
        self, log_pi: torch.Tensor, q_min: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over filled steps and present agents of sum_u pi(u) [alpha log pi(u) - q_min(u)]
        (available actions only); q_min must come detached."""
        avail = batch["avail_actions"][:, NOW]
        pi = log_pi.exp()
        per_agent = torch.where(avail, pi * (self.alpha * log_pi - q_min), 0.0).sum(-1)  # [B, T, A]
        mask = batch["filled"].unsqueeze(-1) & batch["agent_mask"][:, NOW]
        count = mask.sum().clamp(min=1)
        loss = torch.where(mask, per_agent, 0.0).sum() / count
        with torch.no_grad():
            entropy = -torch.where(avail, pi * log_pi, 0.0).sum(-1)
            stats = {
                "actor_loss": float(loss),
                "entropy": float(torch.where(mask, entropy, 0.0).sum() / count),
                "pi_max": float(torch.where(mask, pi.amax(-1), 0.0).sum() / count),
            }
        return loss, stats

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Critic + actor loss: their parameters are disjoint, so one backward pass trains each
        on its own loss."""
        parts, stats = self.losses(batch)
        return parts["critic"] + parts["actor"], {"critic_loss": float(parts["critic"].detach()), **stats}

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        loss, stats = self.loss(batch)
        self.optimiser.zero_grad(set_to_none=True)
        self.actor_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_norm_clip
        norms = [float(torch.nn.utils.clip_grad_norm_(group, clip)) for group in self.critic_sets]
        actor_norm = float(torch.nn.utils.clip_grad_norm_(list(self.actor.parameters()), clip))
        self.optimiser.step()
        self.actor_optimiser.step()
        self.grad_steps += 1
        return {
            "loss": float(loss.detach()),
            "grad_norm": norms[0],
            "critic2_grad_norm": norms[1],
            "actor_grad_norm": actor_norm,
            **stats,
        }

    # ---------------------------------------------------------------- checkpoints

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "critic1": self.agent,
            "target_critic1": self.target_agent,
            "mixer1": self.mixer,
            "target_mixer1": self.target_mixer,
            "critic2": self.critic2,
            "target_critic2": self.target_critic2,
            "mixer2": self.mixer2,
            "target_mixer2": self.target_mixer2,
            "actor": self.actor,
        }

    def _policy_modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor}  # acting needs the actor alone

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super()._optimisers(), "actor_optimiser": self.actor_optimiser}
