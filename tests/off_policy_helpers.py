"""Fixtures shared by the tests of the off-policy continuous actor-critics (VM3-AC family,
MADDPG): a small continuous spec, random replay batches and steps, gradient helpers, and the
real continuous cooperative-navigation env."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from algorithms.common.transition_replay import transition_schema
from harness import registry
from harness.api import EnvSpec, Step

A, E, F, D = 3, 4, 5, 2
SPEC = EnvSpec(obs_features=F, state_features=3, n_actions=D, max_agents=A, max_entities=E,
               max_state_entities=5, episode_limit=5, discrete=False)
def random_batch(spec: EnvSpec = SPEC, size: int = 16, seed: int = 0, absent: bool = False) -> dict[str, torch.Tensor]:
    """A batch in the transition replay's layout with random contents."""
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for name, col in transition_schema(spec).items():
        shape = (size, *col.shape)
        if col.dtype == np.bool_:
            batch[name] = torch.rand(shape, generator=g) < 0.8
        else:
            batch[name] = torch.randn(shape, generator=g)
    batch["actions"] = torch.rand((size, spec.max_agents, spec.n_actions), generator=g) * 2 - 1
    for key in ("agent_mask", "next_agent_mask"):
        batch[key] = torch.ones(size, spec.max_agents, dtype=torch.bool)
    if absent:  # the last agent is gone in half the batch
        batch["agent_mask"][::2, -1] = False
        batch["actions"][::2, -1] = 0
    return batch


def random_step(spec: EnvSpec = SPEC, b: int = 4, seed: int = 0) -> Step:
    rng = np.random.default_rng(seed)
    a, e = spec.max_agents, spec.max_entities
    return Step(
        obs=rng.normal(size=(b, a, e, spec.obs_features)).astype(np.float32),
        obs_mask=np.ones((b, a, e), bool),
        state=rng.normal(size=(b, spec.max_state_entities, spec.state_features)).astype(np.float32),
        state_mask=np.ones((b, spec.max_state_entities), bool),
        avail_actions=np.ones((b, a, spec.n_actions), bool),
        agent_mask=np.ones((b, a), bool),
        reward=np.zeros(b, np.float32),
        done=np.zeros(b, bool),
        terminated=np.zeros(b, bool),
        won=np.zeros(b, bool),
        composition=np.zeros(b, np.int64),
    )


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, zeros where the loss does not reach a parameter."""
    out = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out, strict=True)]


def agent_slices(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every AgentwiseLinear parameter of a module (each with the agent axis first)."""
    return [p for name, p in module.named_parameters() if name.endswith(("weight", "bias"))]


def mpe_env(n_agents: int = 2, cycles: int = 5, envs: int = 4, seed: int = 0) -> tuple[Any, EnvSpec]:
    """Continuous cooperative navigation (mpe_spread), skipped where mpe2 is missing."""
    backend = registry.get_env("mpe_spread")
    args = backend.Args.model_validate({"local_ratio": 0.5, "max_cycles": cycles, "continuous_actions": True})
    comps = [backend.Composition.model_validate({"n_agents": n_agents})]
    if backend.missing_requirements(args):
        pytest.skip("needs mpe2")
    return backend(args, comps, envs, seed=seed), backend.describe(args, comps)


def saved_and_loaded(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
