"""Value decomposition: IQL, VDN and QMIX on the entity-attention recurrent agent.

One learner; the variants differ only in how per-agent utilities are combined:
IQL keeps them apart (every q_i gets its own TD error), VDN sums them, QMIX mixes them
monotonically with attention hypernetworks over the state entity list (AQMIX-style), so
the same weights run on any team size. Defaults follow PyMARL (algorithms.md §2.1-2.2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from algorithms.common.batch import AFTER, NOW, loss_mask, on_filled_steps, taken_values
from algorithms.common.checkpoints import Checkpointed
from algorithms.common.exploration import LinearSchedule, epsilon_greedy, masked_argmax
from algorithms.common.mixers import AttentionQMixer, FlatQMixer, NoMixer, SumMixer
from algorithms.common.networks import EntityEncoder, FlatEncoder, RecurrentAgent, set_compute_dtype
from algorithms.common.replay import EpisodeCollector, EpisodeReplay
from algorithms.common.targets import hard_update, td_lambda_targets
from algorithms.common.torch_utils import StepTensors, compute_dtype, make_generator, seeded, step_tensors
from harness.api import EnvSpec, Step, Transition, tunable
from harness.registry import register_algorithm

M = TypeVar("M", bound=nn.Module)


@dataclass
class EpisodeLearnerConfig:
    """PyMARL's learner: RMSprop, 32-episode batches, 5000-episode buffer, hard targets every 200
    episodes, epsilon 1 -> 0.05 over 50k env steps. Shared by the value-decomposition configs
    and OPT-D's (whose agent has its own network options)."""

    lr: float = tunable(5e-4, 1e-4, 3e-3, log=True)
    """Learning rate of the agent and mixer optimiser (PyMARL: 5e-4)."""
    optimiser: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop as PyMARL, or Adam."""
    optim_alpha: float = 0.99
    """RMSprop's smoothing constant."""
    optim_eps: float = 1e-5
    """The optimiser's epsilon (added to the root mean square)."""
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 32
    """Episodes per gradient step."""
    buffer_size: int = 5000
    """Replay capacity in episodes; the oldest are overwritten."""
    updates_per_round: int = 1
    """The update-to-data ratio: gradient steps per `update()` call. The runner calls it once per
    round of collection (a synchronous batch of `num_envs` episodes, or `rollout_steps` batched
    steps with continuous rollouts), so with 16 envs and 1, one gradient step per 16 episodes.
    No setting trades it for speed behind the user's back; every run records its gradient and
    env steps."""
    learning_starts: int = 0
    """Env steps collected before the first gradient step (JaxMARL's LEARNING_STARTS); 0 starts
    as soon as the replay holds `batch_size` episodes (PyMARL)."""
    target_update_episodes: int = 200
    """Episodes between two hard copies of the online networks into the target networks."""
    epsilon_start: float = 1.0
    """Exploration: epsilon-greedy's probability of a random action at the start."""
    epsilon_finish: float = 0.05
    """Epsilon once annealed."""
    epsilon_anneal_steps: int = tunable(50_000, 5_000, 500_000, log=True)
    """Env steps over which epsilon falls linearly from `epsilon_start` to `epsilon_finish`."""
    grad_norm_clip: float = 10.0
    """Gradients are clipped to this global norm."""
    double_q: bool = True
    """Double Q-learning: the target network values the action the online network picks."""
    td_lambda: float = 0.0
    """TD(lambda) targets' lambda; 0 = one-step targets."""


