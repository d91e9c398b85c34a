"""Weighted QMIX (OW-QMIX, CW-QMIX): the weightings, the unrestricted Q̂*, and the losses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_value_decomposition import (
    SPEC,
    RandomEpisodes,
    assert_same_loss,
    padded_batch,
    run_round,
    scramble_after_episode_end,
)

from algorithms.common.batch import NOW, taken_values
from algorithms.common.mixers import AttentionQMixer, UnrestrictedMixer
from algorithms.common.torch_utils import seeded
from algorithms.value_decomposition import QMIX, QMIXConfig
from algorithms.weighted_qmix import CWQMIX, OWQMIX, WeightedQMIXConfig, cw_weights, ow_weights
from harness.api import tunable_fields

G = SPEC.state_features
SMALL = {
    "attn_embed": 16,
    "attn_heads": 2,
    "rnn_hidden": 8,
    "batch_size": 4,
    "buffer_size": 50,
    "mixing_embed": 8,
    "hypernet_embed": 16,
    "hypernet_heads": 2,
}
WEIGHTED = [OWQMIX, CWQMIX]


def small_config(**overrides) -> WeightedQMIXConfig:
    return WeightedQMIXConfig(**{**SMALL, "central_mixing_embed": 16, "central_heads": 2, **overrides})


def collected(cls, seed: int = 4, rounds: int = 3, **overrides):
    learner = cls(SPEC, small_config(**overrides), 0, "cpu")
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(learner, env)
    return learner


# ------------------------------------------------------------------ the weightings


def test_optimistic_weights_on_hand_built_cases():
    q_tot = torch.tensor([1.0, 2.0, 3.0, -1.0])
    y = torch.tensor([2.0, 2.0, 1.0, 5.0])  # under, equal, over, under
    assert ow_weights(q_tot, y, 0.75).tolist() == [1.0, 0.75, 0.75, 1.0]
    assert ow_weights(q_tot, y, 0.1).tolist() == [1.0, pytest.approx(0.1), pytest.approx(0.1), 1.0]


def test_central_weights_on_hand_built_cases():
    y = torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0])
    central_greedy = torch.tensor([4.0, 6.0, 6.0, 5.0, 0.0])  # Q̂*(s, û)
    taken_is_greedy = torch.tensor([False, False, True, False, True])
    # y > Q̂*(û): 1 | y < Q̂*(û), u != û: α | u = û: 1 | y = Q̂*(û), u != û: α | both: 1
    assert cw_weights(y, central_greedy, taken_is_greedy, 0.75).tolist() == [1.0, 0.75, 1.0, 0.75, 1.0]


@pytest.mark.parametrize("cls", WEIGHTED)
def test_learner_weights_follow_the_rule(cls):
    learner = collected(cls, alpha=0.25)
    batch = learner.replay.sample(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = learner.terms(batch)
        mask = batch["filled"]
        weights = t.weights[mask]
        assert set(weights.tolist()) == {1.0, 0.25}  # both cases occur on this batch
        if cls is OWQMIX:
            assert torch.equal(weights == 1.0, (t.q_tot < t.target)[mask])
        else:
            # recompute the pieces independently: QMIX's greedy joint action and the target Q̂* of it
            inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
            q = learner.agent.unroll(*inputs)[:, NOW]
            avail = batch["avail_actions"][:, NOW]
            greedy = q.masked_fill(~avail, -1e9).argmax(-1)
            central = learner.target_central_agent.unroll(*inputs)[:, NOW]
            value = learner.target_central_mixer(
                taken_values(central, greedy),
                batch["state"][:, NOW],
                batch["state_mask"][:, NOW],
                batch["agent_mask"][:, NOW],
            )
            present = batch["agent_mask"][:, NOW]
            is_greedy = ((batch["actions"] == greedy) | ~present).all(-1)
            assert torch.equal(weights == 1.0, ((t.target > value) | is_greedy)[mask])


# ------------------------------------------------------------------ the losses


@pytest.mark.parametrize("cls", WEIGHTED)
def test_alpha_one_makes_the_qmix_part_plain_qmix_td_loss(cls):
    """With α = 1 the QMIX part is QMIX's TD loss on the same targets, value and gradient, and
    the central loss sends nothing into QMIX's agent and mixer."""
    learner = collected(cls, alpha=1.0)
    qmix = QMIX(SPEC, QMIXConfig(**SMALL), 0, "cpu")
    qmix.agent.load_state_dict(learner.agent.state_dict())
    qmix.mixer.load_state_dict(learner.mixer.state_dict())
    batch = learner.replay.sample(8, torch.Generator().manual_seed(1))

    t = learner.terms(batch)
    assert torch.equal(t.weights, torch.ones_like(t.weights))
    q = qmix.agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])
    plain, _ = qmix._td_loss(
        qmix._joint_value(qmix.mixer, q[:, NOW], batch["actions"], batch, NOW), t.target, batch
    )
    torch.testing.assert_close(t.qmix_loss, plain)

    own = [*learner.agent.parameters(), *learner.mixer.parameters()]
    mine = torch.autograd.grad(t.qmix_loss + t.central_loss, own)
    theirs = torch.autograd.grad(plain, [*qmix.agent.parameters(), *qmix.mixer.parameters()])
    for g1, g2 in zip(mine, theirs, strict=True):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("cls", WEIGHTED)
