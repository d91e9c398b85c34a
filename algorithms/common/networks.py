"""Entity-attention networks whose weights do not depend on the number of agents or entities.

Masks follow the harness polarity everywhere: True = the entity exists / is visible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class EntityAttention(nn.Module):
    """Multi-head attention from query rows over a masked entity list.

    `forward(queries [..., Q, D], entities [..., K, D], mask) -> [..., Q, D]`, where mask is
    [..., K] (the same keys for every query) or [..., Q, K] (each query its own keys, as
    REFIL's imagined sub-groups need). Masked keys get zero weight whatever their contents,
    and a query whose keys are all masked returns the output projection of zero (no NaN),
    as REFIL does.
    """

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        if embed % heads:
            raise ValueError(f"attention embedding {embed} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(embed, embed, bias=False)
        self.key = nn.Linear(embed, embed, bias=False)
        self.value = nn.Linear(embed, embed, bias=False)
        self.out = nn.Linear(embed, embed)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # [..., R, D] -> [..., heads, R, D / heads]
        return x.unflatten(-1, (self.heads, -1)).transpose(-2, -3)

    def forward(self, queries: torch.Tensor, entities: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._split(self.query(queries)),
            self._split(self.key(entities)),
            self._split(self.value(entities)),
        )
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [..., heads, Q, K]
        per_query = mask.dim() == queries.dim()
        keep = mask.unsqueeze(-3) if per_query else mask[..., None, None, :]
        # A finite fill keeps softmax NaN-free on an all-masked row; multiplying by the mask
        # then zeroes that row's uniform weights (elsewhere masked weights are already 0).
        weights = logits.masked_fill(~keep, torch.finfo(logits.dtype).min).softmax(-1) * keep
        mixed = (weights @ v).transpose(-2, -3).flatten(-2)  # [..., Q, D]
        return self.out(mixed)


class EntityEncoder(nn.Module):
    """One agent's entity list -> one vector: row 0 (the agent itself) attends over all rows.

    The agent's own row enters only as the attention query, so two agents that see the
    same set of entities start out with the same vector (attention is near uniform at
    initialisation) and must learn sharp attention before they can act differently.
    `self_residual` adds the embedded own row to the attention output, a direct path for
    what the agent is (its unit type), as an MLP on the observation would have.
    """

    def __init__(self, in_features: int, embed: int, heads: int, self_residual: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, embed)
        self.attention = EntityAttention(embed, heads)
        self.self_residual = self_residual

    def forward(self, entities: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.embed(entities))  # [..., E, D]
        own = x[..., :1, :]
        out = self.attention(own, x, mask)
        return (out + own if self.self_residual else out).squeeze(-2)


class FlatEncoder(nn.Module):
    """One agent's entity list -> ReLU(Linear) of all rows concatenated: an MLP's first layer
    on the observation, as the papers' matrix-game agents have (MIPI App. B.1).

    Hidden rows are zeroed first, so REFIL's imagined sub-groups and MIPI's own-row view
    work as with attention. Its weights are sized for `max_entities` rows (shorter lists are
    zero-padded), so unlike attention it cannot read a team bigger than the task's largest.
    """

    def __init__(self, in_features: int, max_entities: int, embed: int) -> None:
        super().__init__()
        self.max_entities = max_entities
        self.embed = nn.Linear(in_features * max_entities, embed)

    def forward(self, entities: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        missing = self.max_entities - entities.shape[-2]
        if missing < 0:
            raise ValueError(f"the flat encoder reads at most {self.max_entities} entities, got {entities.shape[-2]}")
        rows = torch.where(mask.unsqueeze(-1), entities, 0.0)
        return F.relu(self.embed(F.pad(rows, (0, 0, 0, missing)).flatten(-2)))


def unroll_gru(cell: nn.GRUCell, x: torch.Tensor, present: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """A GRU cell over time: inputs x [B, T, A, H_in], agent mask [B, T, A] -> states
    [B, T, A, H]; an absent agent's state is zero, and it starts again from zero when it is
    next present. An agent present at step 0 starts from `h0` [B, A, H] (default zero), as a
    sequence cut out of a longer one goes on from the state it was cut at.

    So every maximal run of steps in which an agent is present is a GRU sequence of its own,
    and nothing else is computed: ATen's multi-step GRU walks those runs as one packed batch
    in C++ (`_packed_gru`), with the cell's own weights. Stepping the cell from Python costs
    one round of dispatch per step and op, the larger part of a small network's time;
    padding and absent agents would cost compute too.
    """
    if bool(present.all()):
        return _fused_gru(cell, x, h0)
    if not bool(present.any()):
        return x.new_zeros(*present.shape, cell.hidden_size)
    return _packed_gru(cell, x, present, h0)


def _gru_weights(cell: nn.GRUCell) -> list[torch.Tensor]:
    return [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]


def _fused_gru(cell: nn.GRUCell, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """`unroll_gru` when every agent is present throughout: one sequence per agent."""
    batch, _, agents, _ = x.shape
    rows = x.transpose(1, 2).flatten(0, 1)  # [B*A, T, H_in]: one sequence per agent
    start = rows.new_zeros(1, batch * agents, cell.hidden_size) if h0 is None else h0.reshape(1, batch * agents, -1)
    # torch.gru(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    states, _ = torch.gru(rows, start, _gru_weights(cell), True, 1, 0.0, torch.is_grad_enabled(), False, True)
    return states.unflatten(0, (batch, agents)).transpose(1, 2)


def _packed_gru(cell: nn.GRUCell, x: torch.Tensor, present: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """`unroll_gru` over the runs of presence, packed as `nn.utils.rnn.PackedSequence` packs
    sequences: time-major, longest run first, `batch_sizes[k]` runs still going at step k."""
    order, batch_sizes, starts = _run_packing(present)
    data = x.flatten(0, 2).index_select(0, order)  # [N, H_in], N = present agent-steps
    if h0 is None:
        start = x.new_zeros(1, int(batch_sizes[0]), cell.hidden_size)
    else:  # runs that begin at step 0 go on from h0; the others (gap before them) from zero
        rows = torch.cat([h0.flatten(0, 1), h0.new_zeros(1, h0.shape[-1])])
        start = rows[starts].unsqueeze(0)
    # torch.gru(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional)
    states, _ = torch.gru(data, batch_sizes, start, _gru_weights(cell), True, 1, 0.0, torch.is_grad_enabled(), False)
    out = x.new_zeros(present.numel(), cell.hidden_size).index_copy(0, order, states)
    return out.view(*present.shape, cell.hidden_size)


def _run_packing(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a mask [B, T, A]: the flat [B*T*A] index of every present agent-step in packed
    order, the packed batch sizes (a CPU int64 tensor, as ATen wants them) and, per run in
    packed order, the flat [B*A] index of its agent when the run begins at step 0, else -1."""
    mask = present.detach().cpu().numpy()
    batch, steps, agents = mask.shape
    columns = mask.transpose(0, 2, 1).reshape(-1, steps)  # one row per (b, a) time series
    before = np.zeros_like(columns)
    before[:, 1:] = columns[:, :-1]
    starts = columns & ~before
    col, t = np.nonzero(columns)  # present entries, row-major: each run's steps are consecutive
    run = np.cumsum(starts[col, t]) - 1  # run id of every present entry
    first = np.flatnonzero(starts[col, t])  # entry index where each run starts
    position = np.arange(len(run)) - first[run]  # step within the run
    lengths = np.bincount(run)
    rank = np.empty_like(lengths)
    rank[np.argsort(-lengths, kind="stable")] = np.arange(len(lengths))  # longest first
    batch_sizes = np.bincount(position)  # runs still going at each step (lengths sorted: a prefix)
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]])
    packed_at = offsets[position] + rank[run]  # where each present entry goes in the packed data
    b, a = np.divmod(col, agents)
    flat = (b * steps + t) * agents + a
    order = np.empty_like(flat)
    order[packed_at] = flat
    run_agent = np.full(len(lengths), -1, np.int64)  # [runs] in packed order
    run_agent[rank] = np.where(t[first] == 0, b[first] * agents + a[first], -1)
    return (torch.from_numpy(order).to(present.device), torch.from_numpy(batch_sizes),
            torch.from_numpy(run_agent).to(present.device))


