"""QPLEX: duplex dueling multi-agent Q-learning (Wang et al. 2021; algorithms.md §2.3).

The value-decomposition learner with `DuplexMixer`: per-agent utilities are transformed
(q̃_i = w_i q_i + b_i, w_i > 0), split into V_i = max q̃_i and A_i = q̃_i(u_i) - V_i, and mixed as
Q_tot = Σ V_i + Σ λ_i(S, u) A_i with λ_i > 0, which keeps the per-agent argmax a joint argmax
(IGM) without QMIX's monotonicity restriction on the values.

Defaults follow pymarl2's QPLEX config [C: `hijkzzz/pymarl2`, `src/config/algs/qplex.yaml`]:
Adam lr 1e-3, TD(λ) 0.6, batch 128 episodes, buffer 5000, double Q, targets every 200
episodes, ε 1 -> 0.05 over 100k steps, 4 λ heads, 2-layer 64-wide advantage hypernetworks,
64-wide state hypernetworks. pymarl2 also sets `mixing_embed_dim: 32`, but its `DMAQer`
never reads it (only `hypernet_embed`), so there is no such field here. pymarl2 halves the
squared TD error (`0.5 * ...`); this learner keeps the harness's plain mean squared error,
which Adam's scale invariance makes the same update except where the gradient-norm clip
(10) binds.

On ME-IGM's 3x3 game QPLEX reaches the optimum in only a minority of seeds; why, with the runs
behind it: docs/experiments.md, "QPLEX on the non-monotonic 3x3 game".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from algorithms.common.batch import on_filled_steps, taken_values
from algorithms.common.exploration import masked_max
from algorithms.common.mixers import DuplexMixer
from algorithms.value_decomposition import ValueDecomposition, ValueDecompositionConfig
from harness.api import tunable
from harness.registry import register_algorithm


@dataclass
class QPLEXConfig(ValueDecompositionConfig):
    """pymarl2's QPLEX settings on the harness's entity-attention agent (REFIL sizes)."""

    lr: float = tunable(1e-3, 1e-4, 3e-3, log=True)
    """Adam's learning rate (pymarl2's QPLEX: 1e-3)."""
    optimiser: Literal["rmsprop", "adam"] = "adam"
    """Adam, as pymarl2's QPLEX."""
    batch_size: int = 128
    """Episodes per gradient step (pymarl2: 128)."""
    td_lambda: float = 0.6
    """TD(lambda)'s lambda (pymarl2: 0.6)."""
    epsilon_anneal_steps: int = tunable(100_000, 5_000, 500_000, log=True)
    """Env steps over which epsilon falls to epsilon_finish (pymarl2: 100k)."""
    hypernet_embed: int = 64
    """Width of the state hypernetworks (entity attention) for the weights, biases, keys and gates."""
    hypernet_heads: int = 4
    """Attention heads of those hypernetworks."""
    adv_hypernet_embed: int = 64
    """Hidden width of the two-layer key, agent and action heads of the advantage weights."""
    n_kernels: int = 4
    """K, the lambda heads (pymarl2's `num_kernel`)."""


@register_algorithm("qplex")
class QPLEX(ValueDecomposition):
    """Value decomposition with QPLEX's duplex dueling mixer."""

    Config = QPLEXConfig

    def _build_mixer(self) -> nn.Module:
        cfg = self.cfg
        assert isinstance(cfg, QPLEXConfig)
        return DuplexMixer(
            self.spec.state_features,
            self.spec.n_actions,
            hyper_embed=cfg.hypernet_embed,
            heads=cfg.hypernet_heads,
            kernels=cfg.n_kernels,
            adv_embed=cfg.adv_hypernet_embed,
        )

    def _joint_value(
        self, mixer: nn.Module, q: torch.Tensor, actions: torch.Tensor, batch: dict, slots: slice
    ) -> torch.Tensor:
        """Q_tot of `actions` [B, T, A]: the mixer needs the taken utilities and each agent's best
        utility over its available actions (detached, as pymarl2 takes it from a detached copy)."""
        best = masked_max(q.detach(), batch["avail_actions"][:, slots])
        return on_filled_steps(
            batch,
            mixer,
            taken_values(q, actions),
            best,
            actions,
            batch["state"][:, slots],
            batch["state_mask"][:, slots],
            batch["agent_mask"][:, slots],
        )
