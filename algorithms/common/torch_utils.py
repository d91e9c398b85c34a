"""Moving environment arrays into torch and keeping randomness local to an algorithm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
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


def bfloat16_is_native(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports it,
    or a CPU with AVX-512 BF16 or AMX (read from /proc/cpuinfo, Linux only)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The entity encoders' autocast dtype for a `precision` setting: "float32" (None, no
    autocast), "bfloat16", or "auto" (bfloat16 where `bfloat16_is_native`)."""
    if precision == "bfloat16" or (precision == "auto" and bfloat16_is_native(device)):
        return torch.bfloat16
    if precision not in ("float32", "auto"):
        raise ValueError(f"precision must be float32, bfloat16 or auto, got {precision!r}")
    return None
