"""OPT-D: interaction-pattern disentangling (Liu et al., seed 001; algorithms.md §3.2).

QMIX whose agent and mixer read their entity lists through OPT-D layers. One layer turns
entity embeddings X [..., M, d] into N "interaction prototypes", each a row-sparse attention
map P_k = sparsemax(Q_k K_k^T / sqrt d) with its own Q/K/V weights, and recombines them
with aggregator weights w = softmax(Linear(mean of X)) in the simplex: Y = sum_k w_k P_k V_k.
Two auxiliary losses shape the prototypes: contrastive disagreement (L_CD, InfoNCE that
pushes the N prototype outputs of every entity apart) and a conditional-MI bound (L_CMI,
KL(w_t || q_psi(h_{t-1}, mean X_t)), which ties each agent's aggregator to its history).

    L = L_TD + kappa_CD L_CD + kappa_CMI L_CMI      (kappa_CD = 0.5, kappa_CMI = 0.1)

Choices the paper leaves open ([R] in algorithms.md), as made here:

- Masking: masked keys get logit -inf before the sparsemax; a row whose keys are all masked
  (an absent agent's list) returns zeros, not NaN. Masked entity rows are zeroed at the
  input, so whatever they hold can reach nothing, not even as 0 * inf.
- Entity embedding: one shared ReLU(Linear) per entity row (as REFIL's and the harness's
  attention agents), width d = 32.
- Stacking (K = 2, "transformer-style"): pre-norm transformer blocks,
  X <- X + OPT(LN(X)); X <- X + FFN(LN(X)), FFN = Linear(d, ff) -> ReLU -> Linear(ff, d),
  ff = 64, no final norm (`opt_norm="post"` gives Vaswani et al.'s post-norm blocks, the
  paper's reference [48]). OPT has no output projection (the paper's Y is used as is).
  Every layer has its own aggregator, computed from that layer's (normalised) input.
- Mixer: `AttentionQMixer`'s monotonic hypernetwork heads on the OPT-D context of the state
  entity list, scaled by `mixer_context_scale` = 0.1 (see `OPTDQMixer`: at 1 the mixer's
  gain on the utilities is 14x AttentionQMixer's and the Q-values inflated on SMAX).
- Action values: EnvSpec carries no action -> entity map, so every action's value comes
  from a linear head on the agent's own row (row 0), not attack-e from row e.
- Recurrence: with every action read from row 0, an entity-wise GRU's other rows could
  never reach a Q-value (the GRU is row-wise and comes after the OPT-D layers), so the GRU
  runs on the own row only; outputs are identical and it costs 1/E of the entity-wise one.
  Its input is row 0 of the last OPT-D block (no extra ReLU(Linear)), hidden size 64.
- L_CD: per OPT-D layer, the mean over present entity rows (and prototypes) of the
  InfoNCE term, over every layer of agent and mixer, then averaged over those 2K layers (so
  identical prototypes give log N whatever K is). Agent rows count at filled steps for
  present agents and visible entities; mixer rows at filled steps for present state
  entities. With unnormalised dot products the term shrinks as the g_k grow: on normalised
  inputs (|g_k|^2 about d/3 at initialisation) it starts near 0.01, far below log N.
- L_CMI: q_psi is one small MLP per agent layer, [h_{t-1}, mean X_t] -> 64 -> ReLU -> N,
  log-softmax; KL(w || q_psi) is averaged over present agents at filled steps and over the
  K layers. No stop-gradient (the paper mentions none): it trains the aggregators, q_psi,
  the encoder and, through h_{t-1}, the GRU. q_psi lives inside the agent module, so it is
  checkpointed and optimised with it; acting never calls it.
- Targets as the harness's QMIX: double Q (PyMARL's default), hard copies every 200
  episodes, one-step TD.

Cost: only present agents' entity lists are encoded (absent agents and the steps after an
episode ends are skipped), everything is batched over agents, entities and time (only the
GRU walks time), and the prototype products are reassociated (see `OPTDLayer`). On SMAX
3-5 units one gradient step costs less than the harness's QMIX (REFIL-sized attention).

Ablations (the paper's): `opt_d_no_sparse` (softmax instead of sparsemax), `opt_d_no_cd`
(kappa_CD = 0), `opt_d_no_cmi` (kappa_CMI = 0). A zero coefficient drops the term from the
loss (it is still reported, detached, as a metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from entmax import sparsemax
from torch import nn

from algorithms.common.batch import NOW, taken_values
from algorithms.common.networks import masked_mean
from algorithms.common.torch_utils import masked_average
from algorithms.common.variants import ablation
from algorithms.value_decomposition import EpisodeLearnerConfig, ValueDecomposition
from harness.api import tunable
from harness.registry import register_algorithm

# ---------------------------------------------------------------------------------------------
# The OPT-D layer


def masked_sparsemax(logits: torch.Tensor, keep: torch.Tensor, sparse: bool = True) -> torch.Tensor:
    """Row-wise sparsemax (softmax when `sparse` is False) over the keys where `keep` is True.

    logits [..., K]; keep broadcastable to it. Masked keys get logit -inf, hence exactly zero
    weight and zero gradient; a row with no key left returns zeros (not NaN), with zero
    gradient.
    """
    keep = keep.expand_as(logits)
    any_key = keep.any(-1, keepdim=True)
    z = logits.masked_fill(~keep, float("-inf"))
    z = torch.where(any_key, z, 0.0)  # all-masked rows: a finite dummy, zeroed below
    p = sparsemax(z, dim=-1) if sparse else z.softmax(-1)
    return torch.where(any_key, p, 0.0)


class LayerOutput(NamedTuple):
    """What one OPT-D layer exposes for the auxiliary losses."""

    g: torch.Tensor  # [..., M, N, d]: prototype k's output for entity row e, (P_k V_k)[e]
    log_w: torch.Tensor  # [..., N]: log aggregator weights
    xbar: torch.Tensor  # [..., d]: the layer input's mean over present entities


class OPTDLayer(nn.Module):
    """Y = sum_k w_k P_k V_k with P_k = sparsemax(Q_k K_k^T / sqrt d) over present keys and
    w = softmax(Linear(mean of X over present entities)) (algorithms.md §3.2).

    Each prototype owns W_Q^k, W_K^k, W_V^k (d x d). The products are reassociated for
    speed, with the same function and gradients: Q_k K_k^T = (X W_Q^k W_K^k^T) X^T and
    P_k V_k = (P_k X) W_V^k, laid out query-major ([rows, M, N, .]) so that the batched
    matrix products need no copies.
    """

    def __init__(self, dim: int, prototypes: int, sparse: bool = True) -> None:
        super().__init__()
        self.dim, self.prototypes, self.sparse = dim, prototypes, sparse
        bound = 1 / math.sqrt(dim)  # nn.Linear's default initialisation
        self.w_q, self.w_k, self.w_v = (
            nn.Parameter(torch.empty(prototypes, dim, dim).uniform_(-bound, bound)) for _ in range(3)
        )
        self.aggregator = nn.Linear(dim, prototypes)

    def prototype_maps(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [R, M, d], mask [R, M] -> P [R, M, N, M]: row e of prototype k is P[:, e, k]."""
        rows, m, d = x.shape
        bilinear = (self.w_q @ self.w_k.transpose(-1, -2)).transpose(0, 1).reshape(d, -1)  # [d, N d]
        xa = (x @ bilinear).view(rows, m * self.prototypes, d)  # (X W_Q^k W_K^k^T)[e] at [e * N + k]
        logits = torch.bmm(xa, x.transpose(1, 2)).view(rows, m, self.prototypes, m) / math.sqrt(d)
        return masked_sparsemax(logits, mask.view(rows, 1, 1, m), self.sparse)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, LayerOutput]:
        """x [..., M, d], mask [..., M] (True = present) -> Y [..., M, d] and the extras."""
        *lead, m, d = x.shape
        flat, flat_mask = x.reshape(-1, m, d), mask.reshape(-1, m)
        p = self.prototype_maps(flat, flat_mask)
        px = torch.bmm(p.view(-1, m * self.prototypes, m), flat)  # (P_k X)[e] at [e * N + k]
        g = torch.einsum("rkc,kcd->rkd", px.view(-1, self.prototypes, d), self.w_v).view(*lead, m, self.prototypes, d)
        xbar = masked_mean(x, mask)
        log_w = F.log_softmax(self.aggregator(xbar), -1)
        y = (g * log_w.exp()[..., None, :, None]).sum(-2)
        return y, LayerOutput(g, log_w, xbar)


