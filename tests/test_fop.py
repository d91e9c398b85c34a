"""FOP: soft values, the FOP mixer, the twin-critic soft target, the actor loss, acting, and
short learning runs on the matrix backend."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_value_decomposition import (
    SPEC,
    RandomEpisodes,
    U,
    run_round,
    scramble_after_episode_end,
)

from algorithms.common.batch import AFTER, NOW
from algorithms.common.exploration import masked_log_softmax
from algorithms.common.torch_utils import seeded
from algorithms.fop import FOP, FOPConfig, FOPMixer, soft_value
from harness.api import Step, tunable_fields
from harness.run.runner import rollout
from scenarios.matrix import MatrixArgs, MatrixBackend

G = SPEC.state_features
SMALL = {
    "attn_embed": 16,
    "attn_heads": 2,
    "rnn_hidden": 8,
    "mixing_embed": 8,
    "hypernet_embed": 16,
    "hypernet_heads": 2,
    "batch_size": 4,
    "buffer_size": 50,
    "burn_in_episodes": 4,
}

seeds = st.integers(0, 2**31 - 1)


def small_fop(seed: int = 0, **overrides) -> FOP:
    return FOP(SPEC, FOPConfig(**{**SMALL, **overrides}), seed, "cpu")


def random_values(seed: int, shape: tuple[int, ...], scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Utilities [..., U] and an availability mask with at least one action per row."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, generator=g) * scale
    avail = torch.rand(*shape, generator=g) < 0.6
    avail[..., int(torch.randint(0, shape[-1], (1,), generator=g))] = True
    return q, avail


def make_mixer(seed: int, n_actions: int = U, std: float = 0.7) -> FOPMixer:
    """A mixer with weights larger than the default init, so its heads' outputs vary widely."""
    with seeded(seed):
        mixer = FOPMixer(G, n_actions, embed=8, hyper_embed=16, heads=2, kernels=4)
        for p in mixer.parameters():
            torch.nn.init.normal_(p, std=std)
    return mixer


