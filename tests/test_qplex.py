"""QPLEX: the duplex dueling mixer's invariants (algorithms.md §2.3, §6 "QPLEX") and the learner."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_value_decomposition import (
    SPEC,
    RandomEpisodes,
    U,
    assert_same_loss,
    padded_batch,
    run_round,
    scramble_after_episode_end,
)

from algorithms.common.batch import NOW
from algorithms.common.exploration import masked_argmax, masked_max
from algorithms.common.mixers import DuplexMixer
from algorithms.common.torch_utils import seeded
from algorithms.qplex import QPLEX, QPLEXConfig
from harness.api import tunable_fields

G = 3
PROPS = settings(max_examples=25, deadline=None)
SMALL = {
    "attn_embed": 16,
    "attn_heads": 2,
    "rnn_hidden": 8,
    "batch_size": 4,
    "buffer_size": 50,
    "hypernet_embed": 16,
    "hypernet_heads": 2,
    "adv_hypernet_embed": 8,
}


def make_mixer(seed: int, n_actions: int = U) -> DuplexMixer:
    with seeded(seed):
        return DuplexMixer(G, n_actions, hyper_embed=16, heads=2, kernels=4, adv_embed=8)


def random_inputs(seed: int, b: int, a: int, n: int, u: int = U, scale: float = 1.0):
    """Utilities [b, a, u], availability (at least one action each), a random available joint
    action, a state whose first a rows are the agents, and masks (agent 0 always present)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, a, u, generator=gen) * scale
    avail = torch.rand(b, a, u, generator=gen) < 0.6
    avail[..., 0] |= ~avail.any(-1)
    actions = masked_argmax(torch.rand(b, a, u, generator=gen), avail)
    state = torch.randn(b, n, G, generator=gen) * scale
    agent_mask = torch.rand(b, a, generator=gen) < 0.8
    agent_mask[:, 0] = True
    state_mask = torch.rand(b, n, generator=gen) < 0.8
    state_mask[:, :a] = agent_mask
    return q, avail, actions, state, state_mask, agent_mask


def q_tot(mixer: DuplexMixer, q, avail, actions, state, state_mask, agent_mask) -> torch.Tensor:
    taken = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return mixer(taken, masked_max(q, avail), actions, state, state_mask, agent_mask)


def small_config(**overrides) -> QPLEXConfig:
    return QPLEXConfig(**{**SMALL, **overrides})


# ------------------------------------------------------------------ the mixer


