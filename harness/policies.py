"""Acting with a trained policy outside a run: an algorithm rebuilt from a checkpoint (what
Overcooked's checkpoint partners and evaluation scripts need), and the default reset of a
policy's recurrent memory (what the runner and any backend that steps a policy itself use)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import EnvSpec, load_policy_state, policy_state
from harness.config import build_config


def policy_from_checkpoint(cls: type, path: str | Path, spec: EnvSpec, params: dict[str, Any]) -> Any:
    """Algorithm `cls` built on `spec` with `params` (over its config's defaults), on the CPU,
    with the networks `path` holds: a run's best.pt (its best policy), a run's last.pt (the
    networks in it), or a bare `policy_state_dict()` / `state_dict()`. Raises what building or
    loading raises when the file does not fit (other params, another algorithm)."""
    algorithm = cls(spec, build_config(cls, params), 0, torch.device("cpu"))
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: read only what is used
    if "policy" in saved:
        load_policy_state(algorithm, saved["policy"])
    elif "algorithm" in saved:  # a resume checkpoint: its networks are all acting needs
        load_policy_state(algorithm, {k: v for k, v in saved["algorithm"].items() if k in policy_state(algorithm)})
    else:
        load_policy_state(algorithm, saved)
    return algorithm


def map_memory(memory: Any, leaf: Callable[[Any], Any]) -> Any:
    """`leaf` applied to everything inside the tuples, lists and dicts of a memory."""
    if isinstance(memory, dict):
        return {k: map_memory(v, leaf) for k, v in memory.items()}
    if isinstance(memory, tuple) and hasattr(memory, "_fields"):  # a NamedTuple
        return type(memory)(*(map_memory(v, leaf) for v in memory))
    if isinstance(memory, list | tuple):
        return type(memory)(map_memory(v, leaf) for v in memory)
    return leaf(memory)


def reset_memory_rows(memory: Any, rows: np.ndarray) -> Any:
    """`memory` with rows `rows` ([B] bool) zeroed in every tensor or array whose first
    dimension is B (the default of `reset_memory`: every algorithm here starts its
    recurrent state at zero)."""

    def reset(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == len(rows):
            keep = torch.from_numpy(~rows).to(x.device).view(-1, *([1] * (x.dim() - 1)))
            with torch.inference_mode(x.is_inference()):  # act made it there: keep it cheap
                return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if isinstance(x, np.ndarray) and x.ndim and x.shape[0] == len(rows):
            return np.where(rows.reshape(-1, *([1] * (x.ndim - 1))), np.zeros((), x.dtype), x)
        return x

    return map_memory(memory, reset)