def mixer_inputs(seed: int, b: int = 6, a: int = 3, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    q, avail = random_values(seed, (b, a, U))
    actions = torch.randint(0, U, (b, a), generator=g)
    state = torch.randn(b, n, G, generator=g)
    agent_mask = torch.rand(b, a, generator=g) < 0.7
    agent_mask[:, 0] = True
    state_mask = torch.rand(b, n, generator=g) < 0.8
    state_mask[:, :a] = agent_mask
    return q, avail, actions, state, state_mask, agent_mask


# ------------------------------------------------------------------ soft values (algorithms.md §6)


@settings(max_examples=60, deadline=None)
@given(seeds, st.floats(0.01, 5.0))
def test_soft_value_bounds_the_max_and_tends_to_it(seed: int, alpha: float) -> None:
    q, avail = random_values(seed, (5, 3, U))
    best = q.masked_fill(~avail, -math.inf).amax(-1)
    v = soft_value(q, avail, alpha)
    assert bool((v >= best - 1e-5).all())
    assert bool((v <= best + alpha * math.log(U) + 1e-4).all())  # the log-count bound
    assert torch.allclose(soft_value(q, avail, 1e-4), best, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(seeds, st.floats(0.02, 5.0))
def test_soft_policy_exp_of_advantage_sums_to_one_over_available_actions(seed: int, alpha: float) -> None:
    q, avail = random_values(seed, (5, 3, U))
    q = q.double()  # (q - V) / alpha magnifies float32 rounding of V at small alpha
    weights = torch.where(avail, torch.exp((q - soft_value(q, avail, alpha).unsqueeze(-1)) / alpha), 0.0)
    assert torch.allclose(weights.sum(-1), torch.ones(5, 3, dtype=torch.float64), atol=1e-9)
    # ... which is the softmax of q / alpha over the available actions
    assert torch.allclose(weights, masked_log_softmax(q / alpha, avail).exp(), atol=1e-9)


def test_soft_value_ignores_unavailable_actions_and_is_zero_without_any() -> None:
    q = torch.tensor([[1.0, 50.0, 2.0], [3.0, 4.0, 5.0]])
    avail = torch.tensor([[True, False, True], [False, False, False]])
    v = soft_value(q, avail, 0.5)
    assert float(v[0]) == pytest.approx(0.5 * math.log(math.exp(2.0) + math.exp(4.0)))
    assert float(v[1]) == 0.0 and torch.isfinite(v).all()


# ------------------------------------------------------------------ the FOP mixer


@settings(max_examples=40, deadline=None)
@given(seeds, st.floats(0.05, 1.0))
def test_lambda_is_positive(seed: int, std: float) -> None:
    # In float64: large random weights saturate the sigmoid gates, and float32 would underflow.
    mixer = make_mixer(seed, std=std).double()
    q, avail, actions, state, state_mask, agent_mask = mixer_inputs(seed)
    q, state = q.double(), state.double()
    with torch.no_grad():
        lam = mixer.parts(q.gather(-1, actions[..., None])[..., 0], soft_value(q, avail, 0.5), actions,
                          state, state_mask, agent_mask)["lambda"]
    assert bool((lam > 0).all())


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(0.05, 2.0))
def test_q_tot_is_the_duplex_form_and_utilities_get_unit_gradient(seed: int, alpha: float) -> None:
    """Q_tot = sum V_i + v(S) + sum lambda_i (q_i - V_i) in value, but with the stop-gradient each
    present agent's taken utility has dQ_tot/dq_i(u_i) = 1 (absent agents 0)."""
    mixer = make_mixer(seed)
    q, avail, actions, state, state_mask, agent_mask = mixer_inputs(seed)
    taken = q.gather(-1, actions[..., None])[..., 0].requires_grad_(True)
    v = soft_value(q, avail, alpha)
    q_tot = mixer(taken, v, actions, state, state_mask, agent_mask)
    p = mixer.parts(taken, v, actions, state, state_mask, agent_mask)
    present_v = torch.where(agent_mask, v, 0.0)
    duplex = present_v.sum(-1) + p["state_value"] + (p["lambda"] * p["advantage"]).sum(-1)
    torch.testing.assert_close(q_tot, duplex, atol=1e-4, rtol=1e-5)
    (grad,) = torch.autograd.grad(q_tot.sum(), taken)
    torch.testing.assert_close(grad, agent_mask.float())


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_absent_agents_do_not_change_q_tot(seed: int) -> None:
    mixer = make_mixer(seed)
    q, avail, actions, state, state_mask, agent_mask = mixer_inputs(seed)
    g = torch.Generator().manual_seed(seed + 1)
    absent = ~agent_mask
    junk_q = torch.where(absent[..., None], torch.randn(q.shape, generator=g) * 100, q)
    junk_actions = torch.where(absent, torch.randint(0, U, actions.shape, generator=g), actions)
    rows = torch.zeros(state.shape[:-1], dtype=torch.bool)
    rows[:, : agent_mask.shape[1]] = absent  # their state rows are masked, as a backend does
    junk_state = torch.where(rows[..., None], torch.randn(state.shape, generator=g) * 100, state)

    def q_tot(q, actions, state):
        return mixer(q.gather(-1, actions[..., None])[..., 0], soft_value(q, avail, 0.3), actions,
                     state, state_mask, agent_mask)

    with torch.no_grad():
        torch.testing.assert_close(q_tot(junk_q, junk_actions, junk_state), q_tot(q, actions, state),
                                   atol=1e-5, rtol=1e-5)


def test_lambda_depends_on_the_joint_action() -> None:
    mixer = make_mixer(3)
    q, avail, actions, state, state_mask, agent_mask = mixer_inputs(3)
    agent_mask[:] = True
    state_mask[:, :3] = True
    taken, v = q.gather(-1, actions[..., None])[..., 0], soft_value(q, avail, 0.5)
    other = actions.clone()
    other[:, 1] = (other[:, 1] + 1) % U  # agent 1 changes its action
    with torch.no_grad():
        lam = mixer.parts(taken, v, actions, state, state_mask, agent_mask)["lambda"]
        lam2 = mixer.parts(taken, v, other, state, state_mask, agent_mask)["lambda"]
    assert not torch.allclose(lam[:, 0], lam2[:, 0])  # agent 0's weight sees agent 1's action


def test_weights_do_not_depend_on_team_size() -> None:
    bigger = dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30)
    small, large = small_fop(), FOP(bigger, FOPConfig(**SMALL), 0, "cpu")
    for name, net in small._modules().items():
        for p, p2 in zip(net.parameters(), large._modules()[name].parameters(), strict=True):
            assert torch.equal(p, p2), name


# ------------------------------------------------------------------ acting


