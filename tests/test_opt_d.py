"""OPT-D (algorithms.md §3.2, properties §6): sparsemax, the OPT-D layer, agent and mixer,
the CD and CMI losses, the ablations, and the learner's masking and learning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from entmax import sparsemax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_value_decomposition import (
    GAME_SPEC,
    SPEC,
    RandomEpisodes,
    assert_loss_ignores_data_after_episode_end,
    assert_same_loss,
    assert_trains_on_cuda_and_loads_on_cpu,
    greedy_after_one_step_game,
    padded_batch,
    run_round,
)

from algorithms.common.batch import NOW
from algorithms.opt_d import (
    OPTD,
    OPTDAgent,
    OPTDConfig,
    OPTDLayer,
    OPTDNoCD,
    OPTDNoCMI,
    OPTDNoSparse,
    OPTDQMixer,
    OPTDShape,
    categorical_kl,
    contrastive_disagreement,
    masked_sparsemax,
)
from algorithms.value_decomposition import ValueDecompositionConfig
from harness.api import tunable_fields
from harness.registry import get_algorithm

ALGORITHMS = [OPTD, OPTDNoSparse, OPTDNoCD, OPTDNoCMI]
SMALL = {"opt_dim": 8, "opt_ff_hidden": 16, "rnn_hidden": 8, "mixing_embed": 8, "posterior_hidden": 8,
         "batch_size": 4, "buffer_size": 50}


def small_config(cls, **overrides):
    return cls.Config(**{**SMALL, **overrides})


def collect(alg, seed: int, rounds: int) -> None:
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(alg, env)


def sample(alg, n: int, seed: int) -> dict[str, torch.Tensor]:
    return alg.replay.sample(n, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ sparsemax (entmax)

logit_rows = arrays(np.float64, st.integers(1, 12), elements=st.floats(-20, 20, allow_nan=False, width=64))


def threshold(z: np.ndarray) -> float:
    """Sparsemax's tau by the sort formula (algorithms.md §3.2)."""
    s = np.sort(z)[::-1]
    cums = np.cumsum(s)
    k = np.arange(1, len(z) + 1)
    k_star = k[1 + k * s > cums].max()
    return (cums[k_star - 1] - 1) / k_star


def projection_by_bisection(z: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex: p = max(z - tau, 0) with sum p = 1, tau by bisection."""
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(z - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(z - (lo + hi) / 2, 0)


def sm(z: np.ndarray) -> np.ndarray:
    return sparsemax(torch.from_numpy(z), dim=-1).numpy()


@settings(max_examples=200, deadline=None)
@given(logit_rows)
def test_sparsemax_is_the_projection_onto_the_simplex(z):
    p = sm(z)
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-9)
    tau = threshold(z)
    assert np.all(p[z <= tau] == 0)  # exactly zero below the threshold
    np.testing.assert_allclose(p, np.maximum(z - tau, 0), atol=1e-9)
    np.testing.assert_allclose(p, projection_by_bisection(z), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.floats(-50, 50))
def test_sparsemax_is_shift_invariant(z, c):
    np.testing.assert_allclose(sm(z + c), sm(z), atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.floats(1.0, 10.0), st.data())
def test_a_top_logit_lead_of_one_gives_one_hot(z, lead, data):
    top = data.draw(st.integers(0, len(z) - 1))
    z = z.copy()
    others = np.delete(z, top)
    z[top] = (others.max() if len(others) else 0.0) + lead
    expected = np.zeros_like(z)
    expected[top] = 1.0
    p = sm(z)
    np.testing.assert_allclose(p, expected, atol=1e-12)  # exactly one-hot up to rounding at lead = 1
    if lead > 1 + 1e-6:
        np.testing.assert_array_equal(p, expected)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(2, 8), elements=st.floats(-3, 3, allow_nan=False), unique=True))
def test_sparsemax_jacobian_on_the_support(z):
    """Autograd's Jacobian = diag(1_S) - 1_S 1_S^T / |S| (S = the support)."""
    s = np.sort(z)[::-1]
    assume_clear = np.abs(z - threshold(z)).min() > 1e-6  # no logit sits on the threshold
    if not assume_clear or np.abs(np.diff(s)).min() < 1e-6:
        return
    x = torch.from_numpy(z)
    jac = torch.autograd.functional.jacobian(lambda v: sparsemax(v, dim=-1), x).numpy()
    support = (sm(z) > 0).astype(np.float64)
    expected = np.diag(support) - np.outer(support, support) / support.sum()
    np.testing.assert_allclose(jac, expected, atol=1e-12)


@pytest.mark.parametrize("sparse", [True, False])
def test_masked_sparsemax_zeros_masked_keys_and_all_masked_rows(sparse):
    logits = torch.randn(3, 5, dtype=torch.float64) * 3
    logits[0, 4] = 1e6  # the largest raw logit, but masked
    keep = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    logits.requires_grad_(True)
    p = masked_sparsemax(logits, keep, sparse)
    assert torch.isfinite(p).all()
    assert torch.all(p[~keep] == 0) and torch.all(p[1] == 0)
    torch.testing.assert_close(p[[0, 2]].sum(-1), torch.ones(2, dtype=torch.float64))
    assert p[2, 0] == 1
    (p * torch.randn_like(p)).sum().backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[~keep] == 0)
    if sparse:  # the present keys match the unmasked sparsemax of the present logits
        torch.testing.assert_close(p[0, keep[0]], sparsemax(logits[0, keep[0]].detach(), dim=-1))
    else:
        assert torch.all(p[0, keep[0]] > 0)