@PROPS
@given(
    seed=st.integers(0, 10_000),
    a=st.integers(1, 5),
    extra=st.integers(0, 3),
    u=st.integers(2, 6),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_lambda_and_w_are_positive(seed, a, extra, u, scale):
    mixer = make_mixer(seed % 5, u)
    q, avail, actions, state, state_mask, agent_mask = random_inputs(seed, 4, a, a + extra, u, scale)
    parts = mixer.parts(q[..., 0], masked_max(q, avail), actions, state, state_mask, agent_mask)
    assert (parts["weight"] > 0).all() and (parts["lambda"] > 0).all()
    assert torch.isfinite(parts["lambda"]).all()


@PROPS
@given(seed=st.integers(0, 10_000), a=st.integers(1, 5), extra=st.integers(0, 3))
def test_greedy_joint_action_has_zero_advantages_and_q_tot_is_the_sum_of_values(seed, a, extra):
    mixer = make_mixer(seed % 5)
    q, avail, _, state, state_mask, agent_mask = random_inputs(seed, 6, a, a + extra)
    greedy = masked_argmax(q, avail)
    taken, best = q.gather(-1, greedy.unsqueeze(-1)).squeeze(-1), masked_max(q, avail)
    parts = mixer.parts(taken, best, greedy, state, state_mask, agent_mask)
    assert torch.equal(parts["advantage"], torch.zeros_like(parts["advantage"]))
    torch.testing.assert_close(
        mixer(taken, best, greedy, state, state_mask, agent_mask), parts["value"].sum(-1)
    )
    # and V_i really is the transformed utility's max over the available actions
    transformed = parts["weight"].unsqueeze(-1) * q + parts["bias"].unsqueeze(-1)
    expected = torch.where(agent_mask, masked_max(transformed, avail), 0.0)
    torch.testing.assert_close(parts["value"], expected)


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_greedy_joint_action_is_the_unique_maximum(seed):
    """n = 3, |U| = 4, random availability: Q_tot(u) < Q_tot(u*) for every other available u."""
    n, u = 3, 4
    mixer = make_mixer(seed, u)
    q, avail, _, state, state_mask, _ = random_inputs(100 + seed, 1, n, n + 2, u)
    present = torch.ones(1, n, dtype=torch.bool)
    state_mask[:, :n] = True
    joint = torch.tensor(
        [c for c in itertools.product(range(u), repeat=n) if all(avail[0, i, c[i]] for i in range(n))]
    )  # [J, n]
    j = len(joint)
    values = q_tot(
        mixer,
        q.expand(j, -1, -1),
        avail.expand(j, -1, -1),
        joint,
        state.expand(j, -1, -1),
        state_mask.expand(j, -1),
        present.expand(j, -1),
    )
    greedy = masked_argmax(q, avail)[0]
    is_greedy = (joint == greedy).all(-1)
    assert is_greedy.sum() == 1 and j > 1
    assert (values[~is_greedy] < values[is_greedy]).all()


@PROPS
@given(seed=st.integers(0, 10_000), pad=st.integers(1, 3))
def test_absent_agents_and_masked_entities_change_nothing(seed, pad):
    mixer = make_mixer(seed % 5)
    a, n = 3, 5
    q, avail, actions, state, state_mask, agent_mask = random_inputs(seed, 4, a, n)
    reference = q_tot(mixer, q, avail, actions, state, state_mask, agent_mask)
    gen = torch.Generator().manual_seed(seed + 1)
    # new contents in the slots of absent agents and masked entities
    absent, masked = ~agent_mask, ~state_mask
    q2 = torch.where(absent.unsqueeze(-1), torch.randn(q.shape, generator=gen) * 100, q)
    actions2 = torch.where(absent, torch.randint(0, U, actions.shape, generator=gen), actions)
    avail2 = torch.where(absent.unsqueeze(-1), torch.rand(avail.shape, generator=gen) < 0.5, avail)
    state2 = torch.where(masked.unsqueeze(-1), torch.randn(state.shape, generator=gen) * 100, state)
    torch.testing.assert_close(q_tot(mixer, q2, avail2, actions2, state2, state_mask, agent_mask), reference)
    # a dead agent may keep its (visible) state row: its utilities and action still count for nothing
    visible = state_mask.clone()
    visible[:, :a] = True
    seen = q_tot(mixer, q, avail, actions, state, visible, agent_mask)
    torch.testing.assert_close(q_tot(mixer, q2, avail2, actions2, state, visible, agent_mask), seen)
    # more absent agent slots (their state rows follow the agents) and more masked entities
    junk_agents = dict(
        q=torch.randn(4, pad, U, generator=gen) * 100,
        avail=torch.rand(4, pad, U, generator=gen) < 0.5,
        actions=torch.randint(0, U, (4, pad), generator=gen),
        state=torch.randn(4, pad, G, generator=gen),
    )
    no = torch.zeros(4, pad, dtype=torch.bool)
    padded = q_tot(
        mixer,
        torch.cat([q, junk_agents["q"]], 1),
        torch.cat([avail, junk_agents["avail"]], 1),
        torch.cat([actions, junk_agents["actions"]], 1),
        torch.cat(
            [state[:, :a], junk_agents["state"], state[:, a:], torch.randn(4, pad, G, generator=gen)], 1
        ),
        torch.cat([state_mask[:, :a], no, state_mask[:, a:], no], 1),
        torch.cat([agent_mask, no], 1),
    )
    torch.testing.assert_close(padded, reference, atol=1e-5, rtol=1e-5)


def test_lambda_depends_on_every_agents_action():
    """The joint action reaches λ_i through all agents' rows, not only agent i's own action."""
    mixer = make_mixer(0)
    q, avail, actions, state, state_mask, _ = random_inputs(1, 1, 3, 4)
    present = torch.ones(1, 3, dtype=torch.bool)
    state_mask[:] = True
    other = actions.clone()
    other[0, 1] = (actions[0, 1] + 1) % U  # agent 1 changes its action, agent 0 does not
    lam = [
        mixer.parts(q[..., 0], q[..., 1], act, state, state_mask, present)["lambda"]
        for act in (actions, other)
    ]
    assert not torch.allclose(lam[0][0, 0], lam[1][0, 0])


def test_stop_gradient_utilities_learn_through_the_transformed_values_only():
    """dQ_tot/dq_i(u_i) = w_i and nothing reaches the other entries (pymarl2's is_stop_gradient)."""
    mixer = make_mixer(3)
    q, avail, actions, state, state_mask, agent_mask = random_inputs(3, 2, 3, 4)
    avail[:] = True
    q.requires_grad_(True)
    learner = QPLEX(dataclasses.replace(SPEC, state_features=G), small_config(), 0, "cpu")
    learner.mixer = mixer
    batch = {
        "avail_actions": avail.unsqueeze(1),
        "state": state.unsqueeze(1),
        "state_mask": state_mask.unsqueeze(1),
        "agent_mask": agent_mask.unsqueeze(1),
    }
    value = learner._joint_value(mixer, q.unsqueeze(1), actions.unsqueeze(1), batch, slice(None))
    (grad,) = torch.autograd.grad(value.sum(), q)
    w = mixer.parts(q[..., 0], q[..., 0], actions, state, state_mask, agent_mask)["weight"]
    expected = torch.zeros_like(q).scatter(
        -1, actions.unsqueeze(-1), torch.where(agent_mask, w, 0.0).unsqueeze(-1)
    )
    torch.testing.assert_close(grad, expected)


# ------------------------------------------------------------------ the learner


def test_registered_with_pymarl2_defaults():
    cfg = QPLEXConfig()
    assert QPLEX.name == "qplex" and QPLEX.Config is QPLEXConfig
    assert (cfg.optimiser, cfg.lr, cfg.td_lambda, cfg.batch_size, cfg.buffer_size) == (
        "adam",
        1e-3,
        0.6,
        128,
        5000,
    )
    assert cfg.double_q and cfg.target_update_episodes == 200 and cfg.epsilon_anneal_steps == 100_000
    assert (cfg.n_kernels, cfg.hypernet_embed, cfg.adv_hypernet_embed) == (4, 64, 64)
    assert tunable_fields(QPLEXConfig)["lr"]["low"] <= cfg.lr <= tunable_fields(QPLEXConfig)["lr"]["high"]
    learner = QPLEX(SPEC, small_config(), 0, "cpu")
    assert isinstance(learner.mixer, DuplexMixer) and isinstance(learner.optimiser, torch.optim.Adam)


def test_weights_do_not_depend_on_team_size():
    bigger = dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30)
    small, large = QPLEX(SPEC, small_config(), 0, "cpu"), QPLEX(bigger, small_config(), 0, "cpu")
    for p, p2 in zip(small.mixer.parameters(), large.mixer.parameters(), strict=True):
        assert torch.equal(p, p2)