def step_with_mask(seed: int, b: int = 64) -> Step:
    step = RandomEpisodes(seed, b=b, a=3).reset()
    step.avail_actions[..., 2] = False
    return step


@pytest.mark.parametrize("epsilon", [0.0, 1.0])
def test_masked_actions_get_zero_probability_and_are_never_chosen(epsilon: float) -> None:
    """Even with by far the largest logit, an unavailable action has pi = 0 and is never sampled
    (from pi, or by the epsilon draw) nor taken greedily."""
    alg = small_fop(epsilon_start=epsilon, epsilon_finish=epsilon)
    with torch.no_grad():
        alg.actor.head.bias[2] = 100.0
    step = step_with_mask(1)
    x = {k: torch.from_numpy(getattr(step, k)) for k in ("obs", "obs_mask", "agent_mask", "avail_actions")}
    with torch.no_grad():
        logits, _ = alg.actor(x["obs"], x["obs_mask"], x["agent_mask"], alg.actor.initial_state(64, 3))
        pi = masked_log_softmax(logits, x["avail_actions"]).exp()
    assert float(pi[..., 2].max()) == 0.0
    assert torch.allclose(pi.sum(-1), torch.ones(64, 3))
    for explore in (True, False):
        draws = np.concatenate([alg.act(step, None, explore)[0] for _ in range(20)])
        assert not np.any(draws == 2)


def test_explore_samples_the_policy_and_test_time_takes_its_argmax_without_the_state() -> None:
    alg = small_fop(epsilon_start=0.0, epsilon_finish=0.0)
    step = step_with_mask(2, b=1)
    step.agent_mask[:] = True
    greedy, _ = alg.act(step, None, explore=False)
    other_state = Step(**{**step.__dict__, "state": np.random.default_rng(9).normal(size=step.state.shape)
                          .astype(np.float32)})
    assert np.array_equal(greedy, alg.act(other_state, None, explore=False)[0])
    x = {k: torch.from_numpy(getattr(step, k)) for k in ("obs", "obs_mask", "agent_mask", "avail_actions")}
    with torch.no_grad():
        logits, _ = alg.actor(x["obs"], x["obs_mask"], x["agent_mask"], alg.actor.initial_state(1, 3))
        pi = masked_log_softmax(logits, x["avail_actions"]).exp()[0]  # [A, U]
    assert np.array_equal(greedy[0], pi.argmax(-1).numpy())
    draws = np.stack([alg.act(step, None, explore=True)[0][0] for _ in range(3000)])  # [N, A]
    freq = np.stack([np.bincount(draws[:, i], minlength=U) / len(draws) for i in range(3)])
    np.testing.assert_allclose(freq, pi.numpy(), atol=0.04)


# ------------------------------------------------------------------ learning rules


def collected(seed: int = 4, rounds: int = 3, **overrides) -> FOP:
    alg = small_fop(**overrides)
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(alg, env)
    return alg


