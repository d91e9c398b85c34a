"""What the off-policy actor-critics (VM3-AC and its SAC/AC relatives, MADDPG) share: the
transition replay, the update schedule, per-agent inputs and critic inputs, and checkpoints.
A subclass takes the action spaces its `action_spaces` names: continuous [B, A, D] actions
in [-1, 1], or discrete int64 [B, A] actions, which critics read as one-hot [B, A, U].

Update schedule. The runner calls `update()` after each synchronous batch of episodes. Every
active env step observed since the last call earns `updates_per_env_step` gradient steps
(fractions carry over to the next call). The default, None, means 1/B for a batch of B envs:
one gradient step per vector step of the env batch, so the update-to-data ratio is the same
whatever the episode length. Nothing is capped. Learning starts at the first `update()`
whose replay holds a full mini-batch; env steps collected before that earn no backlog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from algorithms.common.agentwise import flat_observations, flat_state
from algorithms.common.checkpoints import Checkpointed
from algorithms.common.torch_utils import make_generator, seeded, step_tensors, to_tensor
from algorithms.common.transition_replay import TransitionReplay
from harness.api import EnvSpec, Step, Transition

CriticInput = Literal["observations", "state"]


@dataclass
class OffPolicyConfig:
    """The settings VM3-AC's Table 2 gives every compared method (MA-AC, MA-SAC, MADDPG,
    VM3-AC): Adam 3e-4, batch 128, buffer 5e5, gamma 0.99, Polyak 0.005, 2x128 ReLU."""

    lr: float = 3e-4
    """Adam's learning rate, for actors and critics alike (VM3-AC Table 2: 3e-4)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target networks: target <- (1 - tau) target + tau online."""
    batch_size: int = 128
    """Transitions per gradient step."""
    buffer_size: int = 500_000
    """Replay capacity in transitions; the oldest are overwritten."""
    hidden: int = 128
    """Units of each hidden layer (ReLU) of the per-agent MLPs."""
    hidden_layers: int = 2
    """Hidden layers of the per-agent MLPs."""
    critic_input: CriticInput = "observations"
    """What the centralised critics see besides the actions: every agent's flattened observation
    ("observations", the paper's choice under partial observability) or the global state entity
    list ("state")."""
    updates_per_env_step: float | None = None
    """Gradient steps earned per env step (fractions accumulate); None: 1/B, one gradient step per
    batched step of B envs."""

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "batch_size": self.batch_size >= 1,
            "buffer_size": self.buffer_size >= self.batch_size,
            "hidden": self.hidden >= 1,
            "hidden_layers": self.hidden_layers >= 1,
            "critic_input": self.critic_input in ("observations", "state"),
            "updates_per_env_step": self.updates_per_env_step is None or self.updates_per_env_step > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{type(self).__name__}: invalid value of {', '.join(bad)}: "
                             + ", ".join(f"{b}={getattr(self, b)!r}" for b in bad))