@dataclass
class ValueDecompositionConfig(EpisodeLearnerConfig):
    """PyMARL's learner with REFIL's attention agent sizes."""

    attn_embed: int = 128
    """Width of the agent's entity attention (REFIL: 128)."""
    attn_heads: int = 4
    """Attention heads of the agent's entity encoder."""
    rnn_hidden: int = 64
    """The agent's GRU state size."""
    attn_self_residual: bool = False
    """Add the agent's embedded own row to its attention output (see `EntityEncoder`); off in
    REFIL's agent and by default here."""
    agent_encoder: Literal["attention", "flat"] = "attention"
    """The agent's entity encoder: "attention", or "flat", an MLP layer on the concatenated entity
    rows (the papers' matrix-game agents), only for tasks whose entity lists are never longer
    than the largest the spec declares."""
    agent_id: bool = False
    """PyMARL's `obs_agent_id`: the agent's slot index, one-hot, as an input. Off by default: slot
    indices mean nothing across team compositions."""
    precision: Literal["float32", "bfloat16", "auto"] = "float32"
    """The entity encoders (agent and hypernetwork attention: most of the arithmetic) in bfloat16
    autocast ("bfloat16"; "auto": where the CPU has AVX-512 BF16 or AMX, or on a CUDA GPU), the
    rest in float32. Off by default, so that numbers do not depend on the CPU; what it saves:
    docs/experiments.md."""


@dataclass
class QMIXConfig(ValueDecompositionConfig):
    """Adds the mixer sizes: mixing embedding 32 (QMIX) and a 64-wide attention hypernetwork."""

    mixing_embed: int = 32
    """Width of the mixing network's hidden layer (QMIX: 32)."""
    hypernet_embed: int = 64
    """Width of the attention hypernetworks that read the state's entity list."""
    hypernet_heads: int = 4
    """Attention heads of the hypernetworks."""
    mixer: Literal["attention", "flat", "sum"] = "attention"
    """How the utilities are mixed: "attention", hypernetworks over the state's entity list (any
    team size); "flat", QMIX's original MLP hypernetworks on the flattened state (`FlatQMixer`),
    cheaper but bound to the task's largest team, like `agent_encoder: flat`; "sum", Q_tot is
    the sum of the utilities (VDN's mixer), as the ME-IGM authors' released nmix code computes."""


