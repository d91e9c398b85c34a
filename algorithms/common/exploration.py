"""Action selection over available actions: masked argmax/max, epsilon-greedy, schedules."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearSchedule:
    """start -> finish linearly over `steps`, then flat (PyMARL's epsilon schedule)."""

    start: float
    finish: float
    steps: int

    def __call__(self, t: int) -> float:
        frac = min(max(t, 0) / self.steps, 1.0) if self.steps > 0 else 1.0
        return self.start + frac * (self.finish - self.start)


def masked_argmax(values: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Argmax over available actions; a row with none available gives action 0."""
    return values.masked_fill(~avail, float("-inf")).argmax(-1)


def masked_max(values: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Max over available actions; a row with none available gives 0 (not -inf)."""
    best = values.masked_fill(~avail, float("-inf")).amax(-1)
    return torch.where(avail.any(-1), best, 0.0)


def random_available(avail: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A uniform draw among the available actions of every row (0 where none is)."""
    scores = torch.rand(avail.shape, generator=generator).to(avail.device)
    return masked_argmax(scores, avail)


def epsilon_mixed(
    actions: torch.Tensor, avail: torch.Tensor, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """Each action replaced, with probability epsilon, by a uniform available one."""
    if epsilon <= 0.0:
        return actions
    swap = torch.rand(actions.shape, generator=generator).to(actions.device) < epsilon
    return torch.where(swap, random_available(avail, generator), actions)


def epsilon_greedy(
    values: torch.Tensor, avail: torch.Tensor, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """With probability epsilon a uniform available action, else the greedy available one."""
    return epsilon_mixed(masked_argmax(values, avail), avail, epsilon, generator)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel draws shaped like `like`, from the caller's generator (reproducible)."""
    uniform = torch.rand(like.shape, generator=generator).to(like.device).clamp_(1e-10, 1.0)
    return -torch.log(-torch.log(uniform))


def sample_categorical(logits: torch.Tensor, avail: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A draw from softmax(logits) restricted to the available actions (Gumbel-max trick,
    so the draw comes from the caller's generator and stays reproducible)."""
    return masked_argmax(logits + gumbel_noise(logits, generator), avail)


def straight_through_gumbel_softmax(logits: torch.Tensor, avail: torch.Tensor, gumbel: torch.Tensor,
                                    temperature: float) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the available actions [..., U]: the forward value
    is the one-hot of argmax(l + g) (a draw from softmax(l) over the available actions), the
    gradient that of softmax((l + g) / temperature). Unavailable actions get probability 0
    and no gradient."""
    soft = torch.softmax((logits.masked_fill(~avail, -1e10) + gumbel) / temperature, dim=-1)
    hard = torch.nn.functional.one_hot(masked_argmax(soft.detach(), avail), logits.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


def masked_log_softmax(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """log pi over the available actions; unavailable actions get a very negative value
    (finite, so products with zero probabilities stay 0 instead of NaN)."""
    return torch.log_softmax(logits.masked_fill(~avail, -1e10), dim=-1)


def policy_actions(
    logits: torch.Tensor, avail: torch.Tensor, explore: bool, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """Actions of a stochastic policy: in training a draw from the softmax over the available
    actions, each replaced by a uniform available one with probability epsilon; at test the
    most probable available action."""
    if not explore:
        return masked_argmax(logits, avail)
    return epsilon_mixed(sample_categorical(logits, avail, generator), avail, epsilon, generator)
