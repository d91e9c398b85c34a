from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SMOKE_SUITE = """\
name: {name}
metric: return
seeds: {seeds}
budget: smoke
budgets:
  smoke: {{env_steps: 256, eval_every: 128, eval_episodes: 4}}
algorithms: {algorithms}
workers: {workers}
store: sqlite:///{dir}/store.db
checkpoint_dir: {dir}/checkpoints
params:
  "*": {{attn_embed: 16, attn_heads: 2, rnn_hidden: 16, epsilon_anneal_steps: 200, target_update_episodes: 20,
         batch_size: 16, buffer_size: 200}}
tasks:
  climbing:
    env: matrix
    args: {{game: climbing}}
    num_envs: 8
  two_type:
    env: matrix
    args: {{game: two_type}}
    num_envs: 8
    train: [{{types: [A, B]}}, {{types: [B, A]}}]
    test: [{{types: [B, B]}}]
"""


@pytest.fixture
def smoke_suite(tmp_path: Path):
    """Factory: write a small two-task matrix suite (store and checkpoints inside tmp_path)."""

    def make(algorithms: str = "[iql, vdn, qmix]", seeds: int = 2, workers: int = 0, name: str = "smoke") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(SMOKE_SUITE.format(name=name, seeds=seeds, algorithms=algorithms,
                                                           workers=workers, dir=tmp_path)))
        return path

    return make