def collected(seed: int = 4, rounds: int = 3, **overrides) -> QPLEX:
    learner = QPLEX(SPEC, small_config(**overrides), 0, "cpu")
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(learner, env)
    return learner


def test_unavailable_actions_do_not_enter_the_values():
    learner = collected()
    batch = learner.replay.sample(6, torch.Generator().manual_seed(0))
    q = learner.agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])[:, NOW].detach()
    unavailable = ~batch["avail_actions"][:, NOW]
    assert unavailable.any()
    values = [
        learner._joint_value(learner.mixer, torch.where(unavailable, fill, q), batch["actions"], batch, NOW)
        for fill in (1e6, -1e6)
    ]
    torch.testing.assert_close(values[0], values[1])


def test_padding_and_data_after_the_episode_end_do_not_change_the_loss():
    learner = collected(td_lambda=0.6)
    batch = learner.replay.sample(6, torch.Generator().manual_seed(1))
    assert_same_loss(learner, batch, scramble_after_episode_end(batch, 0))
    # an absent extra agent, a masked extra entity and a masked extra state row at the end
    assert_same_loss(learner, batch, padded_batch(batch, seed=2, trailing_state_row=True))


def test_loss_is_finite_and_decreases_on_a_fixed_batch():
    learner = collected(td_lambda=0.6, lr=3e-3)
    batch = learner.replay.sample(8, torch.Generator().manual_seed(3))
    losses = [learner._train_step(batch)["loss"] for _ in range(60)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