def sample(alg: FOP, n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return alg.replay.sample(n, torch.Generator().manual_seed(seed))


def losses_from(alg: FOP, batch: dict[str, torch.Tensor], rng_state: torch.Tensor):
    """The losses with the generator at a given state (the target draws u' from it)."""
    alg.generator.set_state(rng_state)
    with torch.no_grad():
        parts, stats = alg.losses(batch)
    return {k: float(v) for k, v in parts.items()}, stats


def targets_from(alg: FOP, batch: dict[str, torch.Tensor], rng_state: torch.Tensor) -> torch.Tensor:
    alg.generator.set_state(rng_state)
    inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
    with torch.no_grad():
        log_pi = masked_log_softmax(alg.actor.unroll(*inputs), batch["avail_actions"])
    return alg._soft_targets(batch, log_pi[:, AFTER])


def test_actor_loss_reaches_only_the_actor_and_critic_loss_only_the_critics() -> None:
    alg = collected()
    parts, _ = alg.losses(sample(alg))
    critic_params = [p for group in alg.critic_sets for p in group]
    actor_grads = torch.autograd.grad(parts["actor"], critic_params + list(alg.actor.parameters()),
                                      allow_unused=True)
    n = len(critic_params)
    assert all(g is None or not g.any() for g in actor_grads[:n])
    assert any(g is not None and g.any() for g in actor_grads[n:])
    critic_grads = torch.autograd.grad(parts["critic"], critic_params + list(alg.actor.parameters()),
                                       allow_unused=True)
    assert all(g is None or not g.any() for g in critic_grads[n:])
    sizes = [len(group) for group in alg.critic_sets]
    for grads in (critic_grads[: sizes[0]], critic_grads[sizes[0] : n]):  # both sets learn
        assert any(g is not None and g.any() for g in grads)


def test_actor_loss_is_the_discrete_soft_policy_objective() -> None:
    alg = collected()
    batch = sample(alg)
    inputs = (batch["obs"], batch["obs_mask"], batch["agent_mask"])
    with torch.no_grad():
        log_pi = masked_log_softmax(alg.actor.unroll(*inputs), batch["avail_actions"])[:, NOW]
        q_min = torch.minimum(alg.agent.unroll(*inputs), alg.critic2.unroll(*inputs))[:, NOW]
        loss, _ = alg._actor_loss(log_pi, q_min, batch)
    expected, count = 0.0, 0
    avail, present = batch["avail_actions"][:, NOW], batch["agent_mask"][:, NOW]
    for b, t, i in zip(*torch.nonzero(batch["filled"].unsqueeze(-1) & present, as_tuple=True), strict=True):
        on = avail[b, t, i]
        p, lp, q = log_pi[b, t, i][on].exp(), log_pi[b, t, i][on], q_min[b, t, i][on]
        expected += float((p * (alg.alpha * lp - q)).sum())
        count += 1
    assert float(loss) == pytest.approx(expected / count, rel=1e-5, abs=1e-6)


def test_critic_target_takes_the_smaller_of_the_twin_target_critics() -> None:
    """With set 2's target a copy of set 1's, raising set 2 changes nothing (the min is set 1),
    lowering it by c lowers every one-step target by gamma * c, except after termination."""
    alg = collected(td_lambda=0.0)
    alg.target_critic2.load_state_dict(alg.target_agent.state_dict())
    alg.target_mixer2.load_state_dict(alg.target_mixer.state_dict())
    batch, rng = sample(alg), alg.generator.get_state()
    base = targets_from(alg, batch, rng)
    bias = alg.target_mixer2.value[-1].bias
    with torch.no_grad():
        bias += 5.0
    torch.testing.assert_close(targets_from(alg, batch, rng), base)
    with torch.no_grad():
        bias -= 5.0 + 3.0
    lowered = targets_from(alg, batch, rng)
    expected = torch.where(batch["terminated"], 0.0, -alg.cfg.gamma * 3.0)
    real = batch["filled"]
    torch.testing.assert_close(lowered[real] - base[real], expected[real], atol=1e-4, rtol=0)


def test_entropy_term_is_the_mean_or_sum_of_the_next_log_probabilities() -> None:
    """A uniform actor has log pi_i(u') = -log |A_i|: the mean and sum targets differ by
    alpha * (sum_i - mean_i) log |A_i| on steps that did not terminate."""
    targets = {}
    for reduction in ("mean", "sum"):
        alg = collected(entropy_reduction=reduction)
        with torch.no_grad():
            alg.actor.head.weight.zero_()
            alg.actor.head.bias.zero_()
        batch = sample(alg)
        targets[reduction] = targets_from(alg, batch, torch.Generator().manual_seed(5).get_state())
    log_count = -batch["avail_actions"][:, AFTER].sum(-1).float().log()  # log pi under a uniform actor
    present = batch["agent_mask"][:, AFTER]
    total = torch.where(present, log_count, 0.0).sum(-1)
    mean = total / present.sum(-1).clamp(min=1)
    expected = torch.where(batch["terminated"], 0.0, alg.alpha * (total - mean))
    real = batch["filled"]
    torch.testing.assert_close((targets["mean"] - targets["sum"])[real], expected[real], atol=1e-4, rtol=0)


def assert_same_losses(alg: FOP, batch: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    rng = alg.generator.get_state()
    (parts, stats), (parts2, stats2) = losses_from(alg, batch, rng), losses_from(alg, other, rng)
    assert parts2 == pytest.approx(parts, abs=1e-5, rel=1e-5)
    assert stats2 == pytest.approx(stats, abs=1e-5, rel=1e-5)


def test_absent_agents_do_not_change_the_loss() -> None:
    alg = collected(td_lambda=0.4)
    batch = sample(alg)
    absent = ~batch["agent_mask"]  # [B, T+1, A]; their state rows are masked too
    assert absent.any()
    g = torch.Generator().manual_seed(0)
    junk = dict(batch)
    junk["obs"] = torch.where(absent[..., None, None], torch.randn(batch["obs"].shape, generator=g) * 100, batch["obs"])
    junk["avail_actions"] = torch.where(absent[..., None], torch.rand(batch["avail_actions"].shape, generator=g) < 0.5,
                                        batch["avail_actions"])
    junk["actions"] = torch.where(absent[:, NOW], torch.randint(0, U, batch["actions"].shape, generator=g),
                                  batch["actions"])
    a = absent.shape[-1]
    rows = torch.zeros(batch["state_mask"].shape, dtype=torch.bool)
    rows[..., :a] = absent
    junk["state"] = torch.where(rows[..., None], torch.randn(batch["state"].shape, generator=g) * 100, batch["state"])
    assert_same_losses(alg, batch, junk)


@pytest.mark.parametrize("lam", [0.0, 0.4])
def test_data_after_the_episode_end_does_not_change_the_loss(lam: float) -> None:
    alg = collected(td_lambda=lam, rounds=4)
    batch = sample(alg)
    assert batch["terminated"].any()
    for seed in range(3):
        assert_same_losses(alg, batch, scramble_after_episode_end(batch, seed))


def test_loss_is_finite_and_the_critic_fits_a_fixed_batch() -> None:
    alg = collected(lr=3e-3, td_lambda=0.4)
    batch = sample(alg)
    first = alg._train_step(batch)
    for _ in range(60):
        last = alg._train_step(batch)
    assert all(math.isfinite(v) for v in last.values())
    assert last["critic_loss"] < 0.5 * first["critic_loss"], (first, last)


def test_targets_are_hard_copies_every_interval() -> None:
    alg = collected(target_update_episodes=6, rounds=1)
    alg._train_step(sample(alg, n=2))
    assert not all(torch.equal(p, q) for p, q in zip(alg.critic2.parameters(), alg.target_critic2.parameters(), strict=True))
    run_round(alg, RandomEpisodes(9))  # 3 more episodes: 6 since the last copy
    for online, target in ((alg.agent, alg.target_agent), (alg.mixer2, alg.target_mixer2),
                           (alg.critic2, alg.target_critic2), (alg.mixer, alg.target_mixer)):
        for p, q in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(p, q)


def test_learning_waits_for_the_burn_in() -> None:
    alg = small_fop(burn_in_episodes=7)
    env = RandomEpisodes(3)  # 3 episodes per round
    assert run_round(alg, env)[1] == {} and run_round(alg, env)[1] == {}
    metrics = run_round(alg, env)[1]
    assert metrics and alg.grad_steps == 1
    assert metrics["alpha"] == pytest.approx(alg.alpha)
    # the burn-in never exceeds what the buffer can hold
    assert small_fop(burn_in_episodes=100, buffer_size=10).burn_in == 10


# ------------------------------------------------------------------ configuration and checkpoints


def test_defaults_follow_the_fop_table_and_the_released_code() -> None:
    cfg = FOPConfig()
    assert FOP.name == "fop" and FOP.action_spaces == ("discrete",)
    assert (cfg.lr, cfg.optimiser, cfg.batch_size, cfg.buffer_size, cfg.target_update_episodes) == (
        5e-4, "rmsprop", 32, 5000, 200)
    assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_steps) == (1.0, 0.05, 50_000)
    assert (cfg.n_kernels, cfg.mixing_embed, cfg.td_lambda, cfg.burn_in_episodes) == (4, 32, 0.4, 100)
    assert (cfg.gamma, cfg.grad_norm_clip, cfg.entropy_reduction) == (0.99, 10.0, "mean")
    assert (cfg.attn_embed, cfg.attn_heads, cfg.rnn_hidden) == (128, 4, 64)
    assert tunable_fields(FOPConfig)["alpha_start"] == {"low": 0.05, "high": 2.0, "log": True}


def test_alpha_schedule_reproduces_the_released_code() -> None:
    schedule = FOP(SPEC, FOPConfig(**SMALL), 0, "cpu").alpha_schedule  # paper defaults for alpha
    for t in (0, 10_000, 50_000, 89_999, 90_000, 200_000, 1_000_000):
        assert schedule(t) == pytest.approx(max(0.05, 0.5 - t / 200_000))


@pytest.mark.parametrize(
    "bad",
    [{"alpha_finish": 0.0}, {"alpha_start": -1.0}, {"td_lambda": 1.5}, {"entropy_reduction": "max"},
     {"n_kernels": 0}],
)
def test_bad_configuration_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        FOPConfig(**bad)


def test_continuous_actions_and_bad_attention_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="discrete"):
        FOP(dataclasses.replace(SPEC, discrete=False), FOPConfig(**SMALL), 0, "cpu")
    with pytest.raises(ValueError, match="divisible"):
        small_fop(attn_embed=10, attn_heads=4)


