"""Mixers: per-agent utilities q [..., A] (+ the state entity list) -> Q_tot [...].

Every mixer takes `(q, state, state_mask, agent_mask)` with q [..., A], state [..., N, G],
state_mask [..., N], agent_mask [..., A]; leading dims are free (batch, time). Absent
agents count as q_i = 0 with zero weight, so padding cannot change Q_tot. The exception is
`DuplexMixer` (QPLEX), which also needs each agent's best utility and the joint action.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.networks import StateContext


class NoMixer(nn.Module):
    """IQL: keep the per-agent utilities [..., A] (absent agents 0): one TD loss per agent."""

    def forward(self, q, state=None, state_mask=None, agent_mask=None) -> torch.Tensor:
        return q if agent_mask is None else torch.where(agent_mask, q, 0.0)


class SumMixer(nn.Module):
    """VDN: Q_tot = sum of the present agents' utilities."""

    def forward(self, q, state=None, state_mask=None, agent_mask=None) -> torch.Tensor:
        if agent_mask is not None:
            q = torch.where(agent_mask, q, 0.0)
        return q.sum(-1)


class AttentionQMixer(nn.Module):
    """Monotonic QMIX mixer whose hypernetworks attend over the state entity list.

    Q_tot = w2 . ELU(W1^T q + b1) + V with W1 = |H1| (one row per agent) and w2 = |H2|, so
    dQ_tot/dq_i >= 0 (IGM). No weight's shape depends on the number of agents or entities:

    - each state entity is embedded (ReLU(Linear)) and attends over all present entities
      (masked multi-head attention), giving a context row per entity;
    - row i of W1 comes from agent i's context row. This assumes the backend lists the
      agents first in the state, in agent-slot order: state[..., :A, :] are the rows of the
      agents whose utilities are q[..., :A];
    - b1, w2 and V come from the masked mean of the context rows over present entities.

    The hypernetworks are thus two layers deep (entity embedding + attention, then a linear
    head), as in REFIL's attention hypernetwork; V is a 2-layer ReLU net as in QMIX.
    """

    def __init__(self, state_features: int, embed: int = 32, hyper_embed: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.context = StateContext(state_features, hyper_embed, heads)
        self.w1 = nn.Linear(hyper_embed, embed)
        self.b1 = nn.Linear(hyper_embed, embed)
        self.w2 = nn.Linear(hyper_embed, embed)
        self.value = nn.Sequential(nn.Linear(hyper_embed, embed), nn.ReLU(), nn.Linear(embed, 1))

    def hyper_inputs(self, state, state_mask, n_agents: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-agent context rows [..., A, D] and the pooled state summary [..., D]."""
        return self.context(state, state_mask, n_agents)

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        agents, pooled = self.hyper_inputs(state, state_mask, q.shape[-1])
        present = agent_mask.unsqueeze(-1)
        w1 = torch.where(present, self.w1(agents).abs(), 0.0)  # [..., A, embed]
        q = torch.where(agent_mask, q, 0.0)
        hidden = F.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(pooled))
        return (hidden * self.w2(pooled).abs()).sum(-1) + self.value(pooled).squeeze(-1)


class FlatQMixer(nn.Module):
    """The original QMIX mixer (Rashid et al. 2018; PyMARL `QMixer` with two-layer weight
    hypernetworks): MLP hypernetworks on the whole state flattened into one vector.

    Q_tot = w2 . ELU(q W1 + b1) + V(s), W1 = |H1(s)| [A, embed], w2 = |H2(s)| [embed], b1 a
    linear map of s and V a 2-layer ReLU net. Its weights are sized for `max_agents` agents
    and `max_entities` state rows (fewer are zero-padded), so unlike `AttentionQMixer` it
    cannot mix a bigger team than the task's largest; in exchange it costs a few matrix
    products, which is what the papers' MLP baselines and the throughput comparison with
    PyMARL use. Absent agents count as q_i = 0; hidden state rows are zeroed.
    """

    def __init__(self, state_features: int, max_entities: int, max_agents: int, embed: int = 32,
                 hyper_embed: int = 64) -> None:
        super().__init__()
        self.max_entities, self.max_agents, self.embed = max_entities, max_agents, embed
        state_dim = state_features * max_entities
        self.w1 = mlp(state_dim, hyper_embed, embed * max_agents)
        self.w2 = mlp(state_dim, hyper_embed, embed)
        self.b1 = nn.Linear(state_dim, embed)
        self.value = mlp(state_dim, embed, 1)

    def flat_state(self, state: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
        missing = self.max_entities - state.shape[-2]
        if missing < 0:
            raise ValueError(f"the flat QMIX mixer reads at most {self.max_entities} state rows, got {state.shape[-2]}")
        rows = torch.where(state_mask.unsqueeze(-1), state, 0.0)
        return F.pad(rows, (0, 0, 0, missing)).flatten(-2)

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        missing = self.max_agents - q.shape[-1]
        if missing < 0:
            raise ValueError(f"the flat QMIX mixer mixes at most {self.max_agents} agents, got {q.shape[-1]}")
        s = self.flat_state(state, state_mask)
        q = F.pad(torch.where(agent_mask, q, 0.0), (0, missing))
        w1 = self.w1(s).abs().unflatten(-1, (self.max_agents, self.embed))  # [..., A, embed]
        hidden = F.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(s))
        return (hidden * self.w2(s).abs()).sum(-1) + self.value(s).squeeze(-1)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear: the 2-layer heads of QPLEX's hypernetworks."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


def with_agent_inputs(
    state: torch.Tensor, agent_inputs: torch.Tensor, agent_mask: torch.Tensor
) -> torch.Tensor:
    """state [..., N, G] and per-agent inputs [..., A, P] (action one-hots, utilities) ->
    [..., N, G + P]: agent i's inputs join its state row (the first A rows are the agents, in
    slot order); the other entities and absent agents get zeros, so a `StateContext` over the
    result sees each present agent's input as part of that agent's entity."""
    extra = torch.where(agent_mask.unsqueeze(-1), agent_inputs, 0.0)
    extra = F.pad(extra, (0, 0, 0, state.shape[-2] - extra.shape[-2]))
    return torch.cat([state, extra], -1)


def duplex_lambda(key: torch.Tensor, agent_gate: torch.Tensor, action_gate: torch.Tensor) -> torch.Tensor:
    """The dueling weights of QPLEX and FOP from K heads: key logits [..., K] (state), agent-gate
    and action-gate logits [..., A, K] (state; state and joint action) ->
    λ_i = Σ_k (|key_k| + 1e-10) · sigmoid(agent_gate_ik) · sigmoid(action_gate_ik) > 0, [..., A]."""
    key = key.abs().unsqueeze(-2) + 1e-10  # [..., 1, K]
    gates = torch.sigmoid(agent_gate) * torch.sigmoid(action_gate)  # [..., A, K]
    return (key * gates).sum(-1)


class DuplexMixer(nn.Module):
    """QPLEX's duplex dueling mixer (Wang et al. 2021; pymarl2 `dmaq_general` + `dmaq_si_weight`,
    algorithms.md §2.3) with attention hypernetworks over the state entity list.

    For each present agent i, with utilities q_i(·) and its taken action u_i:

    - transformation: q̃_i = w_i(S) q_i + b_i(S), w_i = |·| + 1e-10 > 0; since w_i > 0,
      V_i = max_{u available} q̃_i(u) = w_i max_u q_i(u) + b_i, so only the max of q_i is needed;
    - advantage: A_i = q̃_i(u_i) - V_i <= 0;
    - dueling mix: Q_tot = Σ_i V_i + Σ_i λ_i(S, u) A_i with
      λ_i = Σ_k (|κ_k(S)| + 1e-10) · sigmoid(g_k(S))_i · sigmoid(h_k(S, u))_i > 0 over K heads.

    As in the pymarl2 port it is computed as Σ_i q̃_i(u_i) + Σ_i (λ_i - 1) sg[A_i] (same value),
    so with `stop_gradient` the utilities, w and b learn only through Σ_i q̃_i(u_i) and λ only
    through its own factor. At the per-agent greedy joint action every A_i = 0 and
    Q_tot = Σ_i V_i, which is the maximum over joint actions (IGM).

    Size-agnostic state inputs (no weight depends on the number of agents or entities):
    `context` (a `StateContext`: entity embedding, then attention over the present entities)
    gives every agent a context row c_i and the state a pooled row p; w_i, b_i and the agent
    gates g(S)_i are heads on c_i, the keys κ(S) a head on p. The joint action enters through
    `action_context`, a second `StateContext` over the state with each agent's action one-hot
    appended to its row (`with_agent_inputs`), so agent i's row d_i depends on S and on every
    agent's action; h(S, u)_i is a head on d_i. (pymarl2 feeds the flat state and the flat
    joint-action one-hot to MLPs with one output per agent.) The key, agent and action heads
    are 2-layer (`adv_embed` hidden), as pymarl2's `adv_hypernet_layers: 2`.

    Absent agents (agent_mask False) add nothing: their V_i and A_i are 0 and their action
    one-hot is zeroed before it reaches anyone's row.
    """

    def __init__(
        self,
        state_features: int,
        n_actions: int,
        hyper_embed: int = 64,
        heads: int = 4,
        kernels: int = 4,
        adv_embed: int = 64,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.stop_gradient = stop_gradient
        self.context = StateContext(state_features, hyper_embed, heads)
        self.action_context = StateContext(state_features + n_actions, hyper_embed, heads)
        self.weight = nn.Linear(hyper_embed, 1)
        self.bias = nn.Linear(hyper_embed, 1)
        self.key = mlp(hyper_embed, adv_embed, kernels)
        self.agent_gate = mlp(hyper_embed, adv_embed, kernels)
        self.action_gate = mlp(hyper_embed, adv_embed, kernels)

    def parts(self, q_taken, q_max, actions, state, state_mask, agent_mask) -> dict[str, torch.Tensor]:
        """Every intermediate quantity, each [..., A]: `weight` w > 0, `bias` b, `taken` q̃_i(u_i),
        `value` V, `advantage` A and `lambda` λ > 0 (absent agents: taken = V = A = 0; their w,
        b and λ are meaningless and multiply nothing)."""
        n_agents = q_taken.shape[-1]
        agents, pooled = self.context(state, state_mask, n_agents)
        w = self.weight(agents).squeeze(-1).abs() + 1e-10
        b = self.bias(agents).squeeze(-1)
        taken = torch.where(agent_mask, w * q_taken + b, 0.0)
        value = torch.where(agent_mask, w * q_max + b, 0.0)
        onehot = F.one_hot(actions, self.n_actions).to(state.dtype)
        acted = self.action_context(with_agent_inputs(state, onehot, agent_mask), state_mask, n_agents)[0]
        return {
            "weight": w,
            "bias": b,
            "taken": taken,
            "value": value,
            "advantage": taken - value,
            "lambda": duplex_lambda(self.key(pooled), self.agent_gate(agents), self.action_gate(acted)),
        }

    def forward(self, q_taken, q_max, actions, state, state_mask, agent_mask) -> torch.Tensor:
        """Q_tot [...] of the joint action `actions` [..., A] (long).

        q_taken [..., A]: q_i(u_i); q_max [..., A]: max of q_i over agent i's available actions
        (the caller applies the availability mask; pymarl2 passes it detached); state
        [..., N, G] with the agents' rows first; state_mask [..., N]; agent_mask [..., A].
        """
        p = self.parts(q_taken, q_max, actions, state, state_mask, agent_mask)
        advantage = p["advantage"].detach() if self.stop_gradient else p["advantage"]
        return (p["taken"] + (p["lambda"] - 1.0) * advantage).sum(-1)


class UnrestrictedMixer(nn.Module):
    """Weighted QMIX's central Q̂* mixer: a feed-forward function of the utilities and the state
    with no monotonicity constraint (Rashid et al. 2020; oxwhirl/wqmix `QMixerCentralFF`:
    [state, utilities] -> 3 x 256 ReLU -> 1, plus V(s)).

    Size-agnostic version: each agent's utility q_i is appended to its state row
    (`with_agent_inputs`), a `StateContext` embeds the rows and attends over the present
    entities, and their masked mean goes through a ReLU hidden layer to one output. The
    utilities enter through signed weights, so Q̂* can decrease in any q_i. Absent agents'
    utilities are dropped, so padding cannot change Q̂*.
    """

    def __init__(self, state_features: int, embed: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.context = StateContext(state_features + 1, embed, heads)
        self.head = mlp(embed, embed, 1)

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        rows = with_agent_inputs(state, q.unsqueeze(-1), agent_mask)
        return self.head(self.context(rows, state_mask, q.shape[-1])[1]).squeeze(-1)