def test_down_weighting_scales_only_the_down_weighted_samples(cls):
    learner = collected(cls, alpha=0.25)
    batch = learner.replay.sample(8, torch.Generator().manual_seed(2))
    with torch.no_grad():
        t = learner.terms(batch)
        mask = batch["filled"]
        squared = torch.where(mask, t.q_tot - t.target, 0.0).pow(2)
        full, down = squared[t.weights == 1.0].sum(), squared[t.weights != 1.0].sum()
        torch.testing.assert_close(t.qmix_loss, (full + 0.25 * down) / mask.sum())
        torch.testing.assert_close(
            t.central_loss, torch.where(mask, t.central - t.target, 0.0).pow(2).sum() / mask.sum()
        )


@pytest.mark.parametrize("cls", WEIGHTED)
def test_targets_are_the_target_central_value_of_qmixs_greedy_next_action(cls):
    learner = collected(cls)  # one-step targets (td_lambda 0)
    batch = learner.replay.sample(8, torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = learner.terms(batch).target
        inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
        after = slice(1, None)
        greedy = (
            learner.agent.unroll(*inputs)[:, after]
            .masked_fill(~batch["avail_actions"][:, after], -1e9)
            .argmax(-1)
        )
        central = taken_values(learner.target_central_agent.unroll(*inputs)[:, after], greedy)
        bootstrap = learner.target_central_mixer(
            central, batch["state"][:, after], batch["state_mask"][:, after], batch["agent_mask"][:, after]
        )
        expected = batch["reward"] + learner.cfg.gamma * torch.where(batch["terminated"], 0.0, bootstrap)
        mask = batch["filled"]
        torch.testing.assert_close(y[mask], expected[mask])


@pytest.mark.parametrize("cls", WEIGHTED)
def test_padding_and_data_after_the_episode_end_do_not_change_the_loss(cls):
    learner = collected(cls, td_lambda=0.6)
    batch = learner.replay.sample(6, torch.Generator().manual_seed(1))
    assert_same_loss(learner, batch, scramble_after_episode_end(batch, 0))
    # an absent extra agent, a masked extra entity and a masked extra state row at the end
    assert_same_loss(learner, batch, padded_batch(batch, seed=2, trailing_state_row=True))


@pytest.mark.parametrize("cls", WEIGHTED)
def test_loss_is_finite_and_decreases_on_a_fixed_batch(cls):
    learner = collected(cls, lr=3e-3)
    batch = learner.replay.sample(8, torch.Generator().manual_seed(3))
    runs = [learner._train_step(batch) for _ in range(40)]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in runs)
    assert (
        runs[-1]["qmix_loss"] < 0.5 * runs[0]["qmix_loss"]
        and runs[-1]["central_loss"] < 0.5 * runs[0]["central_loss"]
    )


# ------------------------------------------------------------------ Q̂* is unrestricted, Q_tot monotone