# ------------------------------------------------------------------ the OPT-D layer and losses


def test_layer_shapes_simplex_weights_and_output():
    torch.manual_seed(0)
    layer = OPTDLayer(dim=8, prototypes=4)
    x = torch.randn(2, 3, 6, 8)
    mask = torch.rand(2, 3, 6) < 0.7
    mask[1, 2] = False  # an entity list with nothing present
    y, out = layer(x, mask)
    assert y.shape == (2, 3, 6, 8) and out.g.shape == (2, 3, 6, 4, 8) and out.log_w.shape == (2, 3, 4)
    w = out.log_w.exp()
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(y, torch.einsum("...n,...mnd->...md", w, out.g))
    assert torch.isfinite(y).all() and torch.all(y[1, 2] == 0)
    p = layer.prototype_maps(x.view(6, 6, 8), mask.view(6, 6)).view(2, 3, 6, 4, 6)  # [.., query, k, key]
    keys = mask[..., None, None, :].expand_as(p)
    assert torch.all(p[~keys] == 0)  # masked keys: weight exactly 0
    rows = p.sum(-1)  # every query row of a non-empty list lies on the simplex
    has_keys = mask.any(-1)[..., None, None].expand_as(rows)
    torch.testing.assert_close(rows[has_keys], torch.ones(int(has_keys.sum())))
    assert torch.all(rows[~has_keys] == 0)
    assert (p[keys] == 0).any()  # sparse: some present keys get exactly zero


def test_layer_matches_the_paper_formula():
    """The reassociated products give Y = sum_k w_k sparsemax(Q_k K_k^T / sqrt d) V_k."""
    torch.manual_seed(1)
    layer = OPTDLayer(dim=8, prototypes=3).double()
    x = torch.randn(5, 7, 8, dtype=torch.float64)
    mask = torch.rand(5, 7) < 0.6
    mask[:, 0] = True
    y, out = layer(x, mask)
    for r in range(5):
        present = mask[r]
        xs = x[r, present]
        w = torch.softmax(layer.aggregator(xs.mean(0)), -1)
        expected = torch.zeros(int(present.sum()), 8, dtype=torch.float64)
        for k in range(3):
            q, key, v = xs @ layer.w_q[k], xs @ layer.w_k[k], xs @ layer.w_v[k]
            g = sparsemax(q @ key.T / math.sqrt(8), dim=-1) @ v
            torch.testing.assert_close(out.g[r, present, k], g)
            expected += w[k] * g
        torch.testing.assert_close(y[r, present], expected)
        torch.testing.assert_close(out.log_w[r].exp(), w)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 6), st.floats(0.1, 5.0))