@dataclass(frozen=True)
class OPTDShape:
    """Sizes and variants of an OPT-D encoder (the paper's N, K, d; the rest [R])."""

    dim: int = 32  # d
    prototypes: int = 4  # N
    layers: int = 2  # K
    ff_hidden: int = 64  # feed-forward width of each block
    sparse: bool = True  # sparsemax (False: softmax)
    norm: Literal["pre", "post"] = "pre"  # where each block's LayerNorms sit


class OPTDBlock(nn.Module):
    """Transformer block around an OPT-D layer [R], pre-norm by default:

        pre:  X <- X + OPT(LN(X));  X <- X + FFN(LN(X))      (no final norm)
        post: X <- LN(X + OPT(X));  X <- LN(X + FFN(X))      (Vaswani et al.)

    Pre-norm keeps an identity path from the embedding to the output, the ordering that
    stabilises transformers in RL (Parisotto et al. 2020, GTrXL), and keeps the context rows
    at the scale of the entity embedding, as in `AttentionQMixer`.
    """

    def __init__(self, shape: OPTDShape) -> None:
        super().__init__()
        self.pre = shape.norm == "pre"
        self.opt = OPTDLayer(shape.dim, shape.prototypes, shape.sparse)
        self.norm1 = nn.LayerNorm(shape.dim)
        self.ff = nn.Sequential(nn.Linear(shape.dim, shape.ff_hidden), nn.ReLU(), nn.Linear(shape.ff_hidden, shape.dim))
        self.norm2 = nn.LayerNorm(shape.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, LayerOutput]:
        if self.pre:
            y, out = self.opt(self.norm1(x), mask)
            x = x + y
            return x + self.ff(self.norm2(x)), out
        y, out = self.opt(x, mask)
        x = self.norm1(x + y)
        return self.norm2(x + self.ff(x)), out


