"""MADDPG: target networks in the critic target, gradient routing of the actor loss, Polyak
averaging, exploration, checkpoints, and a short learning run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from off_policy_helpers import SPEC, agent_slices, grads, mpe_env, random_batch, random_step, saved_and_loaded

from algorithms.maddpg import MADDPG, MADDPGConfig
from harness.config import build_config
from harness.runner import rollout

A = SPEC.max_agents
SMALL = {"hidden": 16, "batch_size": 8, "buffer_size": 64}


def build(seed: int = 0, spec=SPEC, **params: object) -> MADDPG:  # noqa: ANN001
    return MADDPG(spec, build_config(MADDPG, {**SMALL, **params}), seed, "cpu")


def perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_critic_target_uses_the_target_actors_and_critics() -> None:
    algo = build()
    batch = random_batch(absent=True)
    y = algo.critic_targets(batch)
    # By hand: r + gamma (1 - d) Qbar_i(x', mubar(o')), zero where agent i is gone at x'.
    after = algo.batch_inputs(batch, "next_")
    mu_bar = torch.where(after.present.unsqueeze(-1), torch.tanh(algo.target_actor(after.obs)), 0.0)
    q_bar = algo.target_critic(algo.critic_input(after, mu_bar, mu_bar)).squeeze(-1)
    go_on = (~batch["terminated"]).unsqueeze(-1) & after.present
    expected = batch["reward"].unsqueeze(-1) + algo.cfg.gamma * torch.where(go_on, q_bar, 0.0)
    torch.testing.assert_close(y, expected)
    perturb(algo.actor, 1)
    perturb(algo.critic, 2)
    torch.testing.assert_close(algo.critic_targets(batch), y)  # the online networks play no part
    perturb(algo.target_actor, 3)
    assert not torch.allclose(algo.critic_targets(batch), y)


def test_each_actor_loss_reaches_only_its_own_actor() -> None:
    algo = build()
    losses = algo.actor_losses(random_batch(absent=True))
    params = agent_slices(algo.actor)
    for i in range(A):
        per_agent = grads(losses[i], params)
        assert sum(g[i].abs().sum() for g in per_agent) > 0
        assert all(g[[k for k in range(A) if k != i]].abs().sum() == 0 for g in per_agent)


def test_actor_loss_takes_the_others_actions_from_the_replay() -> None:
    algo = build()
    batch = random_batch()
    base = algo.actor_losses(batch).detach()
    own_changed = {**batch, "actions": batch["actions"].clone()}
    own_changed["actions"][:, 0] *= -1
    changed = algo.actor_losses(own_changed).detach()
    assert torch.equal(changed[0], base[0])  # agent 0's replayed action is replaced by mu_0(o_0)
    assert not torch.equal(changed[1:], base[1:])  # ... but the others' critics see it


def test_critic_loss_does_not_train_the_actors() -> None:
    algo = build()
    loss, _ = algo.critic_loss(random_batch())
    assert all(g.abs().sum() == 0 for g in grads(loss, list(algo.actor.parameters())))


def test_targets_follow_by_polyak_averaging() -> None:
    algo = build(tau=0.1)
    old_target = copy.deepcopy(algo.target_actor)
    algo._train_step(random_batch())
    for t, s, o in zip(algo.target_actor.parameters(), algo.actor.parameters(), old_target.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * s)


def test_exploration_noise_is_seeded_and_greedy_acting_is_deterministic() -> None:
    a, b = build(seed=4), build(seed=4)
    step = random_step()
    greedy, _ = a.act(step, None, explore=False)
    mu = torch.tanh(a.actor(a.step_inputs(step).obs)).detach().numpy()
    np.testing.assert_allclose(greedy, mu, rtol=1e-6)
    explored_a, _ = a.act(step, None, explore=True)
    explored_b, _ = b.act(step, None, explore=True)
    assert np.array_equal(explored_a, explored_b) and not np.array_equal(explored_a, greedy)
    assert (np.abs(explored_a) <= 1).all()
    assert np.array_equal(a.act(step, None, explore=False)[0], greedy)


@pytest.mark.parametrize("params", [{"noise_std": -0.1}, {"grad_norm_clip": 0.0}, {"batch_size": 0},
                                    {"critic_input": "everything"}, {"gamma": 1.5}])
def test_bad_configuration_is_rejected(params: dict) -> None:
    with pytest.raises(ValueError):
        build_config(MADDPG, {**SMALL, **params})


def test_defaults_are_the_papers() -> None:
    cfg = MADDPGConfig()
    assert (cfg.lr, cfg.gamma, cfg.tau, cfg.batch_size, cfg.buffer_size) == (3e-4, 0.99, 0.005, 128, 500_000)
    assert (cfg.hidden, cfg.hidden_layers) == (128, 2)
    assert MADDPG.action_spaces == ("continuous",)


def test_state_critic_input_and_checkpoint_round_trip() -> None:
    env, spec = mpe_env()
    algo = build(spec=spec, critic_input="state", grad_norm_clip=0.5)
    for _ in range(3):
        rollout(env, algo, explore=True, seed=None, learn=True)
        assert all(np.isfinite(v) for v in algo.update().values())
    clone = build(spec=spec, seed=9, critic_input="state", grad_norm_clip=0.5)
    clone.load_state_dict(saved_and_loaded(algo.state_dict()))
    env_a, _ = mpe_env(seed=7)
    env_b, _ = mpe_env(seed=7)
    rollout(env_a, algo, explore=True, seed=None, learn=True)
    rollout(env_b, clone, explore=True, seed=None, learn=True)
    assert algo.update() == clone.update()


@pytest.mark.slow
def test_maddpg_learns_cooperative_navigation() -> None:
    """Two agents, 25-step continuous cooperative navigation: after 16k env steps the greedy
    team return is clearly (>= 15%) better than the untrained policy's (fixed seed: ~30% here)."""
    torch.set_num_threads(1)
    env, spec = mpe_env(n_agents=2, cycles=25, envs=16, seed=1)
    evaluation, _ = mpe_env(n_agents=2, cycles=25, envs=32, seed=2)
    algo = MADDPG(spec, build_config(MADDPG, {"updates_per_env_step": 0.25, "gamma": 0.9, "lr": 1e-3, "hidden": 64}),
                  0, "cpu")

    def greedy() -> float:
        return float(rollout(evaluation, algo, explore=False, seed=123, learn=False)["returns"].mean())

    before = greedy()
    for _ in range(40):
        rollout(env, algo, explore=True, seed=None, learn=True)
        algo.update()
    after = greedy()
    assert after > before + 0.15 * abs(before), (before, after)
