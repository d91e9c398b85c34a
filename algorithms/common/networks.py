"""Entity-attention networks whose weights do not depend on the number of agents or entities.

Masks follow the harness polarity everywhere: True = the entity exists / is visible.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

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
        return self.attend(queries, self.keys_values(entities), [mask])[0]

    def keys_values(self, entities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of entities [..., K, D], split into heads [..., heads, K, D / heads]:
        computed once, they serve every `attend` over the same entities."""
        return self._split(self.key(entities)), self._split(self.value(entities))

    def attend(self, queries: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor],
               masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """`forward` of queries [..., Q, D] over the entities of `keys_values`, once per mask
        ([..., K] or [..., Q, K]); the masks share the logits. One [..., Q, D] per mask."""
        k, v = keys_values
        q = self._split(self.query(queries))
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [..., heads, Q, K]
        outs = []
        for mask in masks:
            per_query = mask.dim() == queries.dim()
            keep = mask.unsqueeze(-3) if per_query else mask[..., None, None, :]
            # A finite fill keeps softmax NaN-free on an all-masked row; multiplying by the mask
            # then zeroes that row's uniform weights (elsewhere masked weights are already 0).
            weights = logits.masked_fill(~keep, torch.finfo(logits.dtype).min).softmax(-1) * keep
            outs.append(self.out((weights @ v).transpose(-2, -3).flatten(-2)))  # [..., Q, D]
        return outs

    def from_first_row(self, entities: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """`forward` with row 0 as the only query, once per mask: entities [M, K, D], each mask
        [M, K] -> one [M, D] per mask (the same values as `forward(entities[:, :1], entities,
        mask)`, up to rounding).

        With one query the key and value projections fold into the query side: the logit of
        head h is <W_q,h x_0, W_k,h x_e> = <W_k,h^T W_q,h x_0, x_e>, and its output
        W_v,h sum_e w_e x_e. So the keys and values of the K rows are never projected: per
        row that is K times fewer multiply-adds in those two layers (E = 10 to 16 rows on
        SMAX), and the masks of several views (REFIL's imagined groups) share every logit.
        """
        rows, _, width = entities.shape
        heads = self.heads
        scale = 1.0 / math.sqrt(width // heads)
        query = self.query(entities[:, 0]).unflatten(-1, (heads, -1)) * scale  # [M, h, d]
        # The query in the entities' own space, per head: [M, h, D].
        folded = torch.einsum("mhd,hdc->mhc", query, self.key.weight.unflatten(0, (heads, -1)))
        logits = torch.bmm(folded, entities.transpose(1, 2))  # [M, h, K]
        keep = torch.stack(list(masks)).unsqueeze(-2)  # [V, M, 1, K]
        # As in `forward`: a finite fill, then the mask zeroes an all-masked row's weights.
        weights = logits.masked_fill(~keep, torch.finfo(logits.dtype).min).softmax(-1) * keep  # [V, M, h, K]
        pooled = torch.bmm(weights.transpose(0, 1).flatten(1, 2), entities)  # [M, V*h, D]
        pooled = pooled.unflatten(1, (len(masks), heads))  # [M, V, h, D]
        mixed = torch.einsum("mvhc,hdc->vmhd", pooled, self.value.weight.unflatten(0, (heads, -1)))
        return list(self.out(mixed.flatten(-2)).unbind(0))


def computing_in(x: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `dtype` (bfloat16) on x's device for the block, or nothing for None. The
    entity encoders' matrix products are most of a learner's arithmetic; the rest (GRU, heads,
    mixing, losses) stays in float32, and so do their outputs."""
    return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def set_compute_dtype(module: nn.Module, dtype: torch.dtype | None) -> None:
    """Run every entity encoder and state context inside `module` in `dtype` (None: float32)."""
    for m in module.modules():
        if isinstance(m, EntityEncoder | StateContext):
            m.compute_dtype = dtype


class EntityEncoder(nn.Module):
    """One agent's entity list -> one vector: row 0 (the agent itself) attends over all rows.

    The agent's own row enters only as the attention query, so two agents that see the
    same set of entities start out with the same vector (attention is near uniform at
    initialisation) and must learn sharp attention before they can act differently.
    `self_residual` adds the embedded own row to the attention output, a direct path for
    what the agent is (its unit type), as an MLP on the observation would have.
    """

    compute_dtype: torch.dtype | None = None  # see `set_compute_dtype`

    def __init__(self, in_features: int, embed: int, heads: int, self_residual: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, embed)
        self.attention = EntityAttention(embed, heads)
        self.self_residual = self_residual

    def forward(self, entities: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.views(entities, [mask])[0]

    def views(self, entities: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The encoding of entities [..., E, F] under each of `masks` ([..., E] each), sharing
        the embedding and the attention logits between them: one [..., D] per mask."""
        lead = entities.shape[:-2]
        with computing_in(entities, self.compute_dtype):
            x = F.relu(self.embed(entities.reshape(-1, *entities.shape[-2:])))  # [M, E, D]
            outs = self.attention.from_first_row(x, [m.reshape(-1, m.shape[-1]) for m in masks])
            if self.self_residual:
                outs = [out + x[:, 0] for out in outs]
        return [out.to(entities.dtype).view(*lead, -1) for out in outs]


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

    def views(self, entities: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """`forward` under each of `masks` (nothing to share: each view hides other rows)."""
        return [self(entities, mask) for mask in masks]


def unroll_gru(cell: nn.GRUCell, x: torch.Tensor, present: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """A GRU cell over time: inputs x [B, T, A, H_in], agent mask [B, T, A] -> states
    [B, T, A, H]; an absent agent's state is zero, and it starts again from zero when it is
    next present. An agent present at step 0 starts from `h0` [B, A, H] (default zero), as a
    sequence cut out of a longer one goes on from the state it was cut at.

    So every maximal run of steps in which an agent is present is a GRU sequence of its own,
    and nothing else is computed: ATen's multi-step GRU walks those runs as one packed batch
    in C++ (`packed_gru`), with the cell's own weights. Stepping the cell from Python costs
    one round of dispatch per step and op, the larger part of a small network's time;
    padding and absent agents would cost compute too.
    """
    if bool(present.all()):
        return _fused_gru(cell, x, h0)
    if not bool(present.any()):
        return x.new_zeros(*present.shape, cell.hidden_size)
    packing = RunPacking.of(present)
    return packing.scatter(packed_gru(cell, packing.gather(x), packing, h0))


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


class RunPacking(NamedTuple):
    """The present agent-steps of a mask [B, T, A], in the order ATen's packed GRU wants them
    (as `nn.utils.rnn.PackedSequence` packs sequences): every maximal run of presence is a
    sequence; time-major, longest run first, `batch_sizes[k]` runs still going at step k.

    Networks that compute only on present agent-steps gather their inputs with `gather`, run
    the GRU with `packed_gru` and put the results back with `scatter` (zero elsewhere)."""

    order: torch.Tensor  # [N] flat [B*T*A] index of every present agent-step, in packed order
    batch_sizes: torch.Tensor  # [steps] CPU int64, as ATen wants them
    run_agent: torch.Tensor  # [runs] in packed order: the flat [B*A] index of its agent when the run begins at step 0, else -1
    shape: tuple[int, int, int]  # (B, T, A)

    @classmethod
    def of(cls, present: torch.Tensor) -> RunPacking:
        """The packing of a mask [B, T, A] with at least one present entry."""
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
        run_agent = np.full(len(lengths), -1, np.int64)
        run_agent[rank] = np.where(t[first] == 0, b[first] * agents + a[first], -1)
        device = present.device
        return cls(torch.from_numpy(order).to(device), torch.from_numpy(batch_sizes),
                   torch.from_numpy(run_agent).to(device), (batch, steps, agents))

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, A, ...] -> its present entries [N, ...], in packed order."""
        return x.flatten(0, 2).index_select(0, self.order)

    def scatter(self, rows: torch.Tensor) -> torch.Tensor:
        """Packed entries [N, ...] -> [B, T, A, ...], zero where absent."""
        out = rows.new_zeros(math.prod(self.shape), *rows.shape[1:]).index_copy(0, self.order, rows)
        return out.view(*self.shape, *rows.shape[1:])


def packed_gru(cell: nn.GRUCell, data: torch.Tensor, packing: RunPacking, h0: torch.Tensor | None) -> torch.Tensor:
    """The states [N, H] of the runs of `packing` from their inputs `data` [N, H_in] (packed
    order); runs that begin at step 0 go on from h0 [B, A, H] when given, the others (and
    every run without h0) start from zero."""
    if h0 is None:
        start = data.new_zeros(int(packing.batch_sizes[0]), cell.hidden_size)
    else:
        rows = torch.cat([h0.flatten(0, 1), h0.new_zeros(1, h0.shape[-1])])
        start = rows[packing.run_agent]
    if torch.is_grad_enabled():
        return _packed_gru_steps(cell, data, packing.batch_sizes.tolist(), start)
    # torch.gru(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional)
    states, _ = torch.gru(data, packing.batch_sizes, start.unsqueeze(0), _gru_weights(cell), True, 1, 0.0,
                          False, False)
    return states


def _packed_gru_steps(cell: nn.GRUCell, data: torch.Tensor, sizes: list[int], start: torch.Tensor) -> torch.Tensor:
    """`packed_gru` stepped from Python, for training. ATen's packed GRU takes each step's rows
    with `narrow`, whose backward writes a gradient the size of the whole input at every step:
    O(steps x rows), most of a training step's GRU time at 100-step episodes. Here the input
    projection is one matrix product split by step (one backward copy in all), and each step
    runs the cell's arithmetic (PyTorch's GRU equations) on its prefix of still-running runs."""
    hidden = cell.hidden_size
    inputs = F.linear(data, cell.weight_ih, cell.bias_ih).split(sizes)
    h, states = start, []
    for x, size in zip(inputs, sizes, strict=True):
        h = h[:size]  # runs are sorted longest first: those still going are a prefix
        gh = F.linear(h, cell.weight_hh, cell.bias_hh)
        reset, update = torch.sigmoid(x[:, : 2 * hidden] + gh[:, : 2 * hidden]).chunk(2, dim=1)
        new = torch.tanh(x[:, 2 * hidden :] + reset * gh[:, 2 * hidden :])
        h = new + update * (h - new)
        states.append(h)
    return torch.cat(states)


class RecurrentAgent(nn.Module):
    """Entity encoder -> ReLU(Linear) -> GRUCell -> Linear head (AQMIX/REFIL agent).

    Shared by all agents; absent agents (agent_mask False) get zero outputs and a zero
    recurrent state, so whatever sits in their slots cannot leak anywhere. The encoder is
    entity attention, or with `flat_entities` set a `FlatEncoder` over that many rows. With
    `agent_ids` set, each agent's slot index (one-hot, that many slots) joins the encoding, as
    PyMARL's agents read it: parameter sharing with a way to tell the agents apart.

    Only present agents are computed: acting and unrolling gather their rows, run the
    network on them and put the outputs back. On SMAX a third to a half of the agent slots of
    a batch of episodes are absent (smaller teams, dead units, steps after an episode's end).
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
        self.encoder: EntityEncoder | FlatEncoder = (
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
        """The feed-forward part over obs [..., A, E, F] (any leading dims, e.g. all time steps
        at once) -> [..., A, H]."""
        return self.encode_views(obs, [obs_mask], self._slots(obs_mask[..., 0]), obs.shape[-3])[0]

    def encode_views(self, obs: torch.Tensor, masks: Sequence[torch.Tensor],
                     slots: torch.Tensor | None = None, agents: int = 0) -> list[torch.Tensor]:
        """The feed-forward part of rows obs [..., E, F] under each of `masks` [..., E] (one
        [..., H] each). With agent ids, `slots` [...] are the rows' agent slots, out of
        `agents` slots."""
        outs = self.encoder.views(obs, masks)
        if self.agent_ids is not None:
            if slots is None or agents > self.agent_ids:
                raise ValueError(f"the agent-id input has {self.agent_ids} slots, got {agents} agents")
            ids = F.one_hot(slots, self.agent_ids).to(outs[0].dtype)
            outs = [torch.cat([out, ids], -1) for out in outs]
        return [F.relu(self.fc(out)) for out in outs]

    def _slots(self, agent_mask: torch.Tensor) -> torch.Tensor | None:
        """The agent slot of every entry of a mask [..., A] (None without agent ids)."""
        if self.agent_ids is None:
            return None
        return torch.arange(agent_mask.shape[-1], device=agent_mask.device).expand(agent_mask.shape)

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
        """One step for a batch of envs: obs [B, A, E, F] -> outputs [B, A, n_outputs], new h;
        computed for the present agents only."""
        if bool(agent_mask.all()):
            return self.recur(self.encode(obs, obs_mask), h, agent_mask)
        batch, agents = agent_mask.shape
        rows = agent_mask.flatten().nonzero().squeeze(1)
        slots = self._slots(agent_mask)
        x = self.encode_views(obs.flatten(0, 1)[rows], [obs_mask.flatten(0, 1)[rows]],
                              None if slots is None else slots.flatten()[rows], agents)[0]
        new_rows = self.rnn(x, h.flatten(0, 1)[rows])
        new_h = h.new_zeros(batch * agents, self.hidden).index_copy(0, rows, new_rows)
        out = self.head(new_rows)
        outputs = out.new_zeros(batch * agents, out.shape[-1]).index_copy(0, rows, out)
        return outputs.view(batch, agents, -1), new_h.view(batch, agents, -1)

    def packed_states(self, obs: torch.Tensor, masks: Sequence[torch.Tensor], agent_mask: torch.Tensor,
                      h0: torch.Tensor | None = None) -> tuple[list[torch.Tensor], RunPacking]:
        """Recurrent states of whole episodes (or of sequences from h0 [B, A, H], see
        `unroll_gru`) under each of `masks` [B, T, A, E], for the present agent-steps only:
        one [N, H] per mask, in the order of agent_mask's `RunPacking` (also returned).
        agent_mask [B, T, A] must have a present entry."""
        packing = RunPacking.of(agent_mask)
        slots = self._slots(agent_mask)
        inputs = self.encode_views(packing.gather(obs), [packing.gather(m) for m in masks],
                                   None if slots is None else packing.gather(slots), agent_mask.shape[-1])
        return [packed_gru(self.rnn, x, packing, h0) for x in inputs], packing

    def unroll_hidden_views(self, obs: torch.Tensor, masks: Sequence[torch.Tensor], agent_mask: torch.Tensor,
                            h0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`unroll_hidden` under each of `masks` [B, T, A, E] (REFIL's imagined groups, MIPI's
        own-row view): the views share the embedding and attention logits of every row."""
        if bool(agent_mask.all()):
            inputs = self.encode_views(obs, masks, self._slots(agent_mask), agent_mask.shape[-1])
            return [_fused_gru(self.rnn, x, h0) for x in inputs]
        if not bool(agent_mask.any()):
            return [obs.new_zeros(*agent_mask.shape, self.hidden) for _ in masks]
        states, packing = self.packed_states(obs, masks, agent_mask, h0)
        return [packing.scatter(s) for s in states]

    def unroll_views(self, obs: torch.Tensor, masks: Sequence[torch.Tensor], agent_mask: torch.Tensor,
                     h0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`unroll` under each of `masks` [B, T, A, E], sharing what the views can share (see
        `unroll_hidden_views`): one [B, T, A, n_outputs] per mask."""
        if bool(agent_mask.all()) or not bool(agent_mask.any()):
            return [self.output(h, agent_mask) for h in self.unroll_hidden_views(obs, masks, agent_mask, h0)]
        states, packing = self.packed_states(obs, masks, agent_mask, h0)
        return [packing.scatter(self.head(s)) for s in states]

    def unroll_hidden(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor,
                      h0: torch.Tensor | None = None) -> torch.Tensor:
        """Recurrent states of whole episodes from a zero state (or of sequences from `h0`
        [B, A, H], see `unroll_gru`): obs [B, T, A, E, F] -> [B, T, A, H], zero where absent."""
        return self.unroll_hidden_views(obs, [obs_mask], agent_mask, h0)[0]

    def unroll(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor,
               h0: torch.Tensor | None = None) -> torch.Tensor:
        """Whole episodes from a zero state (or sequences from `h0`): obs [B, T, A, E, F] ->
        outputs [B, T, A, n_outputs], zero where absent."""
        return self.unroll_views(obs, [obs_mask], agent_mask, h0)[0]


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

    compute_dtype: torch.dtype | None = None  # see `set_compute_dtype`

    def __init__(self, state_features: int, embed: int, heads: int) -> None:
        super().__init__()
        self.entity = nn.Linear(state_features, embed)
        self.attention = EntityAttention(embed, heads)

    def forward(
        self, state: torch.Tensor, state_mask: torch.Tensor, n_agents: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        agents, pooled, _ = self.with_agent_views(state, state_mask, n_agents, [])
        return agents, pooled

    def with_agent_views(
        self, state: torch.Tensor, state_mask: torch.Tensor, n_agents: int, agent_masks: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """`forward`, plus the agents' context rows when agent i may attend only to the entities
        of `agent_masks` [..., A, N] (one [..., A, D] per mask: REFIL's imagined groups). All of
        them share the entity embedding and the keys and values."""
        with computing_in(state, self.compute_dtype):
            z = F.relu(self.entity(state))
            keys_values = self.attention.keys_values(z)
            context = F.relu(self.attention.attend(z, keys_values, [state_mask])[0]).to(state.dtype)
            views = self.attention.attend(z[..., :n_agents, :], keys_values, agent_masks) if agent_masks else []
        return context[..., :n_agents, :], masked_mean(context, state_mask), [F.relu(v).to(state.dtype) for v in views]
