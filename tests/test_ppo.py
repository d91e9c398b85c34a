"""MAPPO and IPPO (algorithms.md §2.7 and §6 "MAPPO / IPPO"): surrogate, GAE, value
normalisation, masks, on-policy storage, checkpoints and a short learning run."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_value_decomposition import (
    SPEC,
    RandomEpisodes,
    U,
    assert_resumes_mid_episode,
    padded_batch,
    run_round,
    scramble_after_episode_end,
)

from algorithms.common.networks import FlatEncoder
from algorithms.common.on_policy import (
    RolloutStore,
    ValueNormalizer,
    generalised_advantages,
    lane_layout,
    pack_episodes,
)
from algorithms.ppo import IPPO, MAPPO, MAPPOConfig, PPOConfig, SquashedGaussianPolicy, clipped_surrogate
from harness import registry
from harness.api import Step, Transition, tunable_fields
from harness.run.runner import rollout
from scenarios.matrix import MatrixArgs, MatrixBackend

ALGORITHMS = [IPPO, MAPPO]
SMALL = {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 8}
PROPS = settings(max_examples=30, deadline=None)
seeds = st.integers(0, 2**31 - 1)


CONTINUOUS_SPEC = dataclasses.replace(SPEC, discrete=False)  # U = 5 action dimensions


class ContinuousEpisodes(RandomEpisodes):
    """`RandomEpisodes` for continuous actions: every action dimension is always available."""

    def _step(self, t: int, reward: np.ndarray) -> Step:
        step = super()._step(t, reward)
        return Step(**{**step.__dict__, "avail_actions": np.ones_like(step.avail_actions)})


def build(cls, seed: int = 0, continuous: bool = False, **overrides):
    return cls(CONTINUOUS_SPEC if continuous else SPEC, cls.Config(**{**SMALL, **overrides}), seed, "cpu")


def episodes(seed: int, continuous: bool = False, **kwargs) -> RandomEpisodes:
    return (ContinuousEpisodes if continuous else RandomEpisodes)(seed, **kwargs)


def parameters(alg) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (alg.actor, alg.policy, alg.critic) for p in m.parameters()]


def collected(alg, seed: int, rounds: int = 3, b: int = 6) -> dict[str, torch.Tensor]:
    """Train for `rounds` batches of `b` random episodes (so the value normaliser has
    statistics), then collect one more batch without updating and return it."""
    env = episodes(seed, not alg.spec.discrete, b=b)
    for _ in range(rounds):
        run_round(alg, env)
    step, memory = env.reset(), None
    while not step.done.all():
        actions, memory = alg.act(step, memory, explore=True)
        nxt = env.step(actions)
        alg.observe(Transition(step, actions, nxt, ~step.done))
        step = nxt
    return alg.store.episodes_batch(alg.device)


def prepared_loss(alg, batch: dict[str, torch.Tensor]):
    """Both losses and every reported statistic on `batch`, leaving the normaliser unchanged."""
    saved = copy.deepcopy(alg.value_normalizer.state_dict())
    data, stats = alg.prepare(batch)
    alg.value_normalizer.load_state_dict(saved)
    with torch.no_grad():
        actor_loss, critic_loss, report = alg.losses(data)
    return actor_loss, critic_loss, {**report, **stats}


def assert_same_loss(alg, batch, other) -> None:
    a1, c1, s1 = prepared_loss(alg, batch)
    a2, c2, s2 = prepared_loss(alg, other)
    torch.testing.assert_close(a2, a1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, c1, atol=1e-5, rtol=1e-5)
    assert s2 == pytest.approx(s1, abs=1e-5)


# ------------------------------------------------------------------ configuration


def test_registered_names_defaults_and_tunables() -> None:
    assert registry.get_algorithm("ippo") is IPPO and registry.get_algorithm("mappo") is MAPPO
    assert IPPO.action_spaces == MAPPO.action_spaces == ("discrete", "continuous")
    cfg = MAPPOConfig()
    assert (cfg.lr, cfg.entropy_coef, cfg.epochs, cfg.minibatches, cfg.clip) == (5e-4, 0.01, 4, 1, 0.2)
    assert (cfg.gae_lambda, cfg.gamma, cfg.grad_norm_clip) == (0.95, 0.99, 10.0)
    assert cfg.value_norm and cfg.advantage_norm and cfg.value_clip and cfg.critic_local_obs
    assert (cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden, cfg.chunk_length) == (128, 4, 64, 0)
    assert set(tunable_fields(PPOConfig)) == set(tunable_fields(MAPPOConfig)) == {"lr", "entropy_coef", "clip"}


@pytest.mark.parametrize(
    "bad",
    [{"clip": 0.0}, {"epochs": 0}, {"minibatches": 0}, {"gae_lambda": 1.5}, {"gamma": -0.1},
     {"entropy_coef": -0.01}, {"lr": 0.0}, {"chunk_length": -1}, {"attn_embed": 10, "attn_heads": 4}],
)
def test_bad_configuration_is_refused_with_the_field_named(bad) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        PPOConfig(**bad)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_weights_do_not_depend_on_team_size(cls) -> None:
    small = build(cls)
    big = cls(dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30),
              cls.Config(**SMALL), 0, "cpu")
    assert [p.shape for p in parameters(small)] == [p.shape for p in parameters(big)]
    # The same weights act and learn on a bigger team than the spec's.
    big.load_state_dict(small.state_dict())
    _, metrics = run_round(big, RandomEpisodes(1, a=6, e=9, n=10))
    assert metrics and all(np.isfinite(v) for v in metrics.values())


# ------------------------------------------------------------------ §6 properties


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_first_epoch_clipped_and_unclipped_surrogate_gradients_are_equal(cls, continuous) -> None:
    alg = build(cls, continuous=continuous)
    data, _ = alg.prepare(collected(alg, 2))

    def actor_gradients(clip: float) -> list[torch.Tensor]:
        alg.cfg = dataclasses.replace(alg.cfg, clip=clip)
        alg.optimiser.zero_grad()
        alg.losses(data)[0].backward()
        return [p.grad.clone() for p in alg.actor_params]

    clipped, unclipped = actor_gradients(0.2), actor_gradients(1e9)
    assert any(g.abs().sum() > 0 for g in clipped)
    for a, b in zip(clipped, unclipped, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)

    # Negative control: once the policy has moved (as in later epochs), a tight clip binds.
    with torch.no_grad():
        for p in alg.actor.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    clipped, unclipped = actor_gradients(0.01), actor_gradients(1e9)
    assert any(not torch.allclose(a, b) for a, b in zip(clipped, unclipped, strict=True))


def test_surrogate_is_ratio_times_advantage_inside_the_clip_range() -> None:
    log_pi_old = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    log_pi = torch.log(torch.tensor([0.55, 0.8, 0.8, 0.2]))  # rho = 1.1, 1.6, 1.6, 0.4
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    mask = torch.tensor([True, True, True, True])
    loss, stats = clipped_surrogate(log_pi, log_pi_old, adv, mask, 0.2)
    # min(rho A, clip(rho) A): 1.1, 1.2 (clipped above), -1.6 (pessimistic), -0.8 (clipped below)
    assert float(loss) == pytest.approx(-(1.1 + 1.2 - 1.6 - 0.8) / 4, abs=1e-6)
    assert float(stats["clip_fraction"]) == pytest.approx(0.75)


def test_padding_with_huge_log_probabilities_leaves_the_gradient_finite() -> None:
    """Unavailable actions have log pi near -1e10, where float32 differences can reach
    thousands: masked entries must not reach exp() and turn a zero gradient into NaN."""
    log_pi = torch.tensor([-0.7, -1e10 + 2048.0], requires_grad=True)
    log_pi_old = torch.tensor([-0.7, -1e10])
    loss, _ = clipped_surrogate(log_pi, log_pi_old, torch.ones(2), torch.tensor([True, False]), 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_pi.grad).all()


def random_episodes(seed: int, b: int = 4, t: int = 6, a: int = 3, deaths: bool = True):
    """Random rewards, values, lengths, termination or truncation, and agents that may be
    absent or die mid-episode (with junk after every episode end)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    filled = torch.arange(t) < lengths[:, None]
    terminated = torch.zeros(b, t, dtype=torch.bool)
    terminated[torch.arange(b), lengths - 1] = torch.rand(b, generator=g) < 0.5
    reward = torch.randn(b, t, generator=g)
    values = torch.randn(b, t + 1, a, generator=g)
    if deaths:
        death = torch.randint(1, t + 2, (b, a), generator=g)  # first slot where the agent is gone
        present = torch.arange(t + 1)[None, :, None] < death[:, None, :]
    else:
        present = torch.ones(b, t + 1, a, dtype=torch.bool)
    return reward, terminated, filled, values, present