def test_policy_checkpoint_holds_the_actor_alone() -> None:
    alg = collected()
    alg._train_step(sample(alg))
    state = alg.policy_state_dict()
    assert list(state) == ["actor"]
    fresh = small_fop(seed=5)
    step = step_with_mask(3)
    assert not np.array_equal(alg.act(step, None, False)[0], fresh.act(step, None, False)[0])
    fresh.load_policy_state_dict(state)
    assert np.array_equal(alg.act(step, None, False)[0], fresh.act(step, None, False)[0])


# ------------------------------------------------------------------ learning on the matrix backend

MATRIX = {
    "attn_embed": 32,
    "attn_heads": 2,
    "rnn_hidden": 32,
    "hypernet_embed": 32,
    "hypernet_heads": 2,
    "batch_size": 32,
    "buffer_size": 1000,
    "burn_in_episodes": 32,
    "target_update_episodes": 40,
    "epsilon_anneal_steps": 3000,
    "alpha_anneal_steps": 3000,
}


def train_on_matrix(args: MatrixArgs, seed: int, rounds: int) -> tuple[FOP, MatrixBackend]:
    comps = MatrixBackend.default_compositions(args)
    alg = FOP(MatrixBackend.describe(args, comps), FOPConfig(**MATRIX), seed, "cpu")
    env = MatrixBackend(args, comps, 16, seed=seed)
    for _ in range(rounds):
        rollout(env, alg, explore=True, seed=None, learn=True)
        alg.update()
    return alg, env


