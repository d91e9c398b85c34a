"""Checkpoint methods built from what an algorithm declares, so that no algorithm writes
`state_dict` by hand.

An algorithm that mixes in `Checkpointed` declares:
- `_modules()`: its networks by name (targets included);
- `_optimisers()`: its optimisers by name;
- `_components()`: other parts with their own `state_dict` / `load_state_dict` (replay,
  episode collector, rollout store), by name;
- `counters`: names of the int or float attributes a resume must restore (`grad_steps`...);
- `_policy_modules()`: what acting needs (default: every module), for `best.pt` and partners;
and has a torch.Generator `generator`. A checkpoint is one flat mapping of those names, the
layout every algorithm here has always written, so older checkpoints still load.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Checkpointed:
    counters: ClassVar[tuple[str, ...]] = ("grad_steps",)
    generator: torch.Generator

    def _modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _components(self) -> dict[str, Any]:
        return {}

    def _policy_modules(self) -> dict[str, nn.Module]:
        return self._modules()

    def policy_state_dict(self) -> dict[str, Any]:
        """The networks acting needs, without optimisers or stored experience."""
        return {name: module.state_dict() for name, module in self._policy_modules().items()}

    def load_policy_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self._policy_modules().items():
            module.load_state_dict(state[name])

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: networks, optimisers, counters, the generator's state
        and the stateful components."""
        return {
            **{name: module.state_dict() for name, module in self._modules().items()},
            **{name: optimiser.state_dict() for name, optimiser in self._optimisers().items()},
            **{name: getattr(self, name) for name in self.counters},
            "generator": self.generator.get_state(),
            **{name: part.state_dict() for name, part in self._components().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        for name, optimiser in self._optimisers().items():
            optimiser.load_state_dict(state[name])
        for name in self.counters:
            setattr(self, name, type(getattr(self, name))(state[name]))
        self.generator.set_state(state["generator"])
        for name, part in self._components().items():
            part.load_state_dict(state[name])
