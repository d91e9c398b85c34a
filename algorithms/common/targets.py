"""Target networks and TD targets over padded episode batches."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def hard_update(target: nn.Module, source: nn.Module) -> None:
    target.load_state_dict(source.state_dict())


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


def td_lambda_targets(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    filled: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) returns, computed backward over each episode.

    reward, terminated, filled: [B, T]; bootstrap: [B, T, ...] where bootstrap[:, t] is the
    one-step bootstrap value of the state *after* step t (B_{t+1}); extra trailing dims (e.g.
    per-agent values) broadcast. Returns G [B, T, ...] with

        G_t = r_t + gamma (1 - d_t) [(1 - lam) B_{t+1} + lam G_{t+1}],

    where G_{t+1} := B_{t+1} when step t+1 is not filled (the episode was cut short: a
    truncated last step bootstraps fully; a terminated one not at all). `torch.where`
    rather than multiplication keeps garbage (even inf) after termination out of the result.
    lam = 0 is the one-step target.
    """
    extra = (1,) * (bootstrap.dim() - reward.dim())
    r, go_on, fill = (x.reshape(x.shape + extra) for x in (reward, ~terminated, filled))
    if lam == 0.0:
        return r + gamma * torch.where(go_on, bootstrap, 0.0)
    steps = reward.shape[1]
    returns = [torch.empty(0)] * steps
    ret = bootstrap[:, -1]
    for t in reversed(range(steps)):
        after = bootstrap[:, t]
        later = torch.where(fill[:, t + 1], ret, after) if t + 1 < steps else after
        ret = r[:, t] + gamma * torch.where(go_on[:, t], (1 - lam) * after + lam * later, 0.0)
        returns[t] = ret
    return torch.stack(returns, dim=1)
