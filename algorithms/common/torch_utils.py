"""Moving environment arrays into torch and keeping randomness local to an algorithm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from harness.api import Step


class StepTensors(NamedTuple):
    """The parts of a `Step` a network reads, as tensors on the algorithm's device."""

    obs: torch.Tensor  # [B, A, E, F] float32
    obs_mask: torch.Tensor  # [B, A, E] bool
    state: torch.Tensor  # [B, N, G] float32
    state_mask: torch.Tensor  # [B, N] bool
    avail_actions: torch.Tensor  # [B, A, U] bool
    agent_mask: torch.Tensor  # [B, A] bool


def to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Share memory with `array` on CPU (no copy unless it is not contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def step_tensors(step: Step, device: torch.device) -> StepTensors:
    return StepTensors(*(to_tensor(getattr(step, name), device) for name in StepTensors._fields))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. weight initialisation) under `seed` without touching the global CPU RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator owned by one algorithm: its draws do not depend on anyone else's."""
    return torch.Generator(device="cpu").manual_seed(seed)


def masked_average(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` (same shape) is True; 0 when nothing is."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)
