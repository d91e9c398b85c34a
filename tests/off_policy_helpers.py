"""Fixtures shared by the tests of the off-policy actor-critics (VM3-AC family, MADDPG): a
small continuous spec and a small discrete one, random replay batches and steps, gradient
helpers, and the real continuous cooperative-navigation env."""

from __future__ import annotations

import dataclasses
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
U = 4  # discrete actions of DISCRETE_SPEC
DISCRETE_SPEC = dataclasses.replace(SPEC, n_actions=U, discrete=True)


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


def random_avail(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """A random available-action mask [..., U] with at least one action available per row."""
    avail = torch.rand(shape, generator=g) < 0.5
    first = torch.randint(shape[-1], shape[:-1], generator=g)
    return avail.scatter(-1, first.unsqueeze(-1), True)


def random_discrete_batch(spec: EnvSpec = DISCRETE_SPEC, size: int = 16, seed: int = 0,
                          absent: bool = False) -> dict[str, torch.Tensor]:
    """A discrete batch in the transition replay's layout: random available-action masks now
    and next, replayed actions drawn among the available ones, absent agents' actions 0."""
    batch = random_batch(spec, size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (size, spec.max_agents, spec.n_actions)
    batch["avail_actions"], batch["next_avail_actions"] = random_avail(shape, g), random_avail(shape, g)
    scores = torch.rand(shape, generator=g).masked_fill(~batch["avail_actions"], -1.0)
    batch["actions"] = scores.argmax(-1)
    if absent:  # the last agent is gone in half the batch, now and next
        for key in ("agent_mask", "next_agent_mask"):
            batch[key][::2, -1] = False
        batch["actions"][::2, -1] = 0
        batch["avail_actions"][::2, -1] = False
        batch["next_avail_actions"][::2, -1] = False
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


def mpe_env(n_agents: int = 2, cycles: int = 5, envs: int = 4, seed: int = 0,
            continuous: bool = True) -> tuple[Any, EnvSpec]:
    """Cooperative navigation (mpe_spread; continuous actions unless told), skipped where mpe2
    is missing."""
    backend = registry.get_env("mpe_spread")
    args = backend.Args.model_validate({"local_ratio": 0.5, "max_cycles": cycles, "continuous_actions": continuous})
    comps = [backend.Composition.model_validate({"n_agents": n_agents})]
    if backend.missing_requirements(args):
        pytest.skip("needs mpe2")
    return backend(args, comps, envs, seed=seed), backend.describe(args, comps)


def saved_and_loaded(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
