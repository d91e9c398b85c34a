"""A sampled batch of episodes as the learners index it: the observation-slot slices (T+1 slots
per T steps), the values of the actions taken, a function over the filled steps only, and which
loss entries are real data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Slices of the observation-slot axis (T+1 slots per T steps): the state each step acts in,
# and the state it leads to.
NOW, AFTER = slice(0, -1), slice(1, None)


def taken_values(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """values [..., U] at the chosen actions [...] -> [...]."""
    return values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def on_filled_steps(batch: dict[str, torch.Tensor], fn: Callable[..., Any], *inputs: torch.Tensor) -> Any:
    """fn over the filled steps of a batch only: every input [B, T, ...] is cut to its filled
    (episode, step) entries [M, ...], and each output [M, ...] (a tensor or a tuple of them)
    comes back as [B, T, ...], zero at unfilled steps, which every loss masks out anyway.
    Mixers cost per step, and a batch's padding after its shorter episodes ends is a third to
    a half of its steps on SMAX. Inputs over the T+1 observation slots, and batches without a
    `filled` mask, go in whole."""
    filled = batch.get("filled")
    if filled is None or inputs[0].shape[:2] != filled.shape or bool(filled.all()):
        return fn(*inputs)
    rows = filled.flatten().nonzero().squeeze(1)
    out = fn(*(x.flatten(0, 1).index_select(0, rows) for x in inputs))

    def back(part: torch.Tensor) -> torch.Tensor:
        full = part.new_zeros(filled.numel(), *part.shape[1:]).index_copy(0, rows, part)
        return full.view(*filled.shape, *part.shape[1:])

    return tuple(back(part) for part in out) if isinstance(out, tuple) else back(out)


def loss_mask(per_step: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which entries of a [B, T] (or per-agent [B, T, A]) loss term are real data."""
    if per_step.dim() == 3:
        return batch["filled"].unsqueeze(-1) & batch["agent_mask"][:, NOW]
    return batch["filled"]