class OPTDEncoder(nn.Module):
    """Entity list [..., M, F] -> ReLU(Linear) embedding -> K OPT-D blocks -> [..., M, d].

    Every operation is entity-wise except the masked attention, so no weight depends on M.
    """

    def __init__(self, in_features: int, shape: OPTDShape) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, shape.dim)
        self.blocks = nn.ModuleList(OPTDBlock(shape) for _ in range(shape.layers))

    def forward(self, entities: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[LayerOutput]]:
        x = F.relu(self.embed(torch.where(mask.unsqueeze(-1), entities, 0.0)))
        outs = []
        for block in self.blocks:
            x, out = block(x, mask)
            outs.append(out)
        return x, outs


# ---------------------------------------------------------------------------------------------
# Auxiliary losses


def contrastive_disagreement(g: torch.Tensor) -> torch.Tensor:
    """InfoNCE over prototypes with unnormalised dot products, per entity row.

    g [..., M, N, d] -> [..., M]: mean over k of -g_k.g_k + log sum_j exp(g_k.g_j), where
    g_k is prototype k's output for that row. Always >= 0; log N when all g_k are equal.
    """
    sim = g @ g.transpose(-1, -2)  # [..., M, N, N]
    return (torch.logsumexp(sim, -1) - sim.diagonal(dim1=-2, dim2=-1)).mean(-1)


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ---------------------------------------------------------------------------------------------
# Networks


class AgentExtras(NamedTuple):
    rows: torch.Tensor  # [B, T, A] bool: the present agents, whose entity lists were encoded
    layers: list[LayerOutput]  # per OPT-D layer, for those rows only (leading dim R = rows.sum())
    h_prev: torch.Tensor  # [B, T, A, H]: the GRU state each step starts from (h_{t-1})