def reference_advantages(reward, terminated, filled, values, present, gamma, lam) -> torch.Tensor:
    """GAE written out one episode, agent and step at a time (algorithms.md §2.7)."""
    b, t = reward.shape
    adv = torch.zeros(b, t, values.shape[-1])
    for e in range(b):
        length = int(filled[e].sum())
        for i in range(values.shape[-1]):
            later = 0.0
            for s in reversed(range(length)):
                if not present[e, s, i]:
                    later = 0.0
                    continue
                if terminated[e, s]:
                    bootstrap = 0.0
                elif present[e, s + 1, i]:
                    bootstrap = float(values[e, s + 1, i])
                else:  # agent i died at step s: the team's value goes on
                    alive = present[e, s + 1]
                    bootstrap = float(values[e, s + 1][alive].mean()) if alive.any() else 0.0
                delta = float(reward[e, s]) + gamma * bootstrap - float(values[e, s, i])
                goes_on = s + 1 < length and bool(present[e, s + 1, i]) and not terminated[e, s]
                later = delta + gamma * lam * later if goes_on else delta
                adv[e, s, i] = later
    return adv


@PROPS
@given(seeds, st.sampled_from([(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)]))
def test_gae_matches_the_step_by_step_definition(seed: int, gamma_lam: tuple[float, float]) -> None:
    gamma, lam = gamma_lam
    reward, terminated, filled, values, present = random_episodes(seed)
    adv, returns = generalised_advantages(reward, terminated, filled, values, present, gamma, lam)
    expected = reference_advantages(reward, terminated, filled, values, present, gamma, lam)
    valid = filled[..., None] & present[:, :-1]
    torch.testing.assert_close(adv, torch.where(valid, expected, 0.0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(returns, torch.where(valid, expected + values[:, :-1], 0.0), atol=1e-5, rtol=1e-5)


@PROPS
@given(seeds)
def test_gae_with_unit_gamma_and_lambda_is_the_return_minus_the_value(seed: int) -> None:
    reward, terminated, filled, values, present = random_episodes(seed, deaths=False)
    adv, _ = generalised_advantages(reward, terminated, filled, values, present, 1.0, 1.0)
    length = filled.sum(1)
    for e in range(reward.shape[0]):
        end = int(length[e])
        # Monte-Carlo return to the episode end, plus V of the final slot if it was truncated.
        tail = 0.0 if terminated[e].any() else values[e, end]
        to_go = reward[e, :end].flip(0).cumsum(0).flip(0)[:, None] + tail
        torch.testing.assert_close(adv[e, :end], to_go - values[e, :end], atol=1e-5, rtol=1e-5)


@PROPS
@given(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40), min_size=1, max_size=5),
       st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20))
