"""Properties of the shared algorithm blocks (algorithms.md §6, "Common building blocks")."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from algorithms.common.exploration import (
    LinearSchedule,
    epsilon_greedy,
    masked_argmax,
    masked_max,
    random_available,
)
from algorithms.common.mixers import AttentionQMixer, FlatQMixer, SumMixer
from algorithms.common.networks import (
    EntityAttention,
    EntityEncoder,
    FlatEncoder,
    RecurrentAgent,
    unroll_gru,
)
from algorithms.common.replay import EpisodeReplay, Field
from algorithms.common.targets import hard_update, soft_update, td_lambda_targets
from algorithms.common.torch_utils import make_generator, seeded

F, G, U = 5, 4, 4
PROPS = settings(max_examples=15, deadline=None)


def make_agent(seed: int = 0) -> RecurrentAgent:
    with seeded(seed):
        return RecurrentAgent(F, U, embed=16, heads=4, hidden=8)


def make_mixer(seed: int = 0, kind: str = "attention") -> AttentionQMixer | FlatQMixer:
    with seeded(seed):
        if kind == "flat":
            return FlatQMixer(G, max_entities=12, max_agents=8, embed=8, hyper_embed=16)
        return AttentionQMixer(G, embed=8, hyper_embed=16, heads=2)


def entity_batch(seed: int, b: int, a: int, e: int):
    """Random observations with row 0 always visible and some other rows masked."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, a, e, F, generator=gen)
    mask = torch.rand(b, a, e, generator=gen) < 0.6
    mask[..., 0] = True
    h = torch.randn(b, a, 8, generator=gen)
    return obs, mask, h


# ------------------------------------------------------------------ agent network


@PROPS
@given(seed=st.integers(0, 10_000), b=st.integers(1, 3), a=st.integers(1, 4), e=st.integers(1, 5), pad=st.integers(1, 3))
def test_padded_entity_rows_change_nothing(seed, b, a, e, pad):
    agent = make_agent(seed % 7)
    obs, mask, h = entity_batch(seed, b, a, e)
    present = torch.ones(b, a, dtype=torch.bool)
    q, h1 = agent(obs, mask, present, h)
    junk = torch.randn(b, a, pad, F) * 100
    padded_obs = torch.cat([obs, junk], dim=2)
    padded_mask = torch.cat([mask, torch.zeros(b, a, pad, dtype=torch.bool)], dim=2)
    q_pad, h_pad = agent(padded_obs, padded_mask, present, h)
    torch.testing.assert_close(q_pad, q, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_pad, h1, atol=1e-6, rtol=0)
    # masked rows in the middle, with junk in them, are no different from rows left out
    middle = obs.clone()
    middle[~mask] = torch.randn(int((~mask).sum()), F) * 100
    torch.testing.assert_close(agent(middle, mask, present, h)[0], q, atol=1e-6, rtol=0)


@PROPS
@given(seed=st.integers(0, 10_000), a=st.integers(1, 4), e=st.integers(2, 6))
def test_permuting_non_self_rows_changes_nothing(seed, a, e):
    agent = make_agent()
    obs, mask, h = entity_batch(seed, 2, a, e)
    present = torch.ones(2, a, dtype=torch.bool)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(e - 1)])
    q, _ = agent(obs, mask, present, h)
    q_perm, _ = agent(obs[:, :, perm], mask[:, :, perm], present, h)
    torch.testing.assert_close(q_perm, q, atol=1e-5, rtol=1e-5)


def test_absent_agents_are_zero_and_do_not_leak():
    agent = make_agent()
    obs, mask, h = entity_batch(1, 2, 3, 4)
    present = torch.tensor([[True, False, True], [False, True, True]])
    q, h1 = agent(obs, mask, present, h)
    assert torch.all(q[~present] == 0) and torch.all(h1[~present] == 0)
    junk_obs = torch.where(present[..., None, None], obs, torch.randn_like(obs) * 100)
    q2, _ = agent(junk_obs, mask, present, h)
    torch.testing.assert_close(q2, q, atol=0, rtol=0)


def test_all_masked_entities_give_zero_attention_not_nan():
    attn = EntityAttention(8, 2)
    x = torch.randn(3, 4, 8)
    out = attn(x[:, :1], x, torch.zeros(3, 4, dtype=torch.bool))
    torch.testing.assert_close(out, attn.out.bias.expand_as(out).detach())  # projection of 0
    agent = make_agent()
    q, _ = agent(torch.randn(2, 2, 3, F), torch.zeros(2, 2, 3, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool),
                 torch.zeros(2, 2, 8))
    assert torch.isfinite(q).all()
    q.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in agent.parameters() if p.grad is not None)


