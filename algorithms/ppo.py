"""MAPPO and IPPO (algorithms.md §2.7): PPO with one recurrent entity-attention actor shared
by all agents, so the same weights act in teams of any size.

- Actor: the §1.4 agent network (`RecurrentAgent`) with policy logits as its outputs; a
  softmax over the available actions; samples in training, the argmax at test. Continuous
  actions: the outputs are the means of a tanh-squashed Gaussian with a state-independent
  log-std (`SquashedGaussianPolicy`); tanh(mean) at test.
- Critic: IPPO's `V(tau_i)` is a second recurrent agent network with one output; MAPPO's
  `V(S, i)` attends over the global state entity list with agent i's state row as the query,
  joined with its own observation (Yu et al.'s agent-specific global state) and a GRU of
  its own ([R], see `StateCritic`). Nothing in either critic is needed to act.
- Losses, per agent and step over real entries only (filled steps, present agents): the
  clipped surrogate minus an entropy bonus, and a clipped value loss on normalised returns;
  GAE(gamma, lambda) on denormalised values (`algorithms.common.on_policy`).
- On-policy storage: `observe` collects the runner's episodes; `update` trains on exactly
  the episodes completed since the previous `update` for `epochs` passes, then discards
  them. In continuous rollouts an episode may be in flight at an update: it is trained on
  at the next one, with the log-probabilities of the actions as they were sampled (stored
  with each step), so the PPO ratio is taken against the policy that really acted.

Budget: on-policy methods are charged the same environment steps as off-policy ones (the
runner counts every active env step of the training rollouts, whatever the algorithm does
with them). PPO sees each step in `epochs` passes and then drops it, where replay-based
methods reuse it for thousands of gradient steps; the suites compare at equal env steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.common.checkpoints import Checkpointed
from algorithms.common.exploration import masked_argmax, masked_log_softmax, sample_categorical
from algorithms.common.networks import (
    EntityEncoder,
    FlatEncoder,
    RecurrentAgent,
    StateContext,
    slot_one_hots,
    unroll_gru,
)
from algorithms.common.on_policy import RolloutStore, ValueNormalizer, cut_into_chunks, generalised_advantages
from algorithms.common.replay import Field
from algorithms.common.torch_utils import make_generator, masked_average, seeded, step_tensors
from harness.api import EnvSpec, Step, Transition, tunable
from harness.registry import register_algorithm

# Slices of the observation-slot axis (T+1 slots per T steps): the slot each step acts in.
NOW = slice(0, -1)

# Stored with every step: log pi of the sampled action under the acting policy, and that
# policy's version (the learner's gradient steps when it acted).
BEHAVIOUR_FIELDS = {
    "behaviour_log_pi": Field(("T", "A"), np.float32),
    "policy_version": Field(("T",), np.int64),
}


@dataclass
class PPOConfig:
    """IPPO/MAPPO defaults of PyMARL2 and EPyMARL [C: algorithms.md §2.7; uoe-agents/epymarl
    `config/algs/mappo.yaml`]: Adam lr 5e-4 (EPyMARL's IPPO file has 3e-4), entropy
    coefficient 0.01, 4 epochs over each batch as one mini-batch (Yu et al. [P] use 5-15
    epochs, one mini-batch), clip 0.2 (Yu et al. tune 0.05-0.2), GAE lambda 0.95 and gamma
    0.99 [P: Yu et al.], gradient-norm clip 10, value and advantage normalisation on [P: Yu et
    al.], Adam epsilon 1e-5 [C: marlbenchmark/on-policy `opti_eps`], policy head initialised
    with gain 0.01 [C: PyMARL2 IPPO]. Entity attention 128 / 4 heads / GRU 64 as REFIL's agents.

    Tunable: the learning rate, the entropy coefficient (PPO's temperature) and the clip.
    """

    lr: float = tunable(5e-4, 1e-4, 3e-3, log=True)
    """Adam's learning rate (actor and critic)."""
    entropy_coef: float = tunable(0.01, 1e-4, 0.1, log=True)
    """Weight of the policy entropy bonus: PPO's temperature."""
    clip: float = tunable(0.2, 0.05, 0.3)
    """PPO's ratio clip epsilon (also the value clip's range)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE's lambda."""
    epochs: int = 4
    """Passes over each batch of episodes per update."""
    minibatches: int = 1
    """Mini-batches per epoch: the lanes of episodes (`pack_episodes`) are split into this many."""
    chunk_length: int = 0
    """Truncated backpropagation through time: 0 trains the GRUs on whole lanes of episodes; k > 0
    cuts the lanes into k-step chunks that start from the states of a no-gradient unroll of the
    whole lanes at the start of the update, which bounds the sequential steps of every unroll.
    Off by default: faster but lower win rates where measured (docs/experiments.md)."""
    grad_norm_clip: float = 10.0
    """Global gradient-norm clip, applied to the actor and the critic separately."""
    optim_eps: float = 1e-5
    """Adam's epsilon."""
    value_clip: bool = True
    """Clip the value loss as PPO clips the ratio: the larger of (V - R)^2 and (V_old + clip(V -
    V_old, -clip, clip) - R)^2."""
    value_loss: Literal["mse", "huber"] = "mse"
    """The critic's loss: squared error, or Huber (Yu et al.)."""
    huber_delta: float = 10.0
    """The Huber loss's delta, when value_loss is "huber" (Yu et al.: 10)."""
    value_norm: bool = True
    """The critic regresses normalised returns: running mean and variance over every target seen
    (`ValueNormalizer`, as PyMARL2's and EPyMARL's RunningMeanStd)."""
    advantage_norm: bool = True
    """Normalise the advantages over each batch."""
    policy_head_gain: float = 0.01
    """Initialisation gain of the policy head: near-uniform initial policies (Gaussian: means near
    zero)."""
    log_std_init: float = -0.5
    """Continuous actions: the initial log standard deviation of the policy (std 0.61) [R]."""
    attn_embed: int = 128
    """Width of the entity embedding (the first layer's width with agent_encoder: flat)."""
    attn_heads: int = 4
    """Attention heads of the entity encoders."""
    rnn_hidden: int = 64
    """The GRU state size of actor and critic."""
    agent_encoder: Literal["attention", "flat"] = "attention"
    """The entity encoder: "attention", or "flat", an MLP layer on the concatenated entity rows
    (and, for MAPPO's critic, on the concatenated state rows), as PyMARL's and JaxMARL's PPO
    agents read their inputs: much cheaper, but bound to the task's largest team (see
    `FlatEncoder`)."""
    agent_id: bool = False
    """PyMARL's `obs_agent_id` for the actor and critic: the agent's slot index, one-hot (MAPPO's
    attention critic needs none: agent i reads its own state row). Off by default: slot indices
    mean nothing across team compositions."""

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "entropy_coef": self.entropy_coef >= 0,
            "clip": self.clip > 0,
            "gamma": 0 <= self.gamma <= 1,
            "gae_lambda": 0 <= self.gae_lambda <= 1,
            "epochs": self.epochs >= 1,
            "minibatches": self.minibatches >= 1,
            "chunk_length": self.chunk_length >= 0,
            "grad_norm_clip": self.grad_norm_clip > 0,
            "huber_delta": self.huber_delta > 0,
            "attn_heads": self.attn_heads >= 1 and self.attn_embed % self.attn_heads == 0,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(
                f"invalid {type(self).__name__}: {', '.join(f'{n}={getattr(self, n)!r}' for n in wrong)} "
                "(expected lr, clip, grad_norm_clip, huber_delta > 0; entropy_coef >= 0; gamma and "
                "gae_lambda in [0, 1]; epochs, minibatches >= 1; chunk_length >= 0; attn_embed divisible by attn_heads)"
            )


@dataclass
class IPPOConfig(PPOConfig):
    """Adds IPPO's option of one network for actor and critic."""

    shared_torso: bool = False
    """One recurrent torso (encoder, GRU) with a policy head and a value head on its state, as
    JaxMARL's IPPO (RNN) has, instead of a critic network of the critic's own (PyMARL2's and
    EPyMARL's IPPO): an update unrolls one network instead of two. The torso then learns from
    both losses, the critic's weighted by `value_coef`, and the gradient norm is clipped over all
    parameters together."""
    value_coef: float = 0.5
    """The critic loss's weight with a shared torso (JaxMARL's VF_COEF)."""


@dataclass
class MAPPOConfig(PPOConfig):
    """Adds the centralised critic's input: the agent's own observation next to its state row
    (Yu et al.'s agent-specific global state) or the state row alone."""

    critic_local_obs: bool = True
    """The centralised critic reads the agent's own observation next to its state row (Yu et al.'s
    agent-specific global state); False: the state row alone."""


def taken(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """values [..., U] at the chosen actions [...] -> [...]."""
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def normalised(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x standardised with the mean and std of its real entries; zero elsewhere."""
    mean = masked_average(x, mask)
    std = masked_average((x - mean).pow(2), mask).sqrt()
    return torch.where(mask, (x - mean) / (std + eps), 0.0)


def clipped_surrogate(
    log_pi: torch.Tensor, log_pi_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-mean over mask of min(rho A, clip(rho, 1 - clip, 1 + clip) A), rho = pi / pi_old.

    The log-ratio is masked before `exp`: padding entries may hold huge log-probabilities
    (unavailable actions), and exp(inf) would turn their zero gradient into NaN.
    """
    log_ratio = torch.where(mask, log_pi - log_pi_old, 0.0)
    ratio = log_ratio.exp()
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_average((ratio - 1) - log_ratio, mask),  # Schulman's k3 estimator
            "clip_fraction": masked_average(((ratio - 1).abs() > clip).float(), mask),
        }
    return -masked_average(surrogate, mask), stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None,
    huber_delta: float | None,
) -> torch.Tensor:
    """Mean over mask of max(l(V - R), l(V_old + clip(V - V_old, +-clip) - R)), l = square or
    Huber; without `clip`, just l(V - R)."""

    def penalty(error: torch.Tensor) -> torch.Tensor:
        error = torch.where(mask, error, 0.0)
        if huber_delta is None:
            return error.pow(2)
        return F.huber_loss(error, torch.zeros_like(error), reduction="none", delta=huber_delta)

    loss = penalty(values - targets)
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, penalty(clipped - targets))
    return masked_average(loss, mask)


def policy_entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """H(pi) over the last axis; unavailable actions (log pi = -1e10, pi = 0) add nothing."""
    return -(log_pi.exp() * log_pi).sum(-1)


class CategoricalPolicy(nn.Module):
    """Discrete actions: a softmax over the available actions of the actor's logits."""

    def log_probs(self, logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        """log pi over the actions [..., U]; unavailable ones get about -1e10 (pi = 0)."""
        return masked_log_softmax(logits, avail)

    def act(self, logits: torch.Tensor, avail: torch.Tensor, explore: bool, generator: torch.Generator) -> torch.Tensor:
        """A draw from pi (the caller's generator) in training, its mode at test."""
        if explore:
            return sample_categorical(logits, avail, generator)
        return masked_argmax(logits, avail)

    def sample(
        self, logits: torch.Tensor, avail: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw from pi and its log pi(u), from one log-softmax (acting needs no entropy)."""
        actions = sample_categorical(logits, avail, generator)
        return actions, taken(self.log_probs(logits, avail), actions)

    def log_prob_entropy(
        self, logits: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(u) of the taken actions and H(pi), both [...] (one entry per agent-step)."""
        log_pi = self.log_probs(logits, avail)
        return taken(log_pi, actions), policy_entropy(log_pi)


class SquashedGaussianPolicy(nn.Module):
    """Continuous actions in [-1, 1]: a = tanh(z), z ~ N(mean, diag(std^2)), with the actor's
    outputs as the mean and a learned log-std per action dimension that does not depend on
    the state (as in PPO's and MAPPO's Gaussian policies).

    The runner stores the squashed action, so `log_prob_entropy` recovers z = atanh(a). The
    tanh Jacobian is the same under the old and the new policy and cancels in the ratio, so
    it is left out. Actions within 1e-6 of the bounds are pulled in before atanh; this moves
    z only for saturated draws, the same way in both terms of the ratio. The entropy is the
    Gaussian's (of z), the usual stand-in for the squashed distribution's.
    """

    LIMIT = 1.0 - 1e-6

    def __init__(self, dim: int, log_std_init: float) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.full((dim,), float(log_std_init)))

    def act(self, mean: torch.Tensor, avail: torch.Tensor, explore: bool, generator: torch.Generator) -> torch.Tensor:
        if not explore:
            return torch.tanh(mean)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return torch.tanh(mean + noise * self.log_std.exp())

    def sample(
        self, mean: torch.Tensor, avail: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A draw and its log-probability (of z, as `log_prob_entropy` computes it)."""
        actions = self.act(mean, avail, True, generator)
        return actions, self.log_prob_entropy(mean, actions, avail)[0]

    def log_prob_entropy(
        self, mean: torch.Tensor, actions: torch.Tensor, avail: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.atanh(actions.clamp(-self.LIMIT, self.LIMIT))
        scaled = (z - mean) * torch.exp(-self.log_std)
        log_prob = (-0.5 * scaled.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum().expand(log_prob.shape)
        return log_prob, entropy


def agent_network(spec: EnvSpec, cfg: PPOConfig, outputs: int) -> RecurrentAgent:
    """The actor's architecture (encoder, agent ids, GRU) with `outputs` outputs."""
    flat = spec.max_entities if cfg.agent_encoder == "flat" else None
    ids = spec.max_agents if cfg.agent_id else None
    return RecurrentAgent(spec.obs_features, outputs, cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden,
                          flat_entities=flat, agent_ids=ids)


class RecurrentCritic(nn.Module):
    """A value per agent and observation slot: per-step features (the subclass's `features`)
    through a GRU over the episode and a linear head; absent agents get a zero state and a
    zero value."""

    rnn: nn.GRUCell
    head: nn.Linear

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The GRU's inputs [B, T+1, A, H_in]."""
        raise NotImplementedError

    def unroll(
        self, batch: dict[str, torch.Tensor], h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values [B, T+1, A] and recurrent states [B, T+1, A, H], from `h0` [B, A, H] (default
        zero) at slot 0."""
        present = batch["agent_mask"]
        states = unroll_gru(self.rnn, self.features(batch), present, h0)
        return torch.where(present, self.head(states).squeeze(-1), 0.0), states

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Values of every observation slot [B, T+1, A]; a chunk of an episode (see
        `cut_into_chunks`) starts from its `critic_h0`."""
        return self.unroll(batch, batch.get("critic_h0"))[0]


class TorsoValueHead(nn.Module):
    """IPPO's critic with a shared torso: a linear value head on the actor's recurrent states
    (see `IPPOConfig.shared_torso`); it has no network of its own to unroll."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.head = nn.Linear(hidden, 1)

    def values(self, states: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Values [..., A] of the actor's states [..., A, H], zero for absent agents."""
        return torch.where(present, self.head(states).squeeze(-1), 0.0)


class HistoryCritic(RecurrentCritic):
    """IPPO's V(tau_i): an agent network of its own (the actor's architecture) with one output."""

    def __init__(self, spec: EnvSpec, cfg: PPOConfig) -> None:
        super().__init__()
        self.net = agent_network(spec, cfg, 1)

    @property  # type: ignore[override]
    def rnn(self) -> nn.GRUCell:
        return self.net.rnn

    @property  # type: ignore[override]
    def head(self) -> nn.Linear:
        return self.net.head

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.encode(batch["obs"], batch["obs_mask"])


class StateCritic(RecurrentCritic):
    """MAPPO's V(S, i) [R]: every state entity attends over the present ones (`StateContext`)
    and agent i reads the output row of its own state row (agents come first in the state).
    With `local_obs`, that row is joined with an encoding of i's own observation (Yu et al.'s
    agent-specific global state; the encoder is the critic's own, not the actor's). A GRU
    over the episode follows, as in Yu et al.'s recurrent critic, so a partial state still
    gives a history. No weight depends on the number of agents or entities.
    """

    def __init__(self, spec: EnvSpec, cfg: PPOConfig, local_obs: bool) -> None:
        super().__init__()
        embed, heads, hidden = cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden
        self.context = StateContext(spec.state_features, embed, heads)
        self.local = EntityEncoder(spec.obs_features, embed, heads) if local_obs else None
        self.fc = nn.Linear(embed * (2 if local_obs else 1), hidden)
        self.rnn = nn.GRUCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, _ = self.context(batch["state"], batch["state_mask"], batch["agent_mask"].shape[-1])
        if self.local is not None:
            rows = torch.cat([rows, self.local(batch["obs"], batch["obs_mask"])], dim=-1)
        return F.relu(self.fc(rows))


class FlatStateCritic(RecurrentCritic):
    """MAPPO's V(S, i) with `agent_encoder: flat`, as Yu et al. feed it on SMAC: an MLP layer on
    the concatenated state rows, joined (with `local_obs`) by one on agent i's concatenated
    observation rows and (with `agent_id`) by i's one-hot slot index, then a GRU over the
    episode. Without either, every agent gets the same V(S). Bound to the task's largest
    state, like every flat network.
    """

    def __init__(self, spec: EnvSpec, cfg: PPOConfig, local_obs: bool) -> None:
        super().__init__()
        embed, hidden = cfg.attn_embed, cfg.rnn_hidden
        self.state = FlatEncoder(spec.state_features, spec.max_state_entities, embed)
        self.local = FlatEncoder(spec.obs_features, spec.max_entities, embed) if local_obs else None
        self.ids = spec.max_agents if cfg.agent_id else 0
        self.fc = nn.Linear(embed * (2 if local_obs else 1) + self.ids, hidden)
        self.rnn = nn.GRUCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        present = batch["agent_mask"]
        rows = self.state(batch["state"], batch["state_mask"]).unsqueeze(-2).expand(*present.shape, -1)
        if self.local is not None:
            rows = torch.cat([rows, self.local(batch["obs"], batch["obs_mask"])], dim=-1)
        if self.ids:
            rows = torch.cat([rows, slot_one_hots(rows, self.ids)], dim=-1)
        return F.relu(self.fc(rows))


class PPO(Checkpointed):
    """The shared learner; `IPPO` and `MAPPO` choose the critic with `_build_critic`."""

    name: ClassVar[str]
    Config: ClassVar[type] = PPOConfig
    action_spaces: ClassVar[tuple[str, ...]] = ("discrete", "continuous")

    def __init__(self, env_spec: EnvSpec, config: PPOConfig, seed: int, device: Any) -> None:
        self.spec, self.cfg, self.device = env_spec, config, torch.device(device)
        with seeded(seed):
            self.actor = self._build_actor().to(self.device)
            self.critic = self._build_critic().to(self.device)
        self.policy: CategoricalPolicy | SquashedGaussianPolicy = (
            CategoricalPolicy()
            if env_spec.discrete
            else SquashedGaussianPolicy(env_spec.n_actions, config.log_std_init)
        ).to(self.device)
        self.value_normalizer = ValueNormalizer().to(self.device)
        # One Adam over every network equals one per network (Adam is per parameter); actor
        # and critic losses touch disjoint parameters and their gradient norms are clipped
        # separately (the Gaussian's log-std counts as the actor's).
        self.actor_params = [*self.actor.parameters(), *self.policy.parameters()]
        self.optimiser = torch.optim.Adam(
            [*self.actor_params, *self.critic.parameters()], lr=config.lr, eps=config.optim_eps
        )
        self.generator = make_generator(seed)
        self.store = RolloutStore(env_spec, BEHAVIOUR_FIELDS)
        self.grad_steps = 0
        self.behaviour_log_pi: np.ndarray | None = None  # of the last exploring `act`, for `observe`

    def _build_actor(self) -> RecurrentAgent:
        cfg = self.cfg
        actor = agent_network(self.spec, cfg, self.spec.n_actions)
        nn.init.orthogonal_(actor.head.weight, gain=cfg.policy_head_gain)
        nn.init.zeros_(actor.head.bias)
        return actor

    def _build_critic(self) -> nn.Module:
        raise NotImplementedError

    # ---------------------------------------------------------------- acting

    @property
    def env_steps(self) -> int:
        return self.store.env_steps

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        x = step_tensors(step, self.device)
        with torch.inference_mode():
            if memory is None:
                memory = self.actor.initial_state(x.agent_mask.shape[0], x.agent_mask.shape[1], self.device)
            outputs, memory = self.actor(x.obs, x.obs_mask, x.agent_mask, memory)
            if explore:
                actions, log_pi = self.policy.sample(outputs, x.avail_actions, self.generator)
                self.behaviour_log_pi = log_pi.cpu().numpy()
            else:
                actions = self.policy.act(outputs, x.avail_actions, False, self.generator)
            present = x.agent_mask.view(*x.agent_mask.shape, *([1] * (actions.dim() - 2)))
            actions = torch.where(present, actions, torch.zeros_like(actions))
        return actions.cpu().numpy(), memory

    def observe(self, transition: Transition) -> None:
        batch_agents = transition.actions.shape[:2]
        log_pi = self.behaviour_log_pi
        if log_pi is None or log_pi.shape != batch_agents:
            # Not the actions of the last `act`: unknown. Only episodes in flight across an
            # update read them (continuous rollouts, where the runner always acts first).
            log_pi = np.full(batch_agents, np.nan, np.float32)
        version = np.full(batch_agents[0], self.grad_steps, np.int64)
        self.store.observe(transition, {"behaviour_log_pi": log_pi, "policy_version": version})

    # ---------------------------------------------------------------- learning

    def actor_outputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The actor's outputs (logits or Gaussian means) at every step [B, T, A, U]; a chunk
        of an episode (see `cut_into_chunks`) starts from its `actor_h0`."""
        return self.actor.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"], batch.get("actor_h0"))[:, NOW]

    @property
    def shared_torso(self) -> bool:
        return isinstance(self.critic, TorsoValueHead)

    def unroll_actor_critic(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The actor's recurrent states [B, T+1, A, H], the critic's values [B, T+1, A] and the
        critic's recurrent states, each network unrolled once (a shared torso: one network)."""
        present = batch["agent_mask"]
        actor_states = self.actor.unroll_hidden(batch["obs"], batch["obs_mask"], present, batch.get("actor_h0"))
        if isinstance(self.critic, TorsoValueHead):
            return actor_states, self.critic.values(actor_states, present), actor_states
        values, critic_states = self.critic.unroll(batch, batch.get("critic_h0"))
        return actor_states, values, critic_states

    def policy_terms(
        self, batch: dict[str, torch.Tensor], outputs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_i(u_i) of the stored actions and the entropy of pi_i, both [B, T, A], from the
        actor's `outputs` (computed from `batch` when not given)."""
        outputs = self.actor_outputs(batch) if outputs is None else outputs
        return self.policy.log_prob_entropy(outputs, batch["actions"], batch["avail_actions"][:, NOW])

    def _to_returns(self, values: torch.Tensor) -> torch.Tensor:
        return self.value_normalizer.denorm(values) if self.cfg.value_norm else values

    def _to_targets(self, returns: torch.Tensor) -> torch.Tensor:
        return self.value_normalizer.norm(returns) if self.cfg.value_norm else returns

    @torch.no_grad()
    def prepare(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Everything the losses hold fixed: old log-probabilities and values, advantages and
        value targets; updates the value normaliser with the new returns.

        The old log-probabilities are recomputed here: an episode collected by the current
        parameters, which have not changed since, gets exactly the probabilities it was
        sampled with. An episode that was in flight at an earlier update (continuous
        rollouts) was sampled partly by older parameters, and its later steps from recurrent
        states those built: it takes the log-probabilities stored while acting instead, so
        the ratio pi / pi_old is still against the policy that acted. Old values are the
        current critic's either way (they only anchor the value clip).
        """
        cfg = self.cfg
        present = batch["agent_mask"]
        mask = batch["filled"].unsqueeze(-1) & present[:, NOW]  # [B, T, A]: real agent-steps
        actor_states, values, critic_states = self.unroll_actor_critic(batch)
        log_pi_old, _ = self.policy_terms(batch, self.actor.output(actor_states, present)[:, NOW])
        stale = batch["episode_version"] < self.grad_steps  # [B, T]: its episode began before the last update
        if bool(stale.any()):
            log_pi_old = torch.where(stale.unsqueeze(-1), batch["behaviour_log_pi"], log_pi_old)
        values = self._to_returns(values)  # [B, T+1, A], return units
        advantages, returns = generalised_advantages(
            batch["reward"], batch["terminated"], batch["filled"], values, present, cfg.gamma, cfg.gae_lambda
        )
        if cfg.value_norm:
            self.value_normalizer.update(returns[mask])
        stats = {
            "return_mean": float(masked_average(returns, mask)),
            "value_mean": float(masked_average(values[:, NOW], mask)),
            "advantage_abs": float(masked_average(advantages.abs(), mask)),
        }
        prepared = {
            **batch,
            "mask": mask,
            "log_pi_old": log_pi_old,
            "advantages": normalised(advantages, mask) if cfg.advantage_norm else advantages,
            # Old values and targets in the normaliser's updated units, so they compare.
            "old_values": self._to_targets(values[:, NOW]),
            "targets": self._to_targets(returns),
        }
        if cfg.chunk_length:
            prepared = cut_into_chunks(
                {**prepared, "actor_states": actor_states, "critic_states": critic_states},
                self.store.per_slot,
                cfg.chunk_length,
                {"actor_states": "actor_h0", "critic_states": "critic_h0"},
            )
        return prepared, stats

    def losses(self, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Actor loss (clipped surrogate minus the entropy bonus) and critic loss on prepared
        data (see `prepare`); every mean runs over real agent-steps only."""
        cfg, mask = self.cfg, data["mask"]
        if self.shared_torso:
            states, values, _ = self.unroll_actor_critic(data)
            log_pi, entropies = self.policy_terms(data, self.actor.output(states, data["agent_mask"])[:, NOW])
            values = values[:, NOW]
        else:
            log_pi, entropies = self.policy_terms(data)
            values = self.critic(data)[:, NOW]
        surrogate, stats = clipped_surrogate(log_pi, data["log_pi_old"], data["advantages"], mask, cfg.clip)
        entropy = masked_average(entropies, mask)
        actor_loss = surrogate - cfg.entropy_coef * entropy
        critic_loss = value_loss(
            values,
            data["old_values"],
            data["targets"],
            mask,
            cfg.clip if cfg.value_clip else None,
            cfg.huber_delta if cfg.value_loss == "huber" else None,
        )
        report = {
            "policy_loss": float(surrogate.detach()),
            "critic_loss": float(critic_loss.detach()),
            "entropy": float(entropy.detach()),
            **{k: float(v) for k, v in stats.items()},
        }
        return actor_loss, critic_loss, report

    def _minibatches(self, lanes: int) -> list[torch.Tensor]:
        """Lane (or chunk) indices of each mini-batch of one epoch: whole lanes, so the GRUs
        unroll from each episode's start, or whole chunks, which carry their initial states.
        More mini-batches than lanes gives one each."""
        if self.cfg.minibatches == 1:
            return [torch.arange(lanes)]
        order = torch.randperm(lanes, generator=self.generator)
        return list(order.tensor_split(min(self.cfg.minibatches, lanes)))

    def _train_step(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        actor_loss, critic_loss, report = self.losses(data)
        self.optimiser.zero_grad(set_to_none=True)
        if self.shared_torso:
            assert isinstance(self.cfg, IPPOConfig)
            (actor_loss + self.cfg.value_coef * critic_loss).backward()
            norm = nn.utils.clip_grad_norm_([*self.actor_params, *self.critic.parameters()], self.cfg.grad_norm_clip)
            actor_norm = critic_norm = norm
        else:
            (actor_loss + critic_loss).backward()
            actor_norm = nn.utils.clip_grad_norm_(self.actor_params, self.cfg.grad_norm_clip)
            critic_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.grad_norm_clip)
        self.optimiser.step()
        self.grad_steps += 1
        return {**report, "actor_grad_norm": float(actor_norm), "critic_grad_norm": float(critic_norm)}

    def update(self) -> dict[str, float]:
        """`epochs` passes over the episodes collected since the last update, then drop them."""
        if len(self.store) == 0:
            return {}
        episodes = len(self.store)
        batch = self.store.packed_batch(self.device)
        self.store.clear()
        data, stats = self.prepare(batch)
        reports = []
        for _ in range(self.cfg.epochs):
            for idx in self._minibatches(data["reward"].shape[0]):
                idx = idx.to(self.device)
                reports.append(self._train_step({k: v[idx] for k, v in data.items()}))
        averaged = {k: float(np.mean([r[k] for r in reports])) for k in reports[0]}
        return {**averaged, **stats, "episodes": float(episodes)}

    # ---------------------------------------------------------------- checkpoints

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor,
            "policy": self.policy,
            "critic": self.critic,
            "value_normalizer": self.value_normalizer,
        }

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimiser": self.optimiser}

    def _components(self) -> dict[str, Any]:
        return {"store": self.store}


@register_algorithm("ippo")
class IPPO(PPO):
    """Independent PPO: each agent's critic sees only its own history, V(tau_i): a network of
    its own, or a value head on the actor's (`shared_torso`)."""

    Config = IPPOConfig

    def _build_critic(self) -> nn.Module:
        assert isinstance(self.cfg, IPPOConfig)
        if self.cfg.shared_torso:
            return TorsoValueHead(self.cfg.rnn_hidden)
        return HistoryCritic(self.spec, self.cfg)


@register_algorithm("mappo")
class MAPPO(PPO):
    """Multi-agent PPO: a centralised critic V(S, i) on the global state entity list."""

    Config = MAPPOConfig

    def _build_critic(self) -> nn.Module:
        assert isinstance(self.cfg, MAPPOConfig)
        if self.cfg.agent_encoder == "flat":
            return FlatStateCritic(self.spec, self.cfg, self.cfg.critic_local_obs)
        return StateCritic(self.spec, self.cfg, self.cfg.critic_local_obs)