def test_normaliser_round_trip_and_exact_running_statistics(batches, probe) -> None:
    normaliser = ValueNormalizer()
    for values in batches:
        normaliser.update(torch.tensor(values, dtype=torch.float32))
    seen = torch.tensor([v for values in batches for v in values], dtype=torch.float64)
    assert float(normaliser.mean) == pytest.approx(float(seen.float().double().mean()), abs=1e-3)
    assert float(normaliser.var) == pytest.approx(float(seen.float().double().var(unbiased=False)), rel=1e-4, abs=1e-3)
    x = torch.tensor(probe, dtype=torch.float32)
    torch.testing.assert_close(normaliser.denorm(normaliser.norm(x)), x, atol=1e-2, rtol=1e-5)
    state = normaliser.state_dict()
    assert {"mean", "var", "count"} <= state.keys()


def test_normaliser_starts_as_the_identity() -> None:
    x = torch.randn(10)
    assert torch.equal(ValueNormalizer().norm(x), x) and torch.equal(ValueNormalizer().denorm(x), x)


# ------------------------------------------------------------------ masks


def step_with_masks(seed: int, b: int = 6) -> Step:
    env = RandomEpisodes(seed, b=b)
    step = env.reset()
    step.avail_actions[..., 3] = False  # the masked action, given the largest logit below
    return step


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_masked_actions_are_never_taken_even_with_the_largest_logit(cls) -> None:
    alg = build(cls)
    with torch.no_grad():
        alg.actor.head.bias[3] = 100.0
    step = step_with_masks(0)
    for explore in (True, False):
        for _ in range(50 if explore else 1):
            actions, _ = alg.act(step, None, explore=explore)
            chosen = np.take_along_axis(step.avail_actions, actions[..., None], axis=-1)[..., 0]
            assert chosen[step.agent_mask].all()
            assert (actions[~step.agent_mask] == 0).all()
    batch = {k: torch.from_numpy(getattr(step, k))[:, None] for k in ("obs", "obs_mask", "agent_mask", "avail_actions")}
    batch = {k: torch.cat([v, v], 1) for k, v in batch.items()}  # two slots: one step
    with torch.no_grad():
        log_pi = alg.policy.log_probs(alg.actor_outputs(batch), batch["avail_actions"][:, :-1])
    assert float(log_pi.exp()[..., 3].max()) == 0.0


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_absent_agents_do_not_change_present_agents_actions(cls) -> None:
    alg = build(cls)
    step = step_with_masks(1)
    junk = Step(**{**step.__dict__, "obs": np.where(step.agent_mask[..., None, None], step.obs, 1e3).astype(np.float32)})
    assert (~step.agent_mask).any()
    np.testing.assert_array_equal(alg.act(step, None, False)[0], alg.act(junk, None, False)[0])


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_absent_agents_and_padding_do_not_change_the_loss(cls, continuous) -> None:
    alg = build(cls, continuous=continuous)
    batch = collected(alg, 4)
    assert (~batch["agent_mask"]).any()
    assert_same_loss(alg, batch, padded_batch(batch))
    # An absent agent's junk (observation, state row, action) changes nothing either.
    absent = ~batch["agent_mask"]
    junk = dict(batch)
    junk["obs"] = torch.where(absent[..., None, None], 1e3, batch["obs"])
    absent_step = absent[:, :-1].view(*absent[:, :-1].shape, *([1] * (batch["actions"].dim() - 3)))
    junk["actions"] = torch.where(absent_step, U - 1, batch["actions"])
    assert_same_loss(alg, batch, junk)