def test_cd_loss_is_non_negative(n, m, d, scale):
    g = torch.randn(3, m, n, d, dtype=torch.float64) * scale
    cd = contrastive_disagreement(g)
    assert cd.shape == (3, m) and torch.all(cd >= -1e-12)


def test_cd_loss_is_log_n_for_identical_prototypes():
    row = torch.randn(2, 5, 1, 8, dtype=torch.float64)
    cd = contrastive_disagreement(row.expand(2, 5, 4, 8))
    torch.testing.assert_close(cd, torch.full((2, 5), math.log(4), dtype=torch.float64))


def test_cd_loss_hand_computed():
    g = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # one entity, N = 2 prototypes, d = 2
    # k=0: -1 + log(e^1 + e^0); k=1: -4 + log(e^0 + e^4)
    expected = (-1 + math.log(math.e + 1) - 4 + math.log(1 + math.e**4)) / 2
    assert float(contrastive_disagreement(g)) == pytest.approx(expected)


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    log_p = torch.log_softmax(torch.randn(5, 4), -1)
    torch.testing.assert_close(categorical_kl(log_p, log_p), torch.zeros(5))
    assert torch.all(categorical_kl(log_p, torch.log_softmax(torch.randn(5, 4), -1)) > 0)


# ------------------------------------------------------------------ agent and mixer


def agent_inputs(seed: int, b=3, a=3, e=5, f=4):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, a, e, f, generator=gen)
    obs_mask = torch.rand(b, a, e, generator=gen) < 0.7
    obs_mask[..., 0] = True
    agent_mask = torch.rand(b, a, generator=gen) < 0.8
    agent_mask[:, 0] = True
    return obs, obs_mask & agent_mask[..., None], agent_mask


SHAPES = [OPTDShape(dim=8, ff_hidden=16), OPTDShape(dim=8, ff_hidden=16, norm="post"),
          OPTDShape(dim=8, ff_hidden=16, sparse=False)]


def make_agent(shape=SHAPES[0]):
    torch.manual_seed(0)
    return OPTDAgent(4, 5, shape, hidden=8, posterior_hidden=8)