@pytest.mark.parametrize("everyone_present", [False, True])  # True takes the fused multi-step GRU
def test_unroll_matches_stepwise_forward_with_the_same_gradients(everyone_present):
    agent = make_agent()
    obs = torch.randn(2, 5, 3, 4, F)
    mask = torch.rand(2, 5, 3, 4) < 0.7
    present = torch.ones(2, 5, 3, dtype=torch.bool) if everyone_present else torch.rand(2, 5, 3) < 0.8
    q_unrolled = agent.unroll(obs, mask, present)
    h, stepwise = agent.initial_state(2, 3), []
    for t in range(5):
        q, h = agent(obs[:, t], mask[:, t], present[:, t], h)
        stepwise.append(q)
    torch.testing.assert_close(q_unrolled, torch.stack(stepwise, 1))
    params = list(agent.parameters())
    for unrolled_grad, step_grad in zip(torch.autograd.grad(q_unrolled.square().sum(), params),
                                        torch.autograd.grad(torch.stack(stepwise, 1).square().sum(), params),
                                        strict=True):
        torch.testing.assert_close(unrolled_grad, step_grad, atol=1e-5, rtol=1e-4)


def stepwise_gru(cell: nn.GRUCell, x: torch.Tensor, present: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The definition `unroll_gru` must match: step the cell from h0 (default zero), zero the
    state of absent agents."""
    h, states = x.new_zeros(x.shape[0], x.shape[2], cell.hidden_size) if h0 is None else h0, []
    for t in range(x.shape[1]):
        h = torch.where(present[:, t, :, None], cell(x[:, t].flatten(0, 1), h.flatten(0, 1)).view_as(h), 0.0)
        states.append(h)
    return torch.stack(states, 1)


@PROPS
@given(seed=st.integers(0, 10_000), shape=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 4)),
       density=st.sampled_from([0.0, 0.3, 0.8, 1.0]), from_h0=st.booleans())
def test_packed_runs_of_presence_match_the_stepwise_gru(seed, shape, density, from_h0):
    gen = torch.Generator().manual_seed(seed)
    cell = nn.GRUCell(3, 5)
    x = torch.randn(*shape, 3, generator=gen, requires_grad=True)
    present = torch.rand(*shape, generator=gen) < density  # gaps: agents leave and come back
    h0 = torch.randn(shape[0], shape[2], 5, generator=gen, requires_grad=True) if from_h0 else None
    expected, got = stepwise_gru(cell, x, present, h0), unroll_gru(cell, x, present, h0)
    torch.testing.assert_close(got, expected)
    if not present.any():  # nothing to compute: zeros, with no gradient path at all
        return
    params = [x, *cell.parameters(), *([h0] if from_h0 else [])]
    for g1, g2 in zip(torch.autograd.grad(got.square().sum(), params, allow_unused=True),
                      torch.autograd.grad(expected.square().sum(), params, allow_unused=True), strict=True):
        zero = torch.zeros_like(g1 if g2 is None else g2)
        torch.testing.assert_close(zero if g1 is None else g1, zero if g2 is None else g2, atol=1e-5, rtol=1e-4)


@PROPS
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 7), density=st.sampled_from([0.5, 0.9, 1.0]))
def test_a_sequence_cut_in_two_goes_on_from_the_state_it_was_cut_at(seed, cut, density):
    gen = torch.Generator().manual_seed(seed)
    cell = nn.GRUCell(3, 5)
    x = torch.randn(3, 8, 2, 3, generator=gen)
    present = torch.rand(3, 8, 2, generator=gen) < density
    with torch.no_grad():
        whole = unroll_gru(cell, x, present)
        rest = unroll_gru(cell, x[:, cut:], present[:, cut:], whole[:, cut - 1])
    torch.testing.assert_close(rest, whole[:, cut:])


# ------------------------------------------------------------------ action selection


@PROPS
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.0, 0.5, 1.0]))
def test_masked_actions_never_chosen(seed, eps):
    gen = torch.Generator().manual_seed(seed)
    avail = torch.rand(64, 3, U, generator=gen) < 0.5
    avail[0, 0] = False  # an all-masked row
    values = torch.randn(64, 3, U, generator=gen)
    values = torch.where(avail, values, 1e9)  # the largest raw values sit on masked actions
    actions = epsilon_greedy(values, avail, eps, gen)
    has_any = avail.any(-1)
    assert torch.all(avail.gather(-1, actions.unsqueeze(-1)).squeeze(-1) | ~has_any)
    assert actions[0, 0] == 0
    best = masked_max(values, avail)
    assert torch.isfinite(best).all() and best[0, 0] == 0
    assert torch.all(best[has_any] < 1e9)


def test_random_available_is_uniform_over_available():
    avail = torch.tensor([[True, False, True, True]]).expand(30_000, 4)
    counts = torch.bincount(random_available(avail, make_generator(0)), minlength=4).float() / 30_000
    assert counts[1] == 0
    torch.testing.assert_close(counts[[0, 2, 3]], torch.full((3,), 1 / 3), atol=0.02, rtol=0)


def test_greedy_matches_masked_argmax_and_uses_no_randomness():
    gen = make_generator(3)
    before = gen.get_state()
    values, avail = torch.randn(8, 2, U), torch.rand(8, 2, U) < 0.7
    assert torch.equal(epsilon_greedy(values, avail, 0.0, gen), masked_argmax(values, avail))
    assert torch.equal(gen.get_state(), before)


def test_linear_schedule():
    sched = LinearSchedule(1.0, 0.05, 100)
    assert sched(0) == 1.0 and sched(100) == pytest.approx(0.05) and sched(10**6) == pytest.approx(0.05)
    assert sched(50) == pytest.approx(0.525)


# ------------------------------------------------------------------ mixers


def mixer_inputs(seed: int, b: int, a: int, n_extra: int):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, a, generator=gen)
    state = torch.randn(b, a + n_extra, G, generator=gen)
    state_mask = torch.rand(b, a + n_extra, generator=gen) < 0.7
    agent_mask = torch.rand(b, a, generator=gen) < 0.8
    state_mask[:, :a] = agent_mask  # agents are listed first in the state
    return q, state, state_mask, agent_mask


def test_vdn_gradient_is_one_per_present_agent():
    q, state, state_mask, agent_mask = mixer_inputs(0, 4, 3, 2)
    q.requires_grad_(True)
    SumMixer()(q, state, state_mask, agent_mask).sum().backward()
    assert torch.equal(q.grad, agent_mask.float())


@PROPS
@given(seed=st.integers(0, 10_000), a=st.integers(1, 5), n_extra=st.integers(0, 4))
@pytest.mark.parametrize("kind", ["attention", "flat"])
def test_qmix_is_monotone(kind, seed, a, n_extra):
    mixer = make_mixer(seed % 5, kind)
    q, state, state_mask, agent_mask = mixer_inputs(seed, 8, a, n_extra)
    q = (q * 5).requires_grad_(True)
    mixer(q, state, state_mask, agent_mask).sum().backward()
    assert torch.all(q.grad >= 0)
    assert torch.all(q.grad[~agent_mask] == 0)


@PROPS
@given(seed=st.integers(0, 10_000), pad=st.integers(1, 3))
def test_qmix_padding_changes_nothing(seed, pad):
    mixer = make_mixer(seed % 5)
    q, state, state_mask, agent_mask = mixer_inputs(seed, 6, 3, 2)
    agent_mask[:, 0] = True  # agent 0 and its state row exist; used for the slot test below
    state_mask[:, 0] = True
    q_tot = mixer(q, state, state_mask, agent_mask)
    # masked state rows with junk appended at the end
    junk = torch.randn(6, pad, G) * 100
    padded_state = torch.cat([state, junk], 1)
    padded_mask = torch.cat([state_mask, torch.zeros(6, pad, dtype=torch.bool)], 1)
    torch.testing.assert_close(mixer(q, padded_state, padded_mask, agent_mask), q_tot, atol=1e-6, rtol=0)
    # an absent agent slot (junk utility, junk masked state row) after the agents
    q_slot = torch.cat([q, torch.randn(6, 1) * 100], 1)
    state_slot = torch.cat([state[:, :3], torch.randn(6, 1, G) * 100, state[:, 3:]], 1)
    mask_slot = torch.cat([state_mask[:, :3], torch.zeros(6, 1, dtype=torch.bool), state_mask[:, 3:]], 1)
    agents_slot = torch.cat([agent_mask, torch.zeros(6, 1, dtype=torch.bool)], 1)
    torch.testing.assert_close(mixer(q_slot, state_slot, mask_slot, agents_slot), q_tot, atol=1e-5, rtol=1e-5)


@PROPS
@given(seed=st.integers(0, 10_000), agents=st.integers(0, 3), rows=st.integers(0, 4))
def test_flat_qmix_trailing_padding_changes_nothing_and_oversize_is_refused(seed, agents, rows):
    """The flat mixer zero-pads to its sizes, so absent agents and masked rows appended at the
    end (junk inside) leave Q_tot alone; more than it was built for is an error, not a crop."""
    mixer = make_mixer(seed % 5, "flat")
    q, state, state_mask, agent_mask = mixer_inputs(seed, 6, 3, 2)
    q_tot = mixer(q, state, state_mask, agent_mask)
    q_pad = torch.cat([q, torch.randn(6, agents) * 100], 1)
    absent = torch.cat([agent_mask, torch.zeros(6, agents, dtype=torch.bool)], 1)
    state_pad = torch.cat([state, torch.randn(6, rows, G) * 100], 1)
    hidden = torch.cat([state_mask, torch.zeros(6, rows, dtype=torch.bool)], 1)
    torch.testing.assert_close(mixer(q_pad, state_pad, hidden, absent), q_tot, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at most 12 state rows"):
        mixer(q, torch.zeros(6, 13, G), torch.ones(6, 13, dtype=torch.bool), agent_mask)
    with pytest.raises(ValueError, match="at most 8 agents"):
        mixer(torch.zeros(6, 9), state, state_mask, torch.ones(6, 9, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["vdn", "qmix"])
def test_brute_force_igm(seed, kind):
    """n = 3 agents, |U| = 4: the best of all 64 joint actions is the per-agent argmax."""
    mixer = make_mixer(seed) if kind == "qmix" else SumMixer()
    gen = torch.Generator().manual_seed(seed)
    utilities = torch.randn(3, U, generator=gen) * 3
    state, state_mask = torch.randn(1, 5, G, generator=gen), torch.ones(1, 5, dtype=torch.bool)
    joints = torch.tensor(list(itertools.product(range(U), repeat=3)))  # [64, 3]
    q = utilities.T.gather(0, joints)  # q[j, i] = utilities[i, joints[j, i]]
    with torch.no_grad():
        q_tot = mixer(q, state.expand(64, -1, -1), state_mask.expand(64, -1), torch.ones(64, 3, dtype=torch.bool))
    greedy = utilities.argmax(-1)
    at_greedy = q_tot[(joints == greedy).all(-1)].item()
    assert at_greedy >= q_tot.max().item() - 1e-6
    assert torch.equal(joints[q_tot.argmax()], greedy)


# ------------------------------------------------------------------ targets


def lambda_return_reference(r, term, length, boot, gamma, lam):
    """Forward view: G^lam_t = (1-lam) sum_n lam^(n-1) G^(n)_t, the tail weight on the last
    n-step return (B at a terminal state = 0), for one episode of `length` steps."""
    out = np.zeros(length)
    for t in range(length):
        horizon = length - t

        def n_step(n, t=t):
            ret = sum(gamma**k * r[t + k] for k in range(n))
            last = t + n - 1
            return ret + (0.0 if term[last] else gamma**n * boot[last])

        out[t] = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, horizon)) + lam ** (horizon - 1) * n_step(horizon)
    return out


@PROPS
@given(seed=st.integers(0, 10_000), lam=st.sampled_from([0.0, 0.3, 0.8, 1.0]), terminated=st.booleans())
def test_td_lambda_matches_forward_view(seed, lam, terminated):
    rng = np.random.default_rng(seed)
    steps, length, gamma = 6, int(rng.integers(1, 7)), 0.9
    r = rng.normal(size=(1, steps)).astype(np.float32)
    boot = rng.normal(size=(1, steps)).astype(np.float32)
    term = np.zeros((1, steps), bool)
    term[0, length - 1] = terminated
    filled = np.arange(steps)[None] < length
    got = td_lambda_targets(*map(torch.from_numpy, (r, term, filled, boot)), gamma, lam)[0, :length]
    want = lambda_return_reference(r[0], term[0], length, boot[0], gamma, lam)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_td_lambda_zero_is_one_step_and_one_is_monte_carlo():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    term = torch.tensor([[False, False, True, False]])
    filled = torch.tensor([[True, True, True, False]])
    boot = torch.tensor([[10.0, 20.0, 30.0, float("inf")]])  # junk after termination
    one_step = td_lambda_targets(r, term, filled, boot, 0.5, 0.0)
    torch.testing.assert_close(one_step[:, :3], torch.tensor([[6.0, 12.0, 3.0]]))
    mc = td_lambda_targets(r, term, filled, boot, 0.5, 1.0)
    torch.testing.assert_close(mc[:, :3], torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]]))


def test_td_lambda_broadcasts_per_agent_and_ignores_data_after_termination():
    gen = torch.Generator().manual_seed(0)
    r, boot = torch.randn(4, 5, generator=gen), torch.randn(4, 5, 3, generator=gen)
    term = torch.zeros(4, 5, dtype=torch.bool)
    term[:, 2] = True
    filled = torch.arange(5).expand(4, 5) < 3
    base = td_lambda_targets(r, term, filled, boot, 0.99, 0.7)
    r2, boot2 = r.clone(), boot.clone()
    r2[:, 3:], boot2[:, 2:] = 1e6, float("nan")
    again = td_lambda_targets(r2, term, filled, boot2, 0.99, 0.7)
    torch.testing.assert_close(again[:, :3], base[:, :3])
    per_agent = td_lambda_targets(r, term, filled, boot[..., 1], 0.99, 0.7)
    torch.testing.assert_close(base[..., 1], per_agent)


def test_target_updates():
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    old = target.weight.detach().clone()
    soft_update(target, source, 0.25)
    torch.testing.assert_close(target.weight, 0.75 * old + 0.25 * source.weight)
    hard_update(target, source)
    assert torch.equal(target.weight, source.weight)


# ------------------------------------------------------------------ replay

SCHEMA = {
    "obs": Field(("T+1", "A", "E", 2), np.float32),
    "actions": Field(("T", "A"), np.int64),
    "filled": Field(("T",), np.bool_),
}
LIMITS = {"T": 5, "A": 3, "E": 4, "N": 1}


def episodes(n: int, steps: int, a: int, e: int, value: float):
    return {
        "obs": np.full((n, steps + 1, a, e, 2), value, np.float32),
        "actions": np.ones((n, steps, a), np.int64),
        "filled": np.ones((n, steps), bool),
    }


def test_replay_trims_to_the_sampled_extents_and_clears_overwritten_slots():
    replay = EpisodeReplay(SCHEMA, capacity=2, limits=LIMITS)
    replay.add(episodes(2, 5, 3, 4, 1.0), np.array([5, 5]))
    replay.add(episodes(2, 2, 2, 3, 2.0), np.array([2, 1]))  # overwrites both slots
    batch = replay.sample(2, make_generator(0))
    assert batch["obs"].shape == (2, 3, 2, 3, 2) and batch["filled"].shape == (2, 2)
    assert len(replay) == 2 and torch.all(batch["obs"] == 2.0)
    assert replay.data["obs"][:, 3:].sum() == 0 and replay.data["filled"][:, 2:].sum() == 0


def test_replay_storage_grows_to_the_teams_it_has_seen_and_keeps_what_it_holds():
    """Storage is padded to the largest episodes stored, not to the spec's limits (a task's
    test teams may be larger than any it trains on); a larger episode grows it in place."""
    replay = EpisodeReplay(SCHEMA, capacity=4, limits=LIMITS)
    replay.add(episodes(2, 3, 1, 2, 1.0), np.array([3, 3]))
    assert replay.data["obs"].shape == (4, 6, 1, 2, 2) and replay.data["actions"].shape == (4, 5, 1)
    replay.add(episodes(1, 2, 3, 3, 2.0), np.array([2]))
    assert replay.data["obs"].shape == (4, 6, 3, 3, 2)
    assert (replay.data["obs"][:2, :4, :1, :2] == 1.0).all() and (replay.data["obs"][:2, :, 1:] == 0).all()
    batch = replay.sample(3, make_generator(0))
    assert batch["obs"].shape == (3, 4, 3, 3, 2)


def test_replay_sampling_is_deterministic_and_survives_a_round_trip():
    replay = EpisodeReplay(SCHEMA, capacity=10, limits=LIMITS)
    for k in range(7):
        replay.add(episodes(1, 1 + k % 5, 2, 2, float(k)), np.array([1 + k % 5]))
    copy = EpisodeReplay(SCHEMA, capacity=10, limits=LIMITS)
    copy.load_state_dict(replay.state_dict())
    first, second = replay.sample(4, make_generator(5)), copy.sample(4, make_generator(5))
    for name in SCHEMA:
        assert torch.equal(first[name], second[name])
    with pytest.raises(ValueError, match="does not fit"):
        replay.add(episodes(1, 1, 4, 2, 0.0), np.array([1]))


@pytest.mark.parametrize("self_residual", [False, True])
def test_only_the_self_residual_tells_agents_apart_under_uniform_attention(self_residual: bool) -> None:
    """Two agents seeing the same pair of entities (each its own row first): with attention
    that cannot discriminate (zero query weights), the plain encoder gives both the same
    vector; the residual path from the own row keeps them apart."""
    torch.manual_seed(0)
    encoder = EntityEncoder(4, 8, 2, self_residual=self_residual)
    with torch.no_grad():
        encoder.attention.query.weight.zero_()
    a, b = torch.tensor([1.0, 0, 0.5, 0]), torch.tensor([0, 1.0, 0, 0.5])
    views = torch.stack([torch.stack([a, b]), torch.stack([b, a])])  # agent A's view, agent B's view
    out = encoder(views, torch.ones(2, 2, dtype=torch.bool))
    assert torch.allclose(out[0], out[1], atol=1e-6) != self_residual


@PROPS
@given(seed=st.integers(0, 10_000), a=st.integers(1, 3), e=st.integers(1, 4), pad=st.integers(0, 2))
def test_flat_encoder_ignores_hidden_rows_and_pads_short_lists(seed, a, e, pad) -> None:
    """Hidden rows count as zero rows whatever they hold, and a list shorter than the
    encoder's width reads as if zero rows followed."""
    encoder = FlatEncoder(F, e + pad, 8)
    obs, mask, _ = entity_batch(seed, 2, a, e)
    out = encoder(obs, mask)
    junk = obs.clone()
    junk[~mask] = 100.0
    torch.testing.assert_close(encoder(junk, mask), out)
    full = torch.cat([torch.where(mask.unsqueeze(-1), obs, 0.0), torch.zeros(2, a, pad, F)], dim=2)
    torch.testing.assert_close(encoder(full, torch.ones(2, a, e + pad, dtype=torch.bool)), out)
    # unlike attention it sees the order of the rows: the partner's row is not pooled away
    if e >= 2 and mask[..., 1].any():
        swapped = obs[:, :, [1, 0, *range(2, e)]]
        assert not torch.allclose(encoder(swapped, mask[:, :, [1, 0, *range(2, e)]]), out)