FLAT = {"agent_encoder": "flat", "agent_id": True}


@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=60))
@PROPS
def test_lanes_hold_every_episode_whole_without_overlap(lengths: list[int]) -> None:
    layout = lane_layout(np.array(lengths))
    spans = np.array(lengths) + 2  # T+1 observation slots and a separator
    if layout is None:  # packing would save no lane: every pair of episodes overflows a lane
        assert len(lengths) == 1 or np.sort(spans)[:2].sum() > spans.max()
        return
    lanes, offsets, length = layout
    assert length == spans.max() and lanes.max() + 1 < len(lengths)
    assert (offsets >= 0).all() and (offsets + spans <= length).all()
    for lane in np.unique(lanes):
        mine = np.argsort(offsets[lanes == lane])
        starts, ends = offsets[lanes == lane][mine], (offsets + spans)[lanes == lane][mine]
        assert (starts[1:] >= ends[:-1]).all()
    # First fit decreasing needs at most 11/9 of the lanes an optimal packing does, plus one.
    assert lanes.max() + 1 <= 11 / 9 * np.ceil(spans.sum() / length) + 1


@pytest.mark.parametrize("options", [{}, FLAT], ids=["attention", "flat"])
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_packing_episodes_into_lanes_does_not_change_the_loss(cls, continuous, options) -> None:
    alg = build(cls, continuous=continuous, **options)
    batch = collected(alg, 3, b=16)
    packed = pack_episodes(batch, alg.store.per_slot, torch.device("cpu"))
    assert packed["reward"].shape[0] < batch["reward"].shape[0]  # episodes really share lanes
    assert int(packed["filled"].sum()) == int(batch["filled"].sum())
    assert_same_loss(alg, batch, packed)