def make_mixer(shape=SHAPES[0]):
    torch.manual_seed(1)
    return OPTDQMixer(3, embed=8, shape=shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_agent_step_matches_unroll_and_absent_agents_are_zero(shape):
    agent = make_agent(shape)
    steps = [agent_inputs(s) for s in range(4)]
    obs, obs_mask, agent_mask = (torch.stack(x, 1) for x in zip(*steps, strict=True))
    q_unroll, extras = agent.unroll_extras(obs, obs_mask, agent_mask)
    h = agent.initial_state(3, 3)
    for t in range(4):
        torch.testing.assert_close(extras.h_prev[:, t], h)
        q, h = agent(obs[:, t], obs_mask[:, t], agent_mask[:, t], h)
        torch.testing.assert_close(q, q_unroll[:, t])
        assert torch.all(q[~agent_mask[:, t]] == 0) and torch.all(h[~agent_mask[:, t]] == 0)
    rows = int(agent_mask.sum())  # only present agents' lists are encoded
    assert len(extras.layers) == 2 and extras.layers[0].g.shape == (rows, 5, 4, 8)
    assert torch.equal(extras.rows, agent_mask)


@pytest.mark.parametrize("shape", SHAPES)
def test_agent_ignores_masked_entities_and_padding(shape):
    agent = make_agent(shape)
    obs, obs_mask, agent_mask = agent_inputs(2)
    h = torch.randn(3, 3, 8)
    h = torch.where(agent_mask[..., None], h, 0.0)
    q, h2 = agent(obs, obs_mask, agent_mask, h)
    junk = torch.where(obs_mask[..., None], obs, torch.randn_like(obs) * 100)
    # one more masked entity row and one more absent agent, both full of junk
    pad_obs = torch.cat([junk, torch.randn(3, 3, 1, 4) * 100], 2)
    pad_obs = torch.cat([pad_obs, torch.randn(3, 1, 6, 4) * 100], 1)
    pad_mask = torch.cat([torch.cat([obs_mask, torch.zeros(3, 3, 1, dtype=torch.bool)], 2),
                          torch.zeros(3, 1, 6, dtype=torch.bool)], 1)
    pad_agents = torch.cat([agent_mask, torch.zeros(3, 1, dtype=torch.bool)], 1)
    pad_h = torch.cat([h, torch.zeros(3, 1, 8)], 1)
    q_pad, h_pad = agent(pad_obs, pad_mask, pad_agents, pad_h)
    torch.testing.assert_close(q_pad[:, :3], q, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_pad[:, :3], h2, atol=1e-6, rtol=0)
    assert torch.all(q_pad[:, 3] == 0)


def mixer_inputs(seed: int, b=4, a=3, n=6, g=3):
    gen = torch.Generator().manual_seed(seed)
    state = torch.randn(b, n, g, generator=gen)
    state_mask = torch.rand(b, n, generator=gen) < 0.8
    agent_mask = torch.rand(b, a, generator=gen) < 0.8
    agent_mask[:, 0] = True
    state_mask[:, :a] = agent_mask
    q = torch.randn(b, a, generator=gen)
    return q, state, state_mask, agent_mask


@pytest.mark.parametrize("shape", SHAPES)
def test_mixer_ignores_masked_entities_and_absent_agents(shape):
    mixer = make_mixer(shape)
    q, state, state_mask, agent_mask = mixer_inputs(3)
    q_tot = mixer(q, state, state_mask, agent_mask)
    junk_state = torch.where(state_mask[..., None], state, torch.randn_like(state) * 100)
    junk_q = torch.where(agent_mask, q, torch.randn_like(q) * 100)
    torch.testing.assert_close(mixer(junk_q, junk_state, state_mask, agent_mask), q_tot, atol=1e-6, rtol=0)
    # one more absent agent (its state row right after the agents') and one more masked entity
    a = q.shape[1]
    pad_state = torch.cat([state[:, :a], torch.randn(4, 1, 3) * 100, state[:, a:], torch.randn(4, 1, 3) * 100], 1)
    no = torch.zeros(4, 1, dtype=torch.bool)
    pad_mask = torch.cat([state_mask[:, :a], no, state_mask[:, a:], no], 1)
    pad_q = torch.cat([q, torch.randn(4, 1) * 100], 1)
    pad_agents = torch.cat([agent_mask, no], 1)
    torch.testing.assert_close(mixer(pad_q, pad_state, pad_mask, pad_agents), q_tot, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(5))
def test_mixer_is_monotone_in_every_utility(seed, shape):
    mixer = make_mixer(shape)
    q, state, state_mask, agent_mask = mixer_inputs(seed, b=16)
    q = (q * 5).requires_grad_(True)
    (grad,) = torch.autograd.grad(mixer(q, state, state_mask, agent_mask).sum(), q)
    assert torch.all(grad >= 0) and torch.all(grad[~agent_mask] == 0)
    assert torch.all(grad[agent_mask] > 0)  # |W1| rows and |w2| are almost surely non-zero


def test_weights_do_not_depend_on_team_size():
    bigger = dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30)
    small, large = OPTD(SPEC, small_config(OPTD), 0, "cpu"), OPTD(bigger, small_config(OPTD), 0, "cpu")
    for net in ("agent", "mixer"):
        for (name, p), (_, p2) in zip(getattr(small, net).named_parameters(), getattr(large, net).named_parameters(),
                                      strict=True):
            assert torch.equal(p, p2), name


# ------------------------------------------------------------------ configuration and ablations