def test_central_mixer_is_not_monotone_while_qmix_is():
    with seeded(0):
        central = UnrestrictedMixer(G, embed=32, heads=2)
        qmix = AttentionQMixer(G, embed=8, hyper_embed=16, heads=2)
    gen = torch.Generator().manual_seed(0)
    q = (torch.randn(256, 3, generator=gen) * 3).requires_grad_(True)
    state = torch.randn(256, 5, G, generator=gen)
    state_mask = torch.rand(256, 5, generator=gen) < 0.8
    state_mask[:, :3] = True
    present = torch.ones(256, 3, dtype=torch.bool)
    (central_grad,) = torch.autograd.grad(central(q, state, state_mask, present).sum(), q)
    (qmix_grad,) = torch.autograd.grad(qmix(q, state, state_mask, present).sum(), q)
    assert (central_grad < 0).any() and (central_grad > 0).any()
    assert (qmix_grad >= 0).all()


def test_central_mixer_ignores_absent_agents_and_masked_entities():
    with seeded(1):
        central = UnrestrictedMixer(G, embed=16, heads=2)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(4, 3, generator=gen)
    state = torch.randn(4, 5, G, generator=gen)
    present = torch.tensor([[True, True, False]] * 4)
    state_mask = torch.tensor([[True, True, False, True, False]] * 4)
    reference = central(q, state, state_mask, present)
    junk_q = torch.where(present, q, torch.randn(4, 3, generator=gen) * 100)
    junk_state = torch.where(state_mask.unsqueeze(-1), state, torch.randn(4, 5, G, generator=gen) * 100)
    torch.testing.assert_close(central(junk_q, junk_state, state_mask, present), reference)


# ------------------------------------------------------------------ configuration and wiring


def test_registered_with_the_papers_defaults():
    cfg = WeightedQMIXConfig()
    assert (OWQMIX.name, CWQMIX.name) == ("ow_qmix", "cw_qmix")
    assert OWQMIX.Config is WeightedQMIXConfig and CWQMIX.Config is WeightedQMIXConfig
    assert (cfg.optimiser, cfg.lr, cfg.batch_size, cfg.buffer_size, cfg.td_lambda) == (
        "rmsprop",
        5e-4,
        32,
        5000,
        0.0,
    )
    assert (cfg.alpha, cfg.central_mixing_embed, cfg.target_update_episodes, cfg.epsilon_anneal_steps) == (
        0.75,
        256,
        200,
        50_000,
    )
    assert cfg.double_q and "alpha" in tunable_fields(WeightedQMIXConfig)


@pytest.mark.parametrize("cls", WEIGHTED)
def test_one_optimiser_and_hard_targets_cover_the_central_networks(cls):
    learner = cls(SPEC, small_config(target_update_episodes=3), 0, "cpu")
    optimised = {id(p) for group in learner.optimiser.param_groups for p in group["params"]}
    central = [*learner.central_agent.parameters(), *learner.central_mixer.parameters()]
    assert {id(p) for p in central} <= optimised and {id(p) for p in learner.params} == optimised
    env = RandomEpisodes(5)
    run_round(learner, env)
    run_round(learner, env)  # 6 episodes: a gradient step, then a hard target update
    assert learner.grad_steps == 1 and learner.last_target_update == 6
    for online, target in (
        (learner.central_agent, learner.target_central_agent),
        (learner.central_mixer, learner.target_central_mixer),
    ):
        for p, t in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(p, t) and not t.requires_grad


def test_weights_do_not_depend_on_team_size():
    bigger = dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30)
    small, large = CWQMIX(SPEC, small_config(), 0, "cpu"), CWQMIX(bigger, small_config(), 0, "cpu")
    for p, p2 in zip(small.params, large.params, strict=True):
        assert torch.equal(p, p2)


# ------------------------------------------------------------------ learning (slow)


@pytest.mark.slow
def test_small_alpha_recovers_the_optimum_of_the_nonmonotonic_game(tmp_path: Path) -> None:
    """The matrix_games suite (budget short, 5 seeds) with α = 0.1, the authors' config value:
    both weightings end on (A,A) = 8, where QMIX settles on a B/C pair."""
    from test_matrix_learning import optimal_runs, run_suite

    report = run_suite(
        tmp_path,
        [
            "tasks=[nonmonotonic_3x3]",
            "algorithms=[ow_qmix, cw_qmix]",
            "params.ow_qmix.alpha=0.1",
            "params.cw_qmix.alpha=0.1",
        ],
    )
    for algorithm in ("ow_qmix", "cw_qmix"):
        assert optimal_runs(report, "nonmonotonic_3x3", algorithm) >= 4, algorithm