@pytest.mark.parametrize("chunk_length", [1, 2, 5])
@pytest.mark.parametrize("options", [{}, FLAT], ids=["attention", "flat"])
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_chunks_from_the_whole_unrolls_states_give_the_same_loss(cls, continuous, options, chunk_length) -> None:
    whole = build(cls, continuous=continuous, **options)
    batch = collected(whole, 3, b=16)
    chunked = copy.deepcopy(whole)
    chunked.cfg = dataclasses.replace(whole.cfg, chunk_length=chunk_length)
    packed = pack_episodes(batch, whole.store.per_slot, torch.device("cpu"))
    data, _ = copy.deepcopy(chunked).prepare(packed)  # (prepare updates the value normaliser)
    assert data["reward"].shape[1] == chunk_length and data["obs"].shape[1] == chunk_length + 1
    assert int(data["filled"].sum()) == int(batch["filled"].sum()) and data["filled"].any(1).all()
    a1, c1, s1 = prepared_loss(whole, packed)
    a2, c2, s2 = prepared_loss(chunked, packed)
    torch.testing.assert_close(a2, a1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, c1, atol=1e-5, rtol=1e-5)
    assert s2 == pytest.approx(s1, abs=1e-5)
    # Without the initial states, every chunk would restart its GRUs from zero.
    with torch.no_grad():
        values = chunked.critic(data)
        data.pop("critic_h0")
        assert not torch.allclose(chunked.critic(data), values, atol=1e-4)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_chunked_training_updates_and_stays_deterministic(cls) -> None:
    runs = []
    for _ in range(2):
        alg = build(cls, chunk_length=3, minibatches=2)
        _, metrics = run_round(alg, RandomEpisodes(4, b=6))
        runs.append((metrics, parameters(alg)))
    assert runs[0][0] and all(np.isfinite(v) for v in runs[0][0].values())
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1], strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(runs[0][1], parameters(build(cls)), strict=True))


def test_equal_length_episodes_are_left_as_they_are() -> None:
    batch = {"filled": torch.ones(4, 5, dtype=torch.bool), "obs": torch.randn(4, 6, 2)}
    packed = pack_episodes(batch, {"obs"}, torch.device("cpu"))
    assert all(torch.equal(packed[k], batch[k]) for k in batch)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_flat_networks_with_agent_ids(cls) -> None:
    alg = build(cls, **FLAT)
    encoders = [m for m in (*alg.actor.modules(), *alg.critic.modules()) if isinstance(m, FlatEncoder)]
    assert len(encoders) == (2 if cls is IPPO else 3)  # MAPPO's critic reads state and own observation
    assert alg.actor.agent_ids == SPEC.max_agents
    _, metrics = run_round(alg, RandomEpisodes(2))
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    # Flat networks are sized for the spec's largest team and say so on a bigger one.
    with pytest.raises(ValueError, match="at most"):
        run_round(alg, RandomEpisodes(1, a=6, e=9, n=10))


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_data_after_termination_does_not_change_the_loss(cls, continuous) -> None:
    alg = build(cls, continuous=continuous)
    batch = collected(alg, 5)
    assert batch["terminated"].any() and (~batch["terminated"].any(1) & (batch["filled"].sum(1) < 6)).any()
    for seed in range(3):
        assert_same_loss(alg, batch, scramble_after_episode_end(batch, seed))