class OPTDAgent(nn.Module):
    """Utility network: entity embedding -> K OPT-D blocks -> GRUCell on the own row -> Q-values.

    Shared by all agents. Only present agents' entity lists are encoded (absent agents and
    the padding after an episode ends cost nothing); absent agents get zero outputs and a
    zero recurrent state. `posterior` holds q_psi, one per layer, used only by L_CMI.
    """

    def __init__(self, obs_features: int, n_actions: int, shape: OPTDShape = OPTDShape(), hidden: int = 64,
                 posterior_hidden: int = 64):
        super().__init__()
        dim, self.dim, self.hidden = shape.dim, shape.dim, hidden
        self.encoder = OPTDEncoder(obs_features, shape)
        self.rnn = nn.GRUCell(dim, hidden)
        self.head = nn.Linear(hidden, n_actions)
        self.posterior = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden + dim, posterior_hidden), nn.ReLU(),
                          nn.Linear(posterior_hidden, shape.prototypes))
            for _ in range(shape.layers)
        )

    def initial_state(self, batch: int, agents: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, agents, self.hidden, device=device)

    def encode(
        self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[LayerOutput]]:
        """The feed-forward part over any leading dims [...] (e.g. all time steps at once):
        own-row features [..., d] (zero for absent agents) and the layers' extras for the
        present agents' rows, in `agent_mask` order."""
        x, layers = self.encoder(obs[agent_mask], obs_mask[agent_mask])
        own = x.new_zeros(*agent_mask.shape, self.dim).index_put((agent_mask,), x[:, 0])
        return own, layers

    def recur(self, x: torch.Tensor, h: torch.Tensor, agent_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: x [B, A, d], h [B, A, H] -> Q-values [B, A, U], new h."""
        h = self.rnn(x.flatten(0, -2), h.flatten(0, -2)).view_as(h)
        present = agent_mask.unsqueeze(-1)
        h = torch.where(present, h, 0.0)
        return torch.where(present, self.head(h), 0.0), h

    def forward(self, obs, obs_mask, agent_mask, h) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for a batch of envs: obs [B, A, E, F] -> Q-values [B, A, U], new h."""
        return self.recur(self.encode(obs, obs_mask, agent_mask)[0], h, agent_mask)

    def unroll_extras(
        self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor
    ) -> tuple[torch.Tensor, AgentExtras]:
        """Whole episodes from a zero state: obs [B, T, A, E, F] -> Q-values [B, T, A, U] and the
        extras of every layer. One batched encoder pass; only the GRU walks the time axis."""
        x, layers = self.encode(obs, obs_mask, agent_mask)
        h = self.initial_state(obs.shape[0], obs.shape[2], obs.device)
        outputs, h_prev = [], []
        # unbind, not x[:, t]: the backward of T slices would write T zero-filled copies of x.
        for x_t, present_t in zip(x.unbind(1), agent_mask.unbind(1), strict=True):
            h_prev.append(h)
            out, h = self.recur(x_t, h, present_t)
            outputs.append(out)
        return torch.stack(outputs, dim=1), AgentExtras(agent_mask, layers, torch.stack(h_prev, dim=1))

    def unroll(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor) -> torch.Tensor:
        return self.unroll_extras(obs, obs_mask, agent_mask)[0]

    def posterior_log_probs(self, layer: int, h_prev: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        """log q_psi(w | h_{t-1}, xbar_t) for one layer: [..., H], [..., d] -> [..., N]."""
        return F.log_softmax(self.posterior[layer](torch.cat([h_prev, xbar], -1)), -1)


class OPTDQMixer(nn.Module):
    """QMIX mixer whose hypernetworks read the state entity list through OPT-D layers.

    The same construction as `AttentionQMixer` with its entity attention replaced by the
    OPT-D encoder: Q_tot = w2 . ELU(W1^T q + b1) + V, W1 = |H1| with row i from agent i's
    context row (agents come first in the state, in slot order), w2 = |H2|, b1 and V (a
    2-layer ReLU net) from the masked mean of the context rows. dQ_tot/dq_i >= 0 for every i;
    absent agents count as q_i = 0 with zero weight.

    The heads read the context rows times `context_scale` [R]. At 1 the OPT-D context (rms
    about 0.6) makes the mixer's gain dQ_tot/dq_i about 2 at initialisation, 14 times
    `AttentionQMixer`'s (whose attention context has rms about 0.06), and under RMSprop every
    step moves the heads' outputs in proportion to their input's scale: on SMAX (returns at
    most 2) the Q-values then inflated steadily (Q_tot about 6 after 100k steps) while the
    greedy return fell to that of doing nothing. 0.1 brings the gain and the heads' step size
    back to AttentionQMixer's range; the heads' weights do not depend on it.
    """

    def __init__(self, state_features: int, embed: int = 32, shape: OPTDShape = OPTDShape(),
                 context_scale: float = 0.1):
        super().__init__()
        dim, self.context_scale = shape.dim, context_scale
        self.encoder = OPTDEncoder(state_features, shape)
        self.w1 = nn.Linear(dim, embed)
        self.b1 = nn.Linear(dim, embed)
        self.w2 = nn.Linear(dim, embed)
        self.value = nn.Sequential(nn.Linear(dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward_extras(self, q, state, state_mask, agent_mask) -> tuple[torch.Tensor, list[LayerOutput]]:
        """q [..., A], state [..., N, G] -> Q_tot [...] and the OPT-D layers' extras."""
        context, layers = self.encoder(state, state_mask)
        context = context * self.context_scale
        agents, pooled = context[..., : q.shape[-1], :], masked_mean(context, state_mask)
        w1 = torch.where(agent_mask.unsqueeze(-1), self.w1(agents).abs(), 0.0)  # [..., A, embed]
        q = torch.where(agent_mask, q, 0.0)
        hidden = F.elu((q.unsqueeze(-2) @ w1).squeeze(-2) + self.b1(pooled))
        q_tot = (hidden * self.w2(pooled).abs()).sum(-1) + self.value(pooled).squeeze(-1)
        return q_tot, layers

    def forward(self, q, state, state_mask, agent_mask) -> torch.Tensor:
        return self.forward_extras(q, state, state_mask, agent_mask)[0]


# ---------------------------------------------------------------------------------------------
# The learner


@dataclass
class OPTDConfig(EpisodeLearnerConfig):
    """The paper's settings (§5): N = 4 prototypes, K = 2 layers, d = 32, kappa_CD = 0.5,
    kappa_CMI = 0.1; PyMARL's learner (RMSprop 5e-4 with smoothing 0.99, batch 32 episodes,
    buffer 5000, targets every 200 episodes, gamma 0.99, epsilon 1 -> 0.05 over 50k steps; the
    paper uses Adam on corridor and 6h_vs_8z, and anneals epsilon over 500k steps on its
    multi-task maps). The agent has no attention options: its own network sizes follow.
    """

    rnn_hidden: int = 64
    """The agent's GRU state size."""
    mixing_embed: int = 32
    """Width of the QMIX mixing layer."""
    mixer_context_scale: float = 0.1
    """What the mixer's hypernetwork heads read: the OPT-D context of the state entity list times
    this (see `OPTDQMixer`) [R]."""
    opt_dim: int = 32
    """d, the width of the entity embeddings the OPT-D layers work on."""
    opt_prototypes: int = 4
    """N, the interaction prototypes of each layer."""
    opt_layers: int = 2
    """K, the stacked OPT-D layers."""
    opt_ff_hidden: int = 64
    """Feed-forward width of each layer's block [R]."""
    posterior_hidden: int = 64
    """Hidden width of q_psi, the CMI bound's posterior over prototypes [R]."""
    opt_norm: Literal["pre", "post"] = "pre"
    """LayerNorm before ("pre") or after ("post") each block's sublayers [R]."""
    sparse: bool = True
    """Sparsemax prototype weights (False: softmax, the w/o-Sparse ablation)."""
    kappa_cd: float = tunable(0.5, 0.05, 2.0, log=True)
    """Weight of the contrastive-disagreement loss L_CD, which pushes the prototypes' outputs apart."""
    kappa_cmi: float = tunable(0.1, 0.01, 1.0, log=True)
    """Weight of the conditional-MI loss L_CMI, which ties each agent's prototype weights to its
    history."""


@register_algorithm("opt_d")
class OPTD(ValueDecomposition):
    """QMIX with OPT-D layers in agent and mixer, plus the CD and CMI losses."""

    Config: ClassVar[type] = OPTDConfig
    # Not a ValueDecompositionConfig (OPT-D's agent has no attention options); the shared
    # learner reads only the fields both configs have.
    cfg: OPTDConfig  # type: ignore[assignment]

    @property
    def shape(self) -> OPTDShape:
        cfg = self.cfg
        return OPTDShape(cfg.opt_dim, cfg.opt_prototypes, cfg.opt_layers, cfg.opt_ff_hidden, cfg.sparse, cfg.opt_norm)

    def _build_agent(self) -> nn.Module:
        cfg, spec = self.cfg, self.spec
        return OPTDAgent(spec.obs_features, spec.n_actions, self.shape, cfg.rnn_hidden, cfg.posterior_hidden)

    def _build_mixer(self) -> nn.Module:
        return OPTDQMixer(self.spec.state_features, self.cfg.mixing_embed, self.shape, self.cfg.mixer_context_scale)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        q, extras = self.agent.unroll_extras(batch["obs"], batch["obs_mask"], batch["agent_mask"])
        y = self._targets(batch, q)
        # = self._joint_value(self.mixer, q[:, NOW], actions, batch, NOW), keeping the extras
        chosen, mixer_layers = self.mixer.forward_extras(
            taken_values(q[:, NOW], batch["actions"]),
            batch["state"][:, NOW], batch["state_mask"][:, NOW], batch["agent_mask"][:, NOW],
        )
        td, stats = self._td_loss(chosen, y, batch)
        cd = self.cd_loss(batch, extras, mixer_layers)
        cmi = self.cmi_loss(batch, extras)
        loss = td
        if cfg.kappa_cd:
            loss = loss + cfg.kappa_cd * cd
        if cfg.kappa_cmi:
            loss = loss + cfg.kappa_cmi * cmi
        stats.update(td_loss=float(td.detach()), cd_loss=float(cd.detach()), cmi_loss=float(cmi.detach()))
        return loss, stats

    @staticmethod
    def _agent_steps(batch: dict[str, torch.Tensor], extras: AgentExtras) -> torch.Tensor:
        """[R]: which encoded agent rows (present agents, every slot) are at a filled step."""
        last = batch["filled"].new_zeros(batch["filled"].shape[0], 1)  # the final observation slot is no step
        filled = torch.cat([batch["filled"], last], 1)
        return filled.unsqueeze(-1).expand_as(extras.rows)[extras.rows]

    def cd_loss(self, batch: dict[str, torch.Tensor], extras: AgentExtras, mixer_layers: list[LayerOutput]) -> torch.Tensor:
        """L_CD averaged over every OPT-D layer of agent and mixer (each: over present rows)."""
        agent_rows = self._agent_steps(batch, extras).unsqueeze(-1) & batch["obs_mask"][extras.rows]  # [R, E]
        state_rows = batch["filled"].unsqueeze(-1) & batch["state_mask"][:, NOW]  # [B, T, N]
        terms = [masked_average(contrastive_disagreement(out.g), agent_rows) for out in extras.layers]
        terms += [masked_average(contrastive_disagreement(out.g), state_rows) for out in mixer_layers]
        return torch.stack(terms).mean()

    def cmi_loss(self, batch: dict[str, torch.Tensor], extras: AgentExtras) -> torch.Tensor:
        """L_CMI = KL(w_t || q_psi(h_{t-1}, xbar_t)) over present agents at filled steps, per agent layer."""
        steps = self._agent_steps(batch, extras)  # [R]
        h_prev = extras.h_prev[extras.rows]
        terms = []
        for i, out in enumerate(extras.layers):
            log_q = self.agent.posterior_log_probs(i, h_prev, out.xbar)
            terms.append(masked_average(categorical_kl(out.log_w, log_q), steps))
        return torch.stack(terms).mean()


OPTDNoSparse = ablation(OPTD, "opt_d_no_sparse", "OPTDNoSparse", "OPT-D w/o Sparse: softmax prototypes.",
                        sparse=False)
OPTDNoCD = ablation(OPTD, "opt_d_no_cd", "OPTDNoCD", "OPT-D w/o CD loss (kappa_CD = 0).", kappa_cd=0.0)
OPTDNoCMI = ablation(OPTD, "opt_d_no_cmi", "OPTDNoCMI", "OPT-D w/o CMI loss (kappa_CMI = 0).", kappa_cmi=0.0)
