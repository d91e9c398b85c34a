"""Weighted QMIX: OW-QMIX and CW-QMIX (Rashid et al. 2020, "Weighted QMIX: Expanding Monotonic
Value Function Factorisation").

QMIX's monotonic Q_tot (the attention `AttentionQMixer` on the shared agent) is trained next
to an unrestricted centralised estimate Q̂* of the joint action value:

- Q̂*: a separate agent network (same architecture as the QMIX agent) gives central
  utilities q̂_i, mixed by `UnrestrictedMixer` (feed-forward over the utilities and the state,
  no monotonicity; the paper's mixer is a 3 x 256 ReLU net over [state, utilities]).
- Targets, shared by both losses: y = r + γ Q̂*_target(s', û'), where û' is the greedy joint
  action of the QMIX utilities (per-agent argmax over available actions; the online
  utilities with double Q, as the authors' code requires) scored by the target Q̂*.
  `td_lambda` > 0 turns this into the harness's TD(λ) return (the paper uses one step).
- Q̂* is trained on (Q̂*(s, u) - y)^2, unweighted.
- QMIX is trained on w(s, u) (Q_tot(s, u) - y)^2 with
  OW (optimistic): w = 1 if Q_tot(s, u) < y, else α;
  CW (central): w = 1 if y > Q̂*(s, û) or u = û, else α, where û is the QMIX greedy joint
  action at s and Q̂*(s, û) is scored by the target Q̂* networks [C: `oxwhirl/wqmix`,
  `src/learners/max_q_learner.py`].
- The two losses are summed (both weights 1 in the authors' code) and one optimiser steps
  all four networks; the gradient-norm clip covers them all.

Acting uses the QMIX utilities only, so execution stays decentralised.

Defaults: PyMARL's QMIX settings used for the paper's SMAC runs (RMSprop lr 5e-4, batch 32,
buffer 5000, targets every 200 episodes, ε over 50k steps, double Q, one-step targets), the
central mixer 256 wide, the central agent the QMIX agent's architecture [C: `oxwhirl/wqmix`
`cw_qmix.yaml`: `central_mixing_embed_dim: 256`, `central_rnn_hidden_dim: 64`].
α = 0.75 for both weightings [R]: from memory of the paper's SMAC setup, not confirmed.
The authors' `cw_qmix.yaml` sets `w: 0.1` (their name for α; the README says it was 0.1 for
the predator-prey punishment runs), and their README's OW example on 3s5z uses `w=0.5`.
α matters: on the `matrix_games` suite's `nonmonotonic_3x3` (budget short) both weightings
end on (A,A) = 8 in 0/5 seeds with α = 0.75, 1/5 with 0.5, 5/5 with 0.25 and 15/15 with 0.1.

QMIX's own target networks only choose û' when double Q is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from algorithms.common.batch import AFTER, NOW, loss_mask, taken_values
from algorithms.common.exploration import masked_argmax
from algorithms.common.mixers import UnrestrictedMixer
from algorithms.common.targets import hard_update, td_lambda_targets
from algorithms.value_decomposition import QMIX, QMIXConfig
from harness.api import EnvSpec, tunable
from harness.registry import register_algorithm


def ow_weights(q_tot: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Optimistic weighting: 1 where Q_tot underestimates the target, α elsewhere."""
    return torch.where(q_tot < y, 1.0, alpha)