# ------------------------------------------------------------------ on-policy storage and training


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_update_trains_on_exactly_the_new_episodes_then_drops_them(cls) -> None:
    alg = build(cls, epochs=3, minibatches=2)
    assert alg.update() == {} and alg.grad_steps == 0
    env = RandomEpisodes(5, b=4)
    _, metrics = run_round(alg, env)
    assert metrics["episodes"] == 4 and alg.grad_steps == 3 * 2 and len(alg.store) == 0
    assert {"policy_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction", "return_mean"} <= metrics.keys()
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    assert alg.update() == {} and alg.grad_steps == 6


def test_rollout_store_grows_and_keeps_every_episode() -> None:
    store = RolloutStore(SPEC)
    for b in (3, 5):  # two batches without an update in between, the second one larger
        env = RandomEpisodes(b, b=b)
        step = env.reset()
        while not step.done.all():
            nxt = env.step(np.zeros((b, 3), np.int64))
            store.observe(Transition(step, np.zeros((b, 3), np.int64), nxt, ~step.done))
            step = nxt
    assert len(store) == 8 and store.replay.capacity >= 8
    assert store.episodes_batch(torch.device("cpu"))["reward"].shape[0] == 8
    copy_ = RolloutStore(SPEC)
    copy_.load_state_dict(store.state_dict())
    for k, v in store.episodes_batch(torch.device("cpu")).items():
        assert torch.equal(copy_.episodes_batch(torch.device("cpu"))[k], v)
    store.clear()
    assert len(store) == 0


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_same_seed_same_actions_and_learning(cls, continuous) -> None:
    runs = []
    for _ in range(2):
        alg = build(cls, seed=7, continuous=continuous, minibatches=2)
        env = episodes(11, continuous)
        results = [run_round(alg, env) for _ in range(3)]
        runs.append((results, parameters(alg)))
    (r1, p1), (r2, p2) = runs
    for (a1, m1), (a2, m2) in zip(r1, r2, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a1, a2, strict=True)) and m1 == m2
    assert all(torch.equal(p, q) for p, q in zip(p1, p2, strict=True))
    other = parameters(build(cls, seed=8, continuous=continuous))
    assert not all(torch.equal(p, q) for p, q in zip(p1, other, strict=True))


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_state_dict_round_trip_mid_episode(cls, continuous, tmp_path) -> None:
    alg = build(cls, continuous=continuous)
    env = episodes(6, continuous)
    for _ in range(2):
        run_round(alg, env)
    assert_resumes_mid_episode(
        alg, lambda: build(cls, seed=123, continuous=continuous), env, tmp_path, params_of=parameters
    )


# ------------------------------------------------------------------ learning on a real task


# A repeated 2-agent matrix game: (2, 2) pays 1 per step; the decoys (0, 0) = 0.5 and
# (1, 1) = 0.25; miscoordination pays 0. Three steps, so GAE and the GRUs are exercised.
PAYOFF = [[0.5, 0, 0], [0, 0.25, 0], [0, 0, 1]]


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_learns_the_optimum_of_a_repeated_matrix_game(cls) -> None:
    args = MatrixArgs.model_validate({"payoff": PAYOFF, "episode_length": 3})
    comps = MatrixBackend.default_compositions(args)
    spec = MatrixBackend.describe(args, comps)
    alg = cls(spec, cls.Config(attn_embed=32, attn_heads=2, rnn_hidden=32, lr=3e-3), 0, "cpu")
    train, test = MatrixBackend(args, comps, 16, seed=0), MatrixBackend(args, comps, 4, seed=1)

    def greedy_return() -> float:
        return float(rollout(test, alg, explore=False, seed=0, learn=False)["returns"].mean())

    assert greedy_return() < 3.0  # this seed's untrained greedy joint action is a decoy
    sampled = []
    for _ in range(30):
        sampled.append(rollout(train, alg, explore=True, seed=None, learn=True)["returns"].mean())
        alg.update()
    assert greedy_return() == pytest.approx(3.0)
    assert np.mean(sampled[:3]) < 1.5 and np.mean(sampled[-3:]) > 2.8  # random play earns about 0.58