def test_flat_encoder_refuses_longer_entity_lists() -> None:
    with pytest.raises(ValueError, match="at most 2 entities, got 3"):
        FlatEncoder(F, 2, 8)(torch.zeros(1, 1, 3, F), torch.ones(1, 1, 3, dtype=torch.bool))


# ------------------------------------------------------------------ fast paths (same maths)


@PROPS
@given(seed=st.integers(0, 10_000), m=st.integers(1, 6), k=st.integers(1, 6), views=st.integers(1, 3))
def test_single_query_attention_folds_keys_and_values_into_the_query(seed, m, k, views):
    """`from_first_row` is `forward` with row 0 as the query, values and gradients, for every
    mask (an all-masked row included)."""
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        attn = EntityAttention(8, 2)
    x = torch.randn(m, k, 8, generator=gen, requires_grad=True)
    masks = [torch.rand(m, k, generator=gen) < 0.6 for _ in range(views)]
    masks[0][0] = False  # one query with nothing to attend to
    fast = attn.from_first_row(x, masks)
    slow = [attn(x[:, :1], x, mask).squeeze(1) for mask in masks]
    for got, expected in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    params = [x, *attn.parameters()]
    for g1, g2 in zip(torch.autograd.grad(sum(o.square().sum() for o in fast), params),
                      torch.autograd.grad(sum(o.square().sum() for o in slow), params), strict=True):
        torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)