def greedy_joint_action(alg: FOP, env: MatrixBackend) -> tuple[int, ...]:
    actions, _ = alg.act(env.reset(0), None, explore=False)
    assert (actions == actions[0]).all()  # one composition, no randomness at test time
    return tuple(int(u) for u in actions[0])


def test_learns_the_best_coordinated_action() -> None:
    """A diagonal game (1, 2 or 4 for coordinating on action 0, 1 or 2): from a greedy joint
    action paying 1 before training, the policies learn to coordinate on the best one."""
    args = MatrixArgs.model_validate({"payoff": [[1, 0, 0], [0, 2, 0], [0, 0, 4]]})
    untrained, env = train_on_matrix(args, seed=0, rounds=0)
    assert greedy_joint_action(untrained, env) == (0, 0)
    alg, env = train_on_matrix(args, seed=0, rounds=150)
    assert greedy_joint_action(alg, env) == (2, 2)
    assert alg.alpha < 0.5 * alg.cfg.alpha_start


@pytest.mark.slow
def test_matrix_game_payoffs_are_fitted_and_the_greedy_action_never_miscoordinates() -> None:
    """ME-IGM's 3x3 game ([[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]): as ME-IGM reports for FOP,
    the critic fits the payoff of the joint action the policies settle on, and that action is
    a coordinated one: (A, A) = 8 or a B/C pair = 0, never a -12 miscoordination."""
    args = MatrixArgs.model_validate({"game": "nonmonotonic_3x3"})
    payoff = np.asarray(args.tables())
    for seed in range(3):
        alg, env = train_on_matrix(args, seed=seed, rounds=200)
        joint = greedy_joint_action(alg, env)
        assert payoff[joint] in (0.0, 8.0), (seed, joint)
        step = env.reset(0)
        x = {k: torch.from_numpy(getattr(step, k)[:1]) for k in
             ("obs", "obs_mask", "agent_mask", "avail_actions", "state", "state_mask")}
        with torch.no_grad():
            q, _ = alg.agent(x["obs"], x["obs_mask"], x["agent_mask"], alg.agent.initial_state(1, 2))
            u = torch.tensor([joint])
            q_tot = alg.mixer(q.gather(-1, u[..., None])[..., 0], soft_value(q, x["avail_actions"], alg.alpha),
                              u, x["state"], x["state_mask"], x["agent_mask"])
        assert float(q_tot) == pytest.approx(payoff[joint], abs=0.5), (seed, joint)
