"""CollaQ (algorithms.md §2.5, §6 "CollaQ")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_value_decomposition import (
    GAME_SPEC,
    SPEC,
    RandomEpisodes,
    U,
    assert_loss_ignores_data_after_episode_end,
    greedy_after_one_step_game,
    padded_batch,
    run_round,
)

from algorithms.collaq import CollaQ, CollaQAgent, CollaQConfig, mara_loss
from algorithms.common.batch import NOW
from algorithms.common.torch_utils import seeded
from algorithms.refil import AQMIX
from harness import registry
from harness.api import tunable_fields

SMALL = {
    "attn_embed": 16, "attn_heads": 2, "rnn_hidden": 8, "batch_size": 4, "buffer_size": 50,
    "mixing_embed": 8, "hypernet_embed": 16, "hypernet_heads": 2,
}


def small(cls=CollaQ, **overrides):
    return cls.Config(**{**SMALL, **overrides})


def filled_batch(alg, seed: int, rounds: int = 3, size: int = 6) -> dict[str, torch.Tensor]:
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(alg, env)
    return alg.replay.sample(size, torch.Generator().manual_seed(seed))


def make_agent(seed: int = 0) -> CollaQAgent:
    with seeded(seed):
        return CollaQAgent(4, U, embed=16, heads=2, hidden=8)


def test_registered_with_collaq_defaults():
    assert registry.get_algorithm("collaq") is CollaQ and CollaQ.Config is CollaQConfig
    cfg = CollaQConfig()
    assert (cfg.mara_weight, cfg.epsilon_anneal_steps, cfg.buffer_size, cfg.target_update_episodes) == (1.0, 50_000, 5000, 200)
    assert cfg.double_q and (cfg.attn_embed, cfg.rnn_hidden) == (128, 64)
    assert "mara_weight" in tunable_fields(CollaQConfig)


def test_utility_is_the_sum_of_the_self_and_interactive_terms():
    agent = make_agent()
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 5, 3, 4, 4, generator=gen)
    mask = torch.rand(2, 5, 3, 4, generator=gen) < 0.7
    mask[..., 0] = True
    present = torch.rand(2, 5, 3, generator=gen) < 0.8
    with torch.no_grad():
        q_self, q_int, _ = agent.unroll_parts(obs, mask, present)
        torch.testing.assert_close(agent.unroll(obs, mask, present), q_self + q_int, atol=0, rtol=0)
        # the parts are the two networks: alone on row 0 only, interactive on everything
        torch.testing.assert_close(q_self, agent.alone.unroll(obs[..., :1, :], mask[..., :1], present), atol=0, rtol=0)
        torch.testing.assert_close(q_int, agent.interactive.unroll(obs, mask, present), atol=0, rtol=0)
        # step by step (acting) gives the same sum as the unrolled episodes
        h = agent.initial_state(2, 3)
        assert h.shape == (2, 3, 16)
        for t in range(5):
            q, h = agent(obs[:, t], mask[:, t], present[:, t], h)
            torch.testing.assert_close(q, q_self[:, t] + q_int[:, t], atol=1e-6, rtol=1e-6)


def test_the_self_term_sees_only_the_own_row():
    agent = make_agent(1)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 4, 3, 5, 4, generator=gen)
    mask = torch.ones(2, 4, 3, 5, dtype=torch.bool)
    present = torch.ones(2, 4, 3, dtype=torch.bool)
    others = obs.clone()
    others[..., 1:, :] = torch.randn(2, 4, 3, 4, 4, generator=gen) * 100
    other_mask = mask.clone()
    other_mask[..., 1:] = torch.rand(2, 4, 3, 4, generator=gen) < 0.5
    with torch.no_grad():
        a, b = agent.unroll_parts(obs, mask, present), agent.unroll_parts(others, other_mask, present)
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)  # q_self unchanged
    torch.testing.assert_close(a[2], b[2], atol=0, rtol=0)  # q_int on o^self unchanged
    assert not torch.allclose(a[1], b[1])  # q_int does see the others


def test_mara_loss_is_zero_when_the_interactive_term_is_zero_on_self_only_input():
    alg = CollaQ(SPEC, small(), 0, "cpu")
    batch = filled_batch(CollaQ(SPEC, small(), 1, "cpu"), 2)
    with torch.no_grad():
        _, stats = alg.loss(batch)
    assert stats["mara_loss"] > 0
    with torch.no_grad():
        alg.agent.interactive.head.weight.zero_()
        alg.agent.interactive.head.bias.zero_()
        _, stats = alg.loss(batch)
    assert stats["mara_loss"] == 0.0
    # and its value is the masked mean of q_int(o^self)^2 over available (t, i, u)
    q = torch.randn(2, 3, 2, U)
    batch = {
        "filled": torch.tensor([[True, True, False], [True, False, False]]),
        "agent_mask": torch.tensor([[[True, False]] * 4, [[True, True]] * 4]),
        "avail_actions": torch.rand(2, 4, 2, U) < 0.5,
    }
    keep = batch["filled"][..., None, None] & batch["agent_mask"][:, NOW, :, None] & batch["avail_actions"][:, NOW]
    torch.testing.assert_close(mara_loss(q, batch), q[keep].pow(2).mean())


def test_mara_weight_zero_is_the_td_loss_on_the_sum_and_gradients_reach_both_networks():
    batch = filled_batch(CollaQ(SPEC, small(), 1, "cpu"), 3)
    plain = CollaQ(SPEC, small(mara_weight=0.0), 0, "cpu")
    full = CollaQ(SPEC, small(), 0, "cpu")
    loss0, stats0 = plain.loss(batch)
    loss1, stats1 = full.loss(batch)
    assert loss0.item() == stats0["td_loss"] and stats0["td_loss"] == stats1["td_loss"]
    torch.testing.assert_close(loss1, loss0 + stats1["mara_loss"])
    loss1.backward()
    for net in (full.agent.alone, full.agent.interactive, full.mixer):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # MARA alone trains only the interactive network
    full.optimiser.zero_grad()
    q_self, q_int, q_alone = full.agent.unroll_parts(batch["obs"], batch["obs_mask"], batch["agent_mask"])
    mara_loss(q_alone[:, NOW], batch).backward()
    assert all(p.grad is None or not p.grad.any() for p in full.agent.alone.parameters())


def test_padding_agents_and_entities_does_not_change_the_loss():
    alg = CollaQ(SPEC, small(), 0, "cpu")
    batch = filled_batch(alg, 4)
    padded = padded_batch(batch)
    with torch.no_grad():
        (loss, stats), (loss2, stats2) = alg.loss(batch), alg.loss(padded)
    torch.testing.assert_close(loss2, loss, atol=1e-5, rtol=1e-5)
    assert stats2["mara_loss"] == pytest.approx(stats["mara_loss"], abs=1e-6)


def test_data_after_the_episode_end_does_not_change_the_loss():
    alg = CollaQ(SPEC, small(td_lambda=0.6), 0, "cpu")
    env = RandomEpisodes(3)
    for _ in range(4):
        run_round(alg, env)
    batch = alg.replay.sample(8, torch.Generator().manual_seed(0))
    assert_loss_ignores_data_after_episode_end(alg, batch)


def test_update_runs_reports_and_is_reproducible():
    runs = []
    for _ in range(2):
        alg = CollaQ(SPEC, small(updates_per_round=2, target_update_episodes=5), 7, "cpu")
        env = RandomEpisodes(5)
        metrics = [run_round(alg, env)[1] for _ in range(3)]
        runs.append((metrics, [p.detach().clone() for p in alg.params]))
    (m1, p1), (m2, p2) = runs
    assert m1[0] == {} and m1 == m2
    assert {"loss", "td_loss", "mara_loss", "grad_norm", "epsilon"} <= m1[-1].keys()
    assert all(np.isfinite(v) for v in m1[-1].values())
    assert all(torch.equal(p, q) for p, q in zip(p1, p2, strict=True))
    assert len(p1) > len(AQMIX(SPEC, small(AQMIX), 0, "cpu").params)  # two agent networks


def test_learns_the_optimum_of_a_one_step_game():
    cfg = small(rnn_hidden=16, epsilon_anneal_steps=1000, lr=5e-3, target_update_episodes=20,
                batch_size=32, buffer_size=500)
    assert greedy_after_one_step_game(CollaQ(GAME_SPEC, cfg, 0, "cpu"), steps=3000) == [[0, 0]]