@PROPS
@given(seed=st.integers(0, 10_000), density=st.sampled_from([0.0, 0.5, 1.0]))
def test_views_unrolled_together_equal_each_view_unrolled_alone(seed, density):
    agent = make_agent(seed % 5)
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(2, 4, 3, 5, F, generator=gen)
    masks = [torch.rand(2, 4, 3, 5, generator=gen) < p for p in (0.9, 0.5, 0.2)]
    present = torch.rand(2, 4, 3, generator=gen) < density
    together = agent.unroll_views(obs, masks, present)
    alone = [agent.unroll(obs, mask, present) for mask in masks]
    for got, expected in zip(together, alone, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    hidden = agent.unroll_hidden_views(obs, masks, present)
    torch.testing.assert_close(hidden[1], agent.unroll_hidden(obs, masks[1], present), atol=1e-6, rtol=1e-5)


@PROPS
@given(seed=st.integers(0, 10_000), from_h0=st.booleans())
def test_packed_gru_training_steps_equal_aten_packed_gru(seed, from_h0):
    """Training steps the packed GRU from Python (see `_packed_gru_steps`), inference runs
    ATen's: the same states."""
    from algorithms.common.networks import RunPacking, packed_gru

    gen = torch.Generator().manual_seed(seed)
    cell = nn.GRUCell(3, 5)
    present = torch.rand(3, 7, 2, generator=gen) < 0.7
    present[0, 0, 0] = True
    packing = RunPacking.of(present)
    data = torch.randn(len(packing.order), 3, generator=gen)
    h0 = torch.randn(3, 2, 5, generator=gen) if from_h0 else None
    with torch.no_grad():
        inference = packed_gru(cell, data, packing, h0)
    training = packed_gru(cell, data, packing, h0)
    assert training.requires_grad
    torch.testing.assert_close(training.detach(), inference, atol=1e-6, rtol=1e-5)


def test_state_context_agent_views_equal_separate_attention():
    from algorithms.common.networks import StateContext

    with seeded(3):
        context = StateContext(G, 8, 2)
    gen = torch.Generator().manual_seed(3)
    state = torch.randn(4, 6, G, generator=gen)
    state_mask = torch.rand(4, 6, generator=gen) < 0.8
    within = torch.rand(4, 3, 6, generator=gen) < 0.5
    agents, pooled, (rows,) = context.with_agent_views(state, state_mask, 3, [within])
    expected_agents, expected_pooled = context(state, state_mask, 3)
    torch.testing.assert_close(agents, expected_agents)
    torch.testing.assert_close(pooled, expected_pooled)
    z = torch.relu(context.entity(state))
    torch.testing.assert_close(rows, torch.relu(context.attention(z[:, :3], z, within)))


def test_an_ablation_is_its_base_with_pinned_defaults_under_a_new_name() -> None:
    import dataclasses

    from algorithms.common.variants import ablation
    from algorithms.value_decomposition import QMIX
    from harness import registry
    from harness.api import tunable_fields

    variant = ablation(QMIX, "qmix_test_ablation", "QMIXTestAblation", "QMIX with a short anneal.",
                       epsilon_anneal_steps=5_000, double_q=False)
    try:
        assert registry.get_algorithm("qmix_test_ablation") is variant and issubclass(variant, QMIX)
        config = variant.Config()
        assert (config.epsilon_anneal_steps, config.double_q, config.lr) == (5_000, False, QMIX.Config().lr)
        assert "epsilon_anneal_steps" not in tunable_fields(variant.Config)  # pinned: tuning would undo it
        assert "lr" in tunable_fields(variant.Config)
        assert variant.__module__ == __name__ and variant.__doc__ == "QMIX with a short anneal."
        assert {f.name for f in dataclasses.fields(variant.Config)} == {f.name for f in dataclasses.fields(QMIX.Config)}
        with pytest.raises(TypeError, match="no field epsilon_anneal"):
            ablation(QMIX, "qmix_test_typo", "QMIXTypo", "typo", epsilon_anneal=1)
    finally:
        registry._ALGORITHMS.pop("qmix_test_ablation", None)


@pytest.mark.parametrize("name", ["mipi_value", "opt_d_no_cd", "me_qmix_mlp", "i_sac"])
def test_ablations_and_their_configs_pickle(name: str) -> None:
    """Workers and Ray ship classes and configs by reference: an ablation's generated Config
    is found as `<Variant>.Config` in the module that declared it."""
    import pickle

    from harness import registry

    variant = registry.get_algorithm(name)
    config = variant.Config()
    assert pickle.loads(pickle.dumps(variant)) is variant
    assert pickle.loads(pickle.dumps(config)) == config