class RecurrentAgent(nn.Module):
    """Entity encoder -> ReLU(Linear) -> GRUCell -> Linear head (AQMIX/REFIL agent).

    Shared by all agents; absent agents (agent_mask False) get zero outputs and a zero
    recurrent state, so whatever sits in their slots cannot leak anywhere. The encoder is
    entity attention, or with `flat_entities` set a `FlatEncoder` over that many rows. With
    `agent_ids` set, each agent's slot index (one-hot, that many slots) joins the encoding, as
    PyMARL's agents read it: parameter sharing with a way to tell the agents apart.
    """

    def __init__(
        self,
        obs_features: int,
        n_outputs: int,
        embed: int = 128,
        heads: int = 4,
        hidden: int = 64,
        self_residual: bool = False,
        flat_entities: int | None = None,
        agent_ids: int | None = None,
    ):
        super().__init__()
        self.hidden, self.agent_ids = hidden, agent_ids
        self.encoder: nn.Module = (
            EntityEncoder(obs_features, embed, heads, self_residual)
            if flat_entities is None
            else FlatEncoder(obs_features, flat_entities, embed)
        )
        self.fc = nn.Linear(embed + (agent_ids or 0), hidden)
        self.rnn = nn.GRUCell(hidden, hidden)
        self.head = nn.Linear(hidden, n_outputs)

    def initial_state(self, batch: int, agents: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, agents, self.hidden, device=device)

    def encode(self, obs: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
        """The feed-forward part; it runs over any leading dims (e.g. all time steps at once)."""
        x = self.encoder(obs, obs_mask)  # [..., A, embed]
        if self.agent_ids is not None:
            x = torch.cat([x, slot_one_hots(x, self.agent_ids)], -1)
        return F.relu(self.fc(x))

    def step_hidden(self, x: torch.Tensor, h: torch.Tensor, agent_mask: torch.Tensor) -> torch.Tensor:
        """One GRU step: x, h [B, A, H] -> new h, zero for absent agents."""
        h = self.rnn(x.flatten(0, -2), h.flatten(0, -2)).view_as(h)
        return torch.where(agent_mask.unsqueeze(-1), h, 0.0)

    def output(self, h: torch.Tensor, agent_mask: torch.Tensor) -> torch.Tensor:
        """The head on recurrent states [..., A, H] -> [..., A, n_outputs], zero for absent agents."""
        return torch.where(agent_mask.unsqueeze(-1), self.head(h), 0.0)

    def recur(
        self, x: torch.Tensor, h: torch.Tensor, agent_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: x, h [B, A, H] -> outputs [B, A, n_outputs], new h."""
        h = self.step_hidden(x, h, agent_mask)
        return self.output(h, agent_mask), h

    def forward(self, obs, obs_mask, agent_mask, h) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for a batch of envs: obs [B, A, E, F] -> outputs [B, A, n_outputs], new h."""
        return self.recur(self.encode(obs, obs_mask), h, agent_mask)

    def unroll_hidden(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor,
                      h0: torch.Tensor | None = None) -> torch.Tensor:
        """Recurrent states of whole episodes from a zero state (or of sequences from `h0`
        [B, A, H], see `unroll_gru`): obs [B, T, A, E, F] -> [B, T, A, H]."""
        # One batched encoder pass; only the GRU walks the time axis.
        return unroll_gru(self.rnn, self.encode(obs, obs_mask), agent_mask, h0)

    def unroll(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor,
               h0: torch.Tensor | None = None) -> torch.Tensor:
        """Whole episodes from a zero state (or sequences from `h0`): obs [B, T, A, E, F] ->
        outputs [B, T, A, n_outputs]."""
        return self.output(self.unroll_hidden(obs, obs_mask, agent_mask, h0), agent_mask)


def slot_one_hots(x: torch.Tensor, width: int) -> torch.Tensor:
    """PyMARL's `obs_agent_id`: each agent's slot index, one-hot over `width` slots, shaped like
    x [..., A, ·] -> [..., A, width]."""
    slots = x.shape[-2]
    if slots > width:
        raise ValueError(f"the agent-id input has {width} slots, got {slots} agents")
    ids = torch.eye(slots, width, dtype=x.dtype, device=x.device)
    return ids.expand(*x.shape[:-1], width)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [..., K, D] over the rows where mask [..., K] is True (0 when none is)."""
    total = torch.where(mask.unsqueeze(-1), x, 0.0).sum(-2)
    return total / mask.sum(-1, keepdim=True).clamp(min=1)


class StateContext(nn.Module):
    """The input of a hypernetwork: the state entity list -> one context row per agent and a
    pooled summary of the whole state.

    Every entity is embedded (ReLU(Linear)) and attends over the present entities, so the
    rows see the whole team whatever its size. Agents come first in the state, in slot order
    (the convention of every backend), so the first A rows are the agents' contexts.
    """

    def __init__(self, state_features: int, embed: int, heads: int) -> None:
        super().__init__()
        self.entity = nn.Linear(state_features, embed)
        self.attention = EntityAttention(embed, heads)

    def forward(
        self, state: torch.Tensor, state_mask: torch.Tensor, n_agents: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.relu(self.entity(state))
        context = F.relu(self.attention(z, z, state_mask))
        return context[..., :n_agents, :], masked_mean(context, state_mask)