# ------------------------------------------------------------------ continuous actions


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_continuous_actions_are_squashed_and_greedy_is_tanh_of_the_mean(cls) -> None:
    alg = build(cls, continuous=True)
    step = ContinuousEpisodes(1, b=6).reset()
    assert (~step.agent_mask).any()
    sampled = np.stack([alg.act(step, None, explore=True)[0] for _ in range(20)])
    assert sampled.dtype == np.float32 and sampled.shape == (20, *step.avail_actions.shape)
    assert (np.abs(sampled) < 1).all() and (sampled[:, ~step.agent_mask] == 0).all()
    assert sampled.std(0)[step.agent_mask].min() > 0
    greedy, _ = alg.act(step, None, explore=False)
    with torch.no_grad():
        x = [torch.from_numpy(getattr(step, k)) for k in ("obs", "obs_mask", "agent_mask")]
        mean, _ = alg.actor(*x, alg.actor.initial_state(6, 3))
    np.testing.assert_allclose(greedy, torch.tanh(mean).numpy(), atol=1e-6)
    np.testing.assert_array_equal(greedy, alg.act(step, None, explore=False)[0])


def test_squashed_gaussian_log_probability_and_entropy() -> None:
    policy = SquashedGaussianPolicy(3, log_std_init=-0.3)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.2, -1.0]))
    mean = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    actions = policy.act(mean, torch.ones(4, 2, 3, dtype=torch.bool), True, torch.Generator().manual_seed(1))
    log_prob, entropy = policy.log_prob_entropy(mean, actions, torch.ones_like(actions, dtype=torch.bool))
    gaussian = torch.distributions.Normal(mean, policy.log_std.exp())
    torch.testing.assert_close(log_prob, gaussian.log_prob(torch.atanh(actions)).sum(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, gaussian.entropy().sum(-1), atol=1e-5, rtol=1e-5)


TARGET = 0.5


def target_step(b: int, actions: np.ndarray | None = None) -> Step:
    """A one-step continuous game: two agents earn 1 - mean_i (a_i - 0.5)^2 together."""
    reward = np.zeros(b) if actions is None else 1 - ((actions[..., 0] - TARGET) ** 2).mean(-1)
    done = np.full(b, actions is not None)
    return Step(
        obs=np.ones((b, 2, 2, 2), np.float32),
        obs_mask=np.ones((b, 2, 2), bool),
        state=np.ones((b, 2, 2), np.float32),
        state_mask=np.ones((b, 2), bool),
        avail_actions=np.ones((b, 2, 1), bool),
        agent_mask=np.ones((b, 2), bool),
        reward=reward.astype(np.float32),
        done=done,
        terminated=done,
        won=np.zeros(b, bool),
        composition=np.zeros(b, np.int64),
    )


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_learns_a_continuous_target(cls) -> None:
    spec = dataclasses.replace(SPEC, obs_features=2, state_features=2, n_actions=1, max_agents=2,
                               max_entities=2, max_state_entities=2, episode_limit=1, discrete=False)
    alg = cls(spec, cls.Config(**SMALL, lr=3e-3), 0, "cpu")
    assert abs(float(alg.act(target_step(1), None, explore=False)[0].mean()) - TARGET) > 0.3
    for _ in range(60):
        start = target_step(32)
        actions, _ = alg.act(start, None, explore=True)
        alg.observe(Transition(start, actions, target_step(32, actions), np.ones(32, bool)))
        alg.update()
    greedy = alg.act(target_step(1), None, explore=False)[0]
    np.testing.assert_allclose(greedy, TARGET, atol=0.1)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_trains_on_continuous_mpe_and_acts_on_a_bigger_team(cls) -> None:
    pytest.importorskip("mpe2")
    from scenarios.mpe import MPESpreadBackend, SpreadArgs, SpreadComposition

    args = SpreadArgs(continuous_actions=True, max_cycles=5)
    spec = MPESpreadBackend.describe(args, [SpreadComposition(n_agents=n) for n in (2, 4)])
    alg = cls(spec, cls.Config(**SMALL), 0, "cpu")
    rollout(MPESpreadBackend(args, [SpreadComposition(n_agents=2)], 3, seed=0), alg, True, None, True)
    metrics = alg.update()
    assert metrics["episodes"] == 3 and all(np.isfinite(v) for v in metrics.values())
    out = rollout(MPESpreadBackend(args, [SpreadComposition(n_agents=4)], 2, seed=1), alg, False, 0, False)
    assert np.isfinite(out["returns"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_runs_on_cuda_and_checkpoints_load_on_cpu(cls) -> None:
    alg = cls(SPEC, cls.Config(**SMALL), 0, torch.device("cuda"))
    env = RandomEpisodes(9)
    for _ in range(3):
        _, metrics = run_round(alg, env)
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    on_cpu = build(cls)
    on_cpu.load_state_dict(alg.state_dict())
    step = env.reset()
    np.testing.assert_array_equal(alg.act(step, None, False)[0], on_cpu.act(step, None, False)[0])


# ------------------------------------------------------------------ IPPO with a shared torso


def test_shared_torso_critic_is_a_value_head_on_the_actors_recurrent_state() -> None:
    """With `shared_torso` the critic owns only a linear head: values are that head on the
    actor's states, the critic loss trains the actor's torso too, and the loss is the same
    whether lanes are whole or cut into chunks that start from the unroll's states."""
    alg = build(IPPO, shared_torso=True)
    assert [name for name, _ in alg.critic.named_parameters()] == ["head.weight", "head.bias"]
    batch = collected(alg, 5, b=8)
    states, values, critic_states = alg.unroll_actor_critic(batch)
    assert critic_states is states
    present = batch["agent_mask"]
    torch.testing.assert_close(values, torch.where(present, alg.critic.head(states).squeeze(-1), 0.0))
    data, _ = copy.deepcopy(alg).prepare(batch)
    _, critic_loss, _ = alg.losses(data)
    grads = torch.autograd.grad(critic_loss, list(alg.actor.encoder.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    chunked = copy.deepcopy(alg)
    chunked.cfg = dataclasses.replace(alg.cfg, chunk_length=2)
    packed = pack_episodes(batch, alg.store.per_slot, torch.device("cpu"))
    for got, expected in zip(prepared_loss(chunked, packed)[:2], prepared_loss(alg, packed)[:2], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_shared_torso_ippo_learns_the_optimum_of_a_repeated_matrix_game() -> None:
    args = MatrixArgs.model_validate({"payoff": PAYOFF, "episode_length": 3})
    comps = MatrixBackend.default_compositions(args)
    spec = MatrixBackend.describe(args, comps)
    alg = IPPO(spec, IPPO.Config(attn_embed=32, attn_heads=2, rnn_hidden=32, lr=3e-3, shared_torso=True), 0, "cpu")
    train, test = MatrixBackend(args, comps, 16, seed=0), MatrixBackend(args, comps, 4, seed=1)
    for _ in range(30):
        rollout(train, alg, explore=True, seed=None, learn=True)
        alg.update()
    assert float(rollout(test, alg, explore=False, seed=0, learn=False)["returns"].mean()) == pytest.approx(3.0)
