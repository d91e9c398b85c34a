"""`harness new algorithm NAME`: write a working plugin module and its contract test."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from harness.config import COMMAND_LINE
from harness.errors import ConfigError

ALGORITHM_TEMPLATE = Template('''\
"""$cls: independent REINFORCE with a mean-return baseline (a starting point to edit).

Scaffolded by `harness new algorithm $name`. It implements the whole plugin protocol
(act / observe / update / state_dict) on the shared entity-attention agent, so it runs on
any suite and any team size. Replace the loss in `update` with your method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.common.exploration import masked_argmax, masked_log_softmax, sample_categorical
from algorithms.common.networks import RecurrentAgent
from algorithms.common.replay import EpisodeCollector, EpisodeReplay
from algorithms.common.targets import td_lambda_targets
from algorithms.common.torch_utils import make_generator, seeded, step_tensors
from harness.api import EnvSpec, Step, Transition, tunable
from harness.registry import register_algorithm


@dataclass
class ${cls}Config:
    lr: float = tunable(1e-3, 1e-4, 1e-2, log=True)
    entropy_coef: float = tunable(0.01, 0.0, 0.1)
    gamma: float = 0.99
    batch_size: int = 32  # episodes per update (on-policy: used once, then dropped)
    attn_embed: int = 64
    attn_heads: int = 4
    rnn_hidden: int = 64


@register_algorithm("$name")
class $cls:
    Config = ${cls}Config

    def __init__(self, env_spec: EnvSpec, config: ${cls}Config, seed: int, device: Any) -> None:
        self.cfg, self.device = config, torch.device(device)
        with seeded(seed):  # one seed gives the same initial weights every time
            self.policy = RecurrentAgent(env_spec.obs_features, env_spec.n_actions, config.attn_embed,
                                         config.attn_heads, config.rnn_hidden).to(self.device)
        self.optimiser = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.generator = make_generator(seed)  # all sampling goes through it: runs are reproducible
        # The collector turns the runner's batched steps into padded episodes.
        self.episodes = EpisodeReplay.for_spec(env_spec, capacity=config.batch_size + 4096)
        self.collector = EpisodeCollector(self.episodes)
        self.grad_steps = 0

    def act(self, step: Step, memory: Any, explore: bool) -> tuple[np.ndarray, Any]:
        x = step_tensors(step, self.device)
        with torch.inference_mode():
            if memory is None:  # start of an episode: fresh recurrent state
                memory = self.policy.initial_state(*x.agent_mask.shape, self.device)
            logits, memory = self.policy(x.obs, x.obs_mask, x.agent_mask, memory)
            if explore:
                actions = sample_categorical(logits, x.avail_actions, self.generator)
            else:
                actions = masked_argmax(logits, x.avail_actions)
            actions = torch.where(x.agent_mask, actions, 0)
        return actions.cpu().numpy(), memory

    def observe(self, transition: Transition) -> None:
        self.collector.observe(transition)

    def update(self) -> dict[str, float]:
        if len(self.episodes) < self.cfg.batch_size:
            return {}
        batch = {k: v.to(self.device) for k, v in self.episodes.sample(len(self.episodes), self.generator).items()}
        self.episodes.clear()  # on-policy: these episodes are now used up
        logits = self.policy.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])[:, :-1]
        log_pi = masked_log_softmax(logits, batch["avail_actions"][:, :-1])
        taken = log_pi.gather(-1, batch["actions"].long().unsqueeze(-1)).squeeze(-1)  # [B, T, A]
        no_bootstrap = torch.zeros_like(batch["reward"])
        returns = td_lambda_targets(batch["reward"], batch["terminated"], batch["filled"], no_bootstrap,
                                    self.cfg.gamma, lam=1.0)  # Monte-Carlo return-to-go
        mask = (batch["filled"].unsqueeze(-1) & batch["agent_mask"][:, :-1]).float()
        advantage = (returns - returns[batch["filled"]].mean()).unsqueeze(-1)
        entropy = -(log_pi.exp() * log_pi).sum(-1)
        loss = -((taken * advantage + self.cfg.entropy_coef * entropy) * mask).sum() / mask.sum()
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.grad_steps += 1
        return {"loss": loss.item(), "return": returns[:, 0].mean().item(),
                "entropy": ((entropy * mask).sum() / mask.sum()).item()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "generator": self.generator.get_state(),
            "episodes": self.episodes.state_dict(),
            "collector": self.collector.state_dict(),
            "grad_steps": self.grad_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.generator.set_state(state["generator"])
        self.episodes.load_state_dict(state["episodes"])
        self.collector.load_state_dict(state["collector"])
        self.grad_steps = int(state["grad_steps"])
''')

# Runs under pytest, and as a plain script (`python tests/test_algo_NAME.py`) for users who
# installed `.[all]` without the dev extras that bring pytest.
TEST_TEMPLATE = Template('''\
"""Contract test for the $name plugin (scaffolded by `harness new algorithm $name`).
Run it with pytest, or as a script: python $test_path"""

from harness.testing import check_algorithm


def test_${name}_keeps_the_plugin_contract() -> None:
    check_algorithm("$name")


if __name__ == "__main__":
    test_${name}_keeps_the_plugin_contract()
    print("$name keeps the plugin contract")
''')


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\\-]+", name) if part) or "Algorithm"


def _default_dirs() -> tuple[Path, Path]:
    from harness import registry

    package_dir = registry.builtin_algorithms_dir()
    tests_dir = package_dir.parent / "tests"
    return package_dir, tests_dir


def new_algorithm(name: str, directory: str | None = None, tests: str | None = None) -> list[Path]:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ConfigError.single(("name",), "expected a lowercase Python identifier such as my_alg", found=name,
                                 file=COMMAND_LINE)
    from harness import registry

    if name in registry.algorithm_names():
        raise ConfigError.single(("name",), "an algorithm with this name is already registered", found=name,
                                 file=COMMAND_LINE)
    package_dir, tests_dir = _default_dirs()
    module = Path(directory) / f"{name}.py" if directory else package_dir / f"{name}.py"
    test = Path(tests) / f"test_algo_{name}.py" if tests else tests_dir / f"test_algo_{name}.py"
    for path in (module, test):
        if path.exists():
            raise ConfigError.single(("name",), f"{path} already exists; pick another name", found=name,
                                     file=COMMAND_LINE)
    module.parent.mkdir(parents=True, exist_ok=True)
    test.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(ALGORITHM_TEMPLATE.substitute(name=name, cls=_class_name(name)))
    test.write_text(TEST_TEMPLATE.substitute(name=name, test_path=test))
    return [module, test]