def cw_weights(
    y: torch.Tensor, central_greedy: torch.Tensor, taken_is_greedy: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Central weighting: 1 where the target beats Q̂* of the greedy joint action (the taken
    action may be better than what QMIX currently picks) or where the taken joint action is
    QMIX's greedy one, α elsewhere."""
    return torch.where((y > central_greedy) | taken_is_greedy, 1.0, alpha)


@dataclass
class WeightedQMIXConfig(QMIXConfig):
    """QMIX's PyMARL settings plus the central Q̂* network and the weighting's α."""

    alpha: float = tunable(0.75, 0.01, 1.0)
    """The weight of the down-weighted samples (1: every sample weighs the same) [R]."""
    central_mixing_embed: int = 256
    """Width of the central Q-hat*'s mixer (its attention and hidden layer)."""
    central_heads: int = 4
    """Attention heads of the central mixer."""


@dataclass
class WeightedTerms:
    """The pieces of one Weighted QMIX loss evaluation ([B, T] each, bar the two losses)."""

    qmix_loss: torch.Tensor
    central_loss: torch.Tensor
    q_tot: torch.Tensor  # QMIX's Q_tot(s, u) at the taken joint action
    central: torch.Tensor  # Q̂*(s, u) at the taken joint action
    target: torch.Tensor  # y
    weights: torch.Tensor  # w(s, u), 1 or α


class WeightedQMIX(QMIX):
    """Shared learner of OW-QMIX and CW-QMIX; subclasses pick the weighting."""

    Config = WeightedQMIXConfig
    weighting: ClassVar[Literal["optimistic", "central"]]

    def __init__(self, env_spec: EnvSpec, config: WeightedQMIXConfig, seed: int, device: Any) -> None:
        super().__init__(env_spec, config, seed, device)
        self.target_central_agent = self._frozen_copy(self.central_agent)
        self.target_central_mixer = self._frozen_copy(self.central_mixer)
        # The base class made its optimiser over agent and mixer only: one optimiser (and one
        # gradient-norm clip) over all four trained networks, as in the authors' code.
        self.params = [*self.params, *self.central_agent.parameters(), *self.central_mixer.parameters()]
        self.optimiser = self._make_optimiser(self.params, config.lr)

    def _build_extra(self) -> None:
        cfg = self.cfg
        assert isinstance(cfg, WeightedQMIXConfig)
        self.central_agent = self._build_agent().to(self.device)
        self.central_mixer = UnrestrictedMixer(
            self.spec.state_features, cfg.central_mixing_embed, cfg.central_heads
        ).to(self.device)

    def _update_targets(self) -> None:
        hard_update(self.target_central_agent, self.central_agent)
        hard_update(self.target_central_mixer, self.central_mixer)
        super()._update_targets()

    def _modules(self) -> dict[str, nn.Module]:
        return {
            **super()._modules(),
            "central_agent": self.central_agent,
            "target_central_agent": self.target_central_agent,
            "central_mixer": self.central_mixer,
            "target_central_mixer": self.target_central_mixer,
        }

    # ---------------------------------------------------------------- learning

    def terms(self, batch: dict[str, torch.Tensor]) -> WeightedTerms:
        """Both losses and what they are made of, for one batch of episodes."""
        cfg = self.cfg
        assert isinstance(cfg, WeightedQMIXConfig)
        inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
        q = self.agent.unroll(*inputs)  # [B, T+1, A, U]
        q_central = self.central_agent.unroll(*inputs)
        with torch.no_grad():
            chooser = q.detach() if cfg.double_q else self.target_agent.unroll(*inputs)
            greedy = masked_argmax(chooser, batch["avail_actions"])  # û at every slot
            q_central_target = self.target_central_agent.unroll(*inputs)
            every = slice(None)
            central_greedy = self._mix(
                self.target_central_mixer, taken_values(q_central_target, greedy), batch, every
            )
            y = td_lambda_targets(
                batch["reward"],
                batch["terminated"],
                batch["filled"],
                central_greedy[:, AFTER],
                cfg.gamma,
                cfg.td_lambda,
            )
        actions = batch["actions"]
        q_tot = self._mix(self.mixer, taken_values(q[:, NOW], actions), batch, NOW)
        central = self._mix(self.central_mixer, taken_values(q_central[:, NOW], actions), batch, NOW)
        with torch.no_grad():
            if self.weighting == "optimistic":
                weights = ow_weights(q_tot, y, cfg.alpha)
            else:
                taken_is_greedy = ((actions == greedy[:, NOW]) | ~batch["agent_mask"][:, NOW]).all(-1)
                weights = cw_weights(y, central_greedy[:, NOW], taken_is_greedy, cfg.alpha)
        mask = loss_mask(q_tot, batch)
        count = mask.sum().clamp(min=1)
        td = torch.where(mask, q_tot - y, 0.0)
        central_td = torch.where(mask, central - y, 0.0)
        return WeightedTerms(
            qmix_loss=(weights * td.pow(2)).sum() / count,
            central_loss=central_td.pow(2).sum() / count,
            q_tot=q_tot,
            central=central,
            target=y,
            weights=weights,
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.terms(batch)
        mask = loss_mask(t.q_tot, batch)
        count = mask.sum().clamp(min=1)

        def mean(x: torch.Tensor) -> float:
            return float(torch.where(mask, x.detach(), 0.0).sum() / count)

        stats = {
            "qmix_loss": float(t.qmix_loss.detach()),
            "central_loss": float(t.central_loss.detach()),
            "q_taken_mean": mean(t.q_tot),
            "central_q_taken_mean": mean(t.central),
            "target_mean": mean(t.target),
            "td_error_abs": mean((t.q_tot - t.target).abs()),
            "weight_mean": mean(t.weights),
        }
        return t.qmix_loss + t.central_loss, stats


@register_algorithm("ow_qmix")
class OWQMIX(WeightedQMIX):
    """Optimistically-weighted QMIX: full weight where Q_tot(s, u) < y."""

    weighting = "optimistic"


@register_algorithm("cw_qmix")
class CWQMIX(WeightedQMIX):
    """Centrally-weighted QMIX: full weight where y > Q̂*(s, û) or u = û."""

    weighting = "central"