class ValueDecomposition(Checkpointed):
    """Shared learner; subclasses choose the mixer with `_build_mixer`."""

    name: ClassVar[str]
    Config: ClassVar[type] = ValueDecompositionConfig
    counters = ("grad_steps", "last_target_update")  # restored on resume

    def __init__(self, env_spec: EnvSpec, config: ValueDecompositionConfig, seed: int, device: Any) -> None:
        if not env_spec.discrete:
            raise ValueError(f"{type(self).__name__} needs discrete actions")
        self.spec, self.cfg, self.device = env_spec, config, torch.device(device)
        with seeded(seed):
            self.agent = self._build_agent().to(self.device)
            self.mixer = self._build_mixer().to(self.device)
            self._check_network_options()
            self._build_extra()
        dtype = compute_dtype(getattr(config, "precision", "float32"), self.device)
        for net in (self.agent, self.mixer, *(m for m in vars(self).values() if isinstance(m, nn.Module))):
            set_compute_dtype(net, dtype)
        self.target_agent = self._frozen_copy(self.agent)
        self.target_mixer = self._frozen_copy(self.mixer)
        self.params = [*self.agent.parameters(), *self.mixer.parameters()]
        self.optimiser = self._make_optimiser(self.params, config.lr)
        self.generator = make_generator(seed)
        self.epsilon = LinearSchedule(
            config.epsilon_start, config.epsilon_finish, config.epsilon_anneal_steps
        )
        self.replay = EpisodeReplay.for_spec(env_spec, config.buffer_size)
        self.collector = EpisodeCollector(self.replay)
        self.grad_steps = 0
        self.last_target_update = 0  # episode count at the last hard update

    def _build_agent(self) -> nn.Module:
        """The shared agent network: `initial_state`, one-step `forward` and `unroll`."""
        cfg, spec = self.cfg, self.spec
        return RecurrentAgent(spec.obs_features, spec.n_actions, cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden,
                              cfg.attn_self_residual, self.flat_entities, spec.max_agents if cfg.agent_id else None)

    def _check_network_options(self) -> None:
        """Refuse agent and mixer options that this algorithm's own networks do not implement,
        rather than train a different network than the config says."""
        # Configs of agents with no attention options at all (OPT-D's) lack the fields.
        encoder, residual = getattr(self.cfg, "agent_encoder", "attention"), getattr(self.cfg, "attn_self_residual", False)
        encoders = [m for m in self.agent.modules() if isinstance(m, (EntityEncoder, FlatEncoder))]
        honoured = {
            "agent_encoder": encoder == "attention" or any(isinstance(m, FlatEncoder) for m in encoders),
            "attn_self_residual": not residual or any(isinstance(m, EntityEncoder) and m.self_residual for m in encoders),
            "mixer": {"attention": True, "flat": isinstance(self.mixer, FlatQMixer),
                      "sum": isinstance(self.mixer, SumMixer)}[getattr(self.cfg, "mixer", "attention")],
            "agent_id": not getattr(self.cfg, "agent_id", False)
            or any(isinstance(m, RecurrentAgent) and m.agent_ids for m in self.agent.modules()),
        }
        bad = [key for key, ok in honoured.items() if not ok]
        if bad:
            raise ValueError(f"{type(self).__name__}: its networks have no {' or '.join(bad)} option "
                             f"(got {', '.join(f'{k}={getattr(self.cfg, k)!r}' for k in bad)}); leave it at the default")

    @property
    def flat_entities(self) -> int | None:
        """`RecurrentAgent`'s flat_entities: the spec's longest entity list for a flat encoder."""
        return self.spec.max_entities if self.cfg.agent_encoder == "flat" else None

    def _build_mixer(self) -> nn.Module:
        return NoMixer()

    def _build_extra(self) -> None:
        """Networks beyond agent and mixer (built under the algorithm's seed); none here."""

    def _make_optimiser(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimiser == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps)

    def _frozen_copy(self, net: M) -> M:
        copied = copy.deepcopy(net).to(self.device)
        copied.requires_grad_(False)
        return copied

    # ---------------------------------------------------------------- acting

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps

    @property
    def acting_network(self) -> nn.Module:
        """The recurrent network whose outputs `_select` turns into actions (the utilities'
        agent here; a separate actor in actor-critic subclasses)."""
        return self.agent

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        x = step_tensors(step, self.device)
        net = self.acting_network
        with torch.inference_mode():
            if memory is None:
                memory = net.initial_state(x.agent_mask.shape[0], x.agent_mask.shape[1], self.device)
            outputs, memory = net(x.obs, x.obs_mask, x.agent_mask, memory)
            actions = torch.where(x.agent_mask, self._select(outputs, x, explore), 0)
        return actions.cpu().numpy(), memory

    def _select(self, q: torch.Tensor, x: StepTensors, explore: bool) -> torch.Tensor:
        """Actions [B, A] from the utilities: epsilon-greedy in training, greedy at test."""
        eps = self.epsilon(self.env_steps) if explore else 0.0
        return epsilon_greedy(q, x.avail_actions, eps, self.generator)

    def observe(self, transition: Transition) -> None:
        self.collector.observe(transition)

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        if len(self.replay) < self.cfg.batch_size or self.env_steps < self.cfg.learning_starts:
            return {}
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.updates_per_round):
            batch = self.replay.sample(self.cfg.batch_size, self.generator)
            metrics = self._train_step({k: v.to(self.device) for k, v in batch.items()})
        if self.collector.episodes - self.last_target_update >= self.cfg.target_update_episodes:
            self._update_targets()
        metrics["epsilon"] = self.epsilon(self.env_steps)
        return metrics

    def _update_targets(self) -> None:
        hard_update(self.target_agent, self.agent)
        hard_update(self.target_mixer, self.mixer)
        self.last_target_update = self.collector.episodes

    @staticmethod
    def _mix(mixer: nn.Module, q: torch.Tensor, batch: dict, slots: slice) -> torch.Tensor:
        """Per-agent values [B, T, A] -> what the TD loss compares ([B, T], or [B, T, A] for IQL),
        computed on the filled steps only (see `on_filled_steps`)."""
        return on_filled_steps(
            batch, mixer, q, batch["state"][:, slots], batch["state_mask"][:, slots], batch["agent_mask"][:, slots]
        )

    def _joint_value(
        self, mixer: nn.Module, q: torch.Tensor, actions: torch.Tensor, batch: dict, slots: slice
    ) -> torch.Tensor:
        """Q_tot of the joint action `actions` [B, T, A] given all utilities q [B, T, A, U].
        Mixers that need more than the chosen utilities (QPLEX's advantages) override this."""
        return self._mix(mixer, taken_values(q, actions), batch, slots)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked mean squared TD error over a batch of episodes (see algorithms.md §1.7-1.8)."""
        q = self.agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])  # [B, T+1, A, U]
        y = self._targets(batch, q)
        chosen = self._joint_value(self.mixer, q[:, NOW], batch["actions"], batch, NOW)
        return self._td_loss(chosen, y, batch)

    @torch.no_grad()
    def _targets(self, batch: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
        """TD(lambda) targets [B, T] (IQL: [B, T, A]) from the target networks, with the next
        action chosen by the online utilities when double_q is on."""
        q_target = self.target_agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])[:, AFTER]
        chooser = q[:, AFTER].detach() if self.cfg.double_q else q_target
        best = masked_argmax(chooser, batch["avail_actions"][:, AFTER])
        bootstrap = self._joint_value(self.target_mixer, q_target, best, batch, AFTER)
        return td_lambda_targets(
            batch["reward"],
            batch["terminated"],
            batch["filled"],
            bootstrap,
            self.cfg.gamma,
            self.cfg.td_lambda,
        )

    def _td_loss(
        self,
        chosen: torch.Tensor,
        y: torch.Tensor,
        batch: dict[str, torch.Tensor],
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean of (chosen - y)^2 over filled steps (IQL: over filled steps x present agents);
        a weighted mean when per-sample `weight`s are given (Weighted QMIX and the like)."""
        mask = loss_mask(chosen, batch)
        td = torch.where(mask, chosen - y, 0.0)
        count = mask.sum().clamp(min=1)
        if weight is None:
            loss = td.pow(2).sum() / count
        else:
            loss = (weight * td.pow(2)).sum() / torch.where(mask, weight, 0.0).sum().clamp(min=1e-8)
        with torch.no_grad():
            stats = {
                "q_taken_mean": float(torch.where(mask, chosen, 0.0).sum() / count),
                "target_mean": float(torch.where(mask, y, 0.0).sum() / count),
                "td_error_abs": float(td.abs().sum() / count),
            }
        return loss, stats

    def _optimise(self, optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter]) -> float:
        """One gradient step of `optimiser` on `loss`, clipped over `params`; the gradient norm."""
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_norm_clip)
        optimiser.step()
        return float(grad_norm)

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        loss, stats = self.loss(batch)
        grad_norm = self._optimise(self.optimiser, loss, self.params)
        self.grad_steps += 1
        return {"loss": float(loss.detach()), "grad_norm": grad_norm, **stats}

    # ---------------------------------------------------------------- checkpoints

    def _modules(self) -> dict[str, nn.Module]:
        return {
            "agent": self.agent,
            "target_agent": self.target_agent,
            "mixer": self.mixer,
            "target_mixer": self.target_mixer,
        }

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimiser": self.optimiser}

    def _components(self) -> dict[str, Any]:
        return {"replay": self.replay, "collector": self.collector}


@register_algorithm("iql")
class IQL(ValueDecomposition):
    """Independent Q-learning: each agent's own TD loss on q_i, shared reward, no mixer."""


@register_algorithm("vdn")
class VDN(ValueDecomposition):
    """Q_tot = sum_i q_i."""

    def _build_mixer(self) -> nn.Module:
        return SumMixer()


@register_algorithm("qmix")
class QMIX(ValueDecomposition):
    """Monotonic mixing with attention hypernetworks over the state entity list (AQMIX)."""

    Config = QMIXConfig

    def _build_mixer(self) -> nn.Module:
        cfg = self.cfg
        assert isinstance(cfg, QMIXConfig)
        spec = self.spec
        if cfg.mixer == "sum":
            return SumMixer()
        if cfg.mixer == "flat":
            return FlatQMixer(spec.state_features, spec.max_state_entities, spec.max_agents, cfg.mixing_embed,
                              cfg.hypernet_embed)
        return AttentionQMixer(spec.state_features, cfg.mixing_embed, cfg.hypernet_embed, cfg.hypernet_heads)