def pad_to(x: torch.Tensor, trailing: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad (False for masks) the trailing axes of `x` [B, ...] up to `trailing`."""
    if tuple(x.shape[1:]) == trailing:
        return x
    out = x.new_zeros((x.shape[0], *trailing))
    out[(slice(None), *(slice(0, s) for s in x.shape[1:]))] = x
    return out


def per_agent_mean(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """[B, ..., A] values, [B, A] mask -> [..., A]: each agent's mean over the batch entries
    where it is present (0 for an agent never present)."""
    mask = present.reshape(present.shape[0], *([1] * (values.dim() - 2)), present.shape[1]).expand_as(values)
    return torch.where(mask, values, 0.0).sum(0) / mask.sum(0).clamp(min=1)


class AgentInputs(NamedTuple):
    """One time slot of a batch, as the per-agent networks read it."""

    obs: torch.Tensor  # [B, A, E*F] flattened observations (invisible rows and absent agents zeroed)
    context: torch.Tensor  # [B, C] what centralised critics see besides the actions
    present: torch.Tensor  # [B, A] agent mask


class OffPolicyActorCritic(Checkpointed):
    """Base learner: subclasses build their networks in `_build`, list them in `_modules`,
    their optimisers in `_optimisers`, and learn from one sampled batch in `_train_step`."""

    name: ClassVar[str]
    Config: ClassVar[type] = OffPolicyConfig
    action_spaces: ClassVar[tuple[str, ...]] = ("continuous",)
    counters = ("grad_steps", "update_credit")  # restored on resume

    def __init__(self, env_spec: EnvSpec, config: OffPolicyConfig, seed: int, device: Any) -> None:
        space = "discrete" if env_spec.discrete else "continuous"
        if space not in self.action_spaces:
            needs = "continuous" if env_spec.discrete else "discrete"
            raise ValueError(f"{type(self).__name__} needs {needs} actions (its action_spaces are {self.action_spaces})")
        self.spec, self.cfg, self.device = env_spec, config, torch.device(device)
        self.n_agents, self.action_dim = env_spec.max_agents, env_spec.n_actions
        self.obs_dim = env_spec.max_entities * env_spec.obs_features
        with seeded(seed):
            self._build()
        self.generator = make_generator(seed)
        self.replay = TransitionReplay.for_spec(env_spec, config.buffer_size)
        self.grad_steps = 0
        self.update_credit = 0.0  # gradient steps earned by observed env steps, not yet taken

    # ---------------------------------------------------------------- subclass hooks

    def _build(self) -> None:
        raise NotImplementedError

    def _modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    # ---------------------------------------------------------------- inputs

    @property
    def context_dim(self) -> int:
        spec = self.spec
        if self.cfg.critic_input == "state":
            return spec.max_state_entities * spec.state_features
        return self.n_agents * self.obs_dim

    def centralised_critic_features(self) -> int:
        """Critic i's input: [own obs, own action | x | joint action]. The agent's own part
        comes first, in a slot of its own (VM3-AC's critics stress the agent's own
        observation and action, after Kim et al. 2019 [R: a simplification])."""
        return self.obs_dim + self.action_dim + self.context_dim + self.n_agents * self.action_dim

    def independent_critic_features(self) -> int:
        return self.obs_dim + self.action_dim

    def agent_inputs(self, obs: torch.Tensor, obs_mask: torch.Tensor, agent_mask: torch.Tensor,
                     state: torch.Tensor, state_mask: torch.Tensor) -> AgentInputs:
        flat = flat_observations(obs, obs_mask, agent_mask)
        context = flat_state(state, state_mask) if self.cfg.critic_input == "state" else flat.flatten(-2)
        return AgentInputs(flat, context, agent_mask)

    def step_inputs(self, step: Step) -> AgentInputs:
        """What the agents see in a runner `Step`, padded to the spec's sizes (a composition
        with fewer agents or entities than the task's largest gets absent, invisible rows)."""
        x = step_tensors(step, self.device)
        spec = self.spec
        return self.agent_inputs(
            pad_to(x.obs, (spec.max_agents, spec.max_entities, spec.obs_features)),
            pad_to(x.obs_mask, (spec.max_agents, spec.max_entities)),
            pad_to(x.agent_mask, (spec.max_agents,)),
            pad_to(x.state, (spec.max_state_entities, spec.state_features)),
            pad_to(x.state_mask, (spec.max_state_entities,)),
        )

    def step_avail_actions(self, step: Step) -> torch.Tensor:
        """The step's available-action mask [B, A, U], padded (absent slots: nothing available)."""
        return pad_to(to_tensor(step.avail_actions, self.device), (self.spec.max_agents, self.spec.n_actions))

    def batch_inputs(self, batch: dict[str, torch.Tensor], prefix: str = "") -> AgentInputs:
        """`prefix=""`: the slot the agents acted in; `"next_"`: the one their action led to."""
        return self.agent_inputs(*(batch[prefix + k] for k in ("obs", "obs_mask", "agent_mask", "state", "state_mask")))

    def critic_input(self, x: AgentInputs, own_actions: torch.Tensor, joint_actions: torch.Tensor | None) -> torch.Tensor:
        """Per-agent critic inputs [B, A, in]. `own_actions` [B, A, D]; `joint_actions` is None
        for independent critics, else [B, A, D] (one joint action for every critic) or
        [B, A, A, D] (critic i's own copy, see `own_action_swapped`)."""
        own = torch.cat([x.obs, own_actions], dim=-1)
        if joint_actions is None:
            return own
        b, a = own.shape[:2]
        if joint_actions.dim() == 3:
            joint_actions = joint_actions.unsqueeze(1).expand(b, a, *joint_actions.shape[1:])
        context = x.context.unsqueeze(1).expand(b, a, x.context.shape[-1])
        return torch.cat([own, context, joint_actions.flatten(-2)], dim=-1)

    # ---------------------------------------------------------------- data and schedule

    def observe(self, transition: Transition) -> None:
        stored = self.replay.add(transition)
        ratio = self.cfg.updates_per_env_step
        if ratio is None:
            ratio = 1.0 / len(transition.active)
        self.update_credit += stored * ratio

    def update(self) -> dict[str, float]:
        if len(self.replay) < self.cfg.batch_size:
            self.update_credit = 0.0  # warm-up: no backlog of gradient steps
            return {}
        steps = math.floor(self.update_credit + 1e-9)
        if steps == 0:
            return {}
        self.update_credit = max(self.update_credit - steps, 0.0)
        totals: dict[str, float] = {}
        for _ in range(steps):
            batch = self.replay.sample(self.cfg.batch_size, self.generator)
            for key, value in self._train_step({k: v.to(self.device) for k, v in batch.items()}).items():
                totals[key] = totals.get(key, 0.0) + value
            self.grad_steps += 1
        metrics = {key: value / steps for key, value in totals.items()}
        metrics["grad_steps_per_update"] = float(steps)
        return metrics

    def random_normal(self, *shape: int) -> torch.Tensor:
        """Standard normal draws from the algorithm's own generator, on its device."""
        return torch.randn(shape, generator=self.generator).to(self.device)

    def to_actions(self, actions: torch.Tensor, x: AgentInputs, step: Step) -> np.ndarray:
        """[B, A, D] in [-1, 1] -> float32 numpy for the step's own agent slots, absent
        agents' actions zero."""
        actions = torch.where(x.present.unsqueeze(-1), actions, 0.0)[:, : step.agent_mask.shape[1]]
        return actions.float().cpu().numpy()

    def to_discrete_actions(self, actions: torch.Tensor, x: AgentInputs, step: Step) -> np.ndarray:
        """Action indices [B, A] -> int64 numpy for the step's own agent slots, absent agents'
        actions 0."""
        actions = torch.where(x.present, actions, 0)[:, : step.agent_mask.shape[1]]
        return actions.long().cpu().numpy()

    def one_hot_actions(self, actions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Action indices [B, A] -> the critics' one-hot encoding [B, A, U], absent agents' rows
        zero (as absent agents' continuous actions are)."""
        one_hot = torch.nn.functional.one_hot(actions.long(), self.action_dim).float()
        return torch.where(present.unsqueeze(-1), one_hot, 0.0)

    # ---------------------------------------------------------------- checkpoints

    def _components(self) -> dict[str, Any]:
        return {"replay": self.replay}