def test_registered_names_and_paper_defaults():
    assert [get_algorithm(n) for n in ("opt_d", "opt_d_no_sparse", "opt_d_no_cd", "opt_d_no_cmi")] == ALGORITHMS
    cfg = OPTDConfig()
    assert (cfg.opt_prototypes, cfg.opt_layers, cfg.opt_dim, cfg.kappa_cd, cfg.kappa_cmi) == (4, 2, 32, 0.5, 0.1)
    assert (cfg.batch_size, cfg.buffer_size, cfg.target_update_episodes, cfg.gamma) == (32, 5000, 200, 0.99)
    assert (cfg.optimiser, cfg.lr, cfg.optim_alpha) == ("rmsprop", 5e-4, 0.99)
    assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_steps) == (1.0, 0.05, 50_000)
    assert cfg.sparse and {"lr", "kappa_cd", "kappa_cmi", "epsilon_anneal_steps"} <= tunable_fields(OPTDConfig).keys()
    # the learner's fields stay in step with the other value-decomposition methods
    base = {f.name: f.default for f in dataclasses.fields(ValueDecompositionConfig)
            if f.name not in ("attn_embed", "attn_heads", "attn_self_residual", "agent_encoder", "agent_id", "precision")}
    ours = {f.name: f.default for f in dataclasses.fields(OPTDConfig)}
    assert {k: ours.get(k) for k in base} == base
    assert not OPTDNoSparse.Config().sparse and OPTDNoCD.Config().kappa_cd == 0 and OPTDNoCMI.Config().kappa_cmi == 0
    assert OPTD(SPEC, small_config(OPTD, mixer_context_scale=0.3), 0, "cpu").mixer.context_scale == 0.3
    assert OPTDNoCD.Config().kappa_cmi == 0.1 and OPTDNoCMI.Config().kappa_cd == 0.5 and OPTDNoSparse.Config().kappa_cd == 0.5


def loss_parts(alg, batch):
    loss, stats = alg.loss(batch)
    return loss, stats["td_loss"], stats["cd_loss"], stats["cmi_loss"]


def test_loss_is_td_plus_weighted_auxiliaries_and_ablations_drop_their_term():
    results = {}
    for cls in ALGORITHMS:
        alg = cls(SPEC, small_config(cls), 0, "cpu")
        collect(alg, 3, rounds=3)
        batch = sample(alg, 6, 0)
        loss, td, cd, cmi = loss_parts(alg, batch)
        assert td > 0 and cd > 0 and cmi > 0
        kappa_cd = 0.0 if cls is OPTDNoCD else 0.5
        kappa_cmi = 0.0 if cls is OPTDNoCMI else 0.1
        assert float(loss.detach()) == pytest.approx(td + kappa_cd * cd + kappa_cmi * cmi, rel=1e-5)
        alg.optimiser.zero_grad()
        loss.backward()
        posterior_grads = [p.grad for p in alg.agent.posterior.parameters()]
        if cls is OPTDNoCMI:  # q_psi only ever sees the CMI term
            assert all(g is None for g in posterior_grads)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in posterior_grads)
        results[cls] = (alg, batch)
    # no_cd: the gradient is exactly that of TD + kappa_CMI CMI
    alg, batch = results[OPTDNoCD]
    full = OPTD(SPEC, small_config(OPTD, kappa_cd=0.0), 0, "cpu")
    full.agent.load_state_dict(alg.agent.state_dict())
    full.mixer.load_state_dict(alg.mixer.state_dict())
    full.target_agent.load_state_dict(alg.target_agent.state_dict())
    full.target_mixer.load_state_dict(alg.target_mixer.state_dict())
    torch.testing.assert_close(full.loss(batch)[0], alg.loss(batch)[0])
    # no_sparse: dense prototypes over the present keys; opt_d: some exact zeros
    for cls, dense in ((OPTDNoSparse, True), (OPTD, False)):
        alg, batch = results[cls]
        mask = batch["obs_mask"].flatten(0, -2)
        x = torch.relu(alg.agent.encoder.embed(batch["obs"].flatten(0, -3)))
        p = alg.agent.encoder.blocks[0].opt.prototype_maps(x, mask)  # [R, query, k, key]
        present = mask[:, None, None, :].expand_as(p) & mask[:, :, None, None].expand_as(p)
        assert bool((p[present] > 0).all()) == dense


