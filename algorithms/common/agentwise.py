"""Per-agent networks with separate parameters, evaluated for all agents in one batched op.

VM3-AC and MADDPG give every agent its own actor and critic (a fixed team, not a
size-agnostic network). Instead of a Python loop over agents, each layer keeps its weights
with a leading agent axis, `weight [A, in, out]`, and runs `torch.baddbmm` over that axis:
agent i's rows only ever meet agent i's weights, so the result (and every gradient) equals
that of A separate MLPs.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AgentwiseLinear(nn.Module):
    """A separate affine map per agent: x [A, M, in] -> [A, M, out]."""

    def __init__(self, n_agents: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_agents, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_agents, 1, out_features))
        # nn.Linear's default initialisation, per agent: U(-1/sqrt(in), 1/sqrt(in)).
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class AgentwiseMLP(nn.Module):
    """`layers` hidden ReLU layers of width `hidden` and a linear output, one set of weights
    per agent. Input [..., A, in] -> output [..., A, out]: the agent axis is the second to
    last; any leading axes (batch, partner index, ...) are batched together."""

    def __init__(self, n_agents: int, in_features: int, out_features: int, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        widths = [in_features, *[hidden] * layers]
        self.hidden = nn.ModuleList(
            AgentwiseLinear(n_agents, w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = AgentwiseLinear(n_agents, widths[-1], out_features)
        self.n_agents, self.in_features = n_agents, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.n_agents, self.in_features):
            raise ValueError(f"expected input [..., {self.n_agents}, {self.in_features}], got {tuple(x.shape)}")
        lead = x.shape[:-2]
        h = x.reshape(-1, self.n_agents, self.in_features).transpose(0, 1)  # [A, M, in]
        for layer in self.hidden:
            h = torch.relu(layer(h))
        out = self.out(h)  # [A, M, out]
        return out.transpose(0, 1).reshape(*lead, self.n_agents, out.shape[-1])


def flat_observations(obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor) -> torch.Tensor:
    """Entity-list observations [..., A, E, F] -> one flat vector per agent [..., A, E*F],
    with rows the agent cannot see, and absent agents, zeroed (padding must carry nothing)."""
    visible = obs_mask & agent_mask.unsqueeze(-1)
    return torch.where(visible.unsqueeze(-1), obs, 0.0).flatten(-2)


def flat_state(state: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
    """Global entity list [..., N, G] -> [..., N*G] with absent entities zeroed."""
    return torch.where(state_mask.unsqueeze(-1), state, 0.0).flatten(-2)


def own_action_swapped(own: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Critic i's copy of the joint action: [..., A, D] x 2 -> [..., A (whose critic), A, D],
    where entry (i, k) is `own[k]` if k == i else `others[k]`.

    MADDPG puts actor i's fresh action among the replayed actions of the others; VM3-AC
    passes the same reparameterised actions twice, `others` detached, so the values agree
    in every copy but critic i's output reaches agent i's action alone. Either way a sum of
    per-agent actor losses trains each actor only through its own critic."""
    n = own.shape[-2]
    diagonal = torch.eye(n, dtype=torch.bool, device=own.device).unsqueeze(-1)  # [A, A, 1]
    return torch.where(diagonal, own.unsqueeze(-3), others.unsqueeze(-3))