def test_cmi_is_zero_when_the_posterior_is_the_aggregator():
    """Make q_psi(h, xbar) compute exactly softmax(aggregator(xbar)): hidden = [ReLU(x), ReLU(-x)]."""
    alg = OPTD(SPEC, small_config(OPTD), 0, "cpu")
    collect(alg, 4, rounds=2)
    batch = sample(alg, 6, 1)
    hidden, d, ph = 8, 8, 8 * 2
    with torch.no_grad():
        for layer, post in enumerate(alg.agent.posterior):
            first, last = post[0], post[2]
            agg = alg.agent.encoder.blocks[layer].opt.aggregator
            assert first.in_features == hidden + d
            first = post[0] = torch.nn.Linear(hidden + d, ph)
            last = post[2] = torch.nn.Linear(ph, agg.out_features)
            first.weight.zero_()
            first.bias.zero_()
            first.weight[:d, hidden:] = torch.eye(d)
            first.weight[d:, hidden:] = -torch.eye(d)
            last.weight.copy_(torch.cat([agg.weight, -agg.weight], 1))
            last.bias.copy_(agg.bias)
        _, _, _, cmi = loss_parts(alg, batch)
    assert cmi == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ the learner on batches of episodes


@pytest.mark.parametrize("cls", [OPTD, OPTDNoSparse])
def test_data_after_the_episode_end_does_not_change_the_loss(cls):
    alg = cls(SPEC, small_config(cls), 0, "cpu")
    collect(alg, 3, rounds=4)
    batch = sample(alg, 8, 0)
    assert_loss_ignores_data_after_episode_end(alg, batch)


def test_padding_agents_and_entities_does_not_change_the_loss():
    alg = OPTD(SPEC, small_config(OPTD), 0, "cpu")
    collect(alg, 4, rounds=3)
    batch = sample(alg, 6, 1)
    assert_same_loss(alg, batch, padded_batch(batch))


def test_td_term_is_the_qmix_td_loss_of_the_mixer():
    alg = OPTD(SPEC, small_config(OPTD), 0, "cpu")
    collect(alg, 5, rounds=2)
    batch = sample(alg, 6, 2)
    with torch.no_grad():
        _, stats = alg.loss(batch)
        q = alg.agent.unroll(batch["obs"], batch["obs_mask"], batch["agent_mask"])
        chosen = alg._joint_value(alg.mixer, q[:, NOW], batch["actions"], batch, NOW)
        td, _ = alg._td_loss(chosen, alg._targets(batch, q), batch)
    assert stats["td_loss"] == pytest.approx(float(td), rel=1e-6)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_update_runs_reports_and_is_deterministic(cls):
    runs = []
    for _ in range(2):
        alg = cls(SPEC, small_config(cls, target_update_episodes=5), 7, "cpu")
        env = RandomEpisodes(11)
        metrics = [run_round(alg, env)[1] for _ in range(3)]
        runs.append((metrics, [p.detach().clone() for p in alg.params]))
    (m1, p1), (m2, p2) = runs
    assert m1 == m2 and all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))
    last = m1[-1]
    assert {"loss", "td_loss", "cd_loss", "cmi_loss", "grad_norm", "epsilon"} <= last.keys()
    assert all(np.isfinite(v) for v in last.values())


def test_learns_the_optimum_of_a_one_step_game():
    cfg = small_config(OPTD, rnn_hidden=16, epsilon_anneal_steps=1000, lr=5e-3, target_update_episodes=20,
                       batch_size=32, buffer_size=500)
    assert greedy_after_one_step_game(OPTD(GAME_SPEC, cfg, 0, "cpu"), steps=2000) == [[0, 0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_and_checkpoints_load_on_cpu():
    assert_trains_on_cuda_and_loads_on_cpu(OPTD, small_config(OPTD))
