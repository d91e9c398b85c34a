"""VM3-AC and its relatives (MA-AC, MA-SAC, I-SAC): densities, gradient routing, acting,
the transition replay, the per-agent network block, and a short learning run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from off_policy_helpers import (
    SPEC,
    A,
    D,
    agent_slices,
    grads,
    mpe_env,
    random_batch,
    random_step,
    saved_and_loaded,
)

from algorithms.common.agentwise import AgentwiseMLP, own_action_swapped
from algorithms.common.transition_replay import TransitionReplay
from algorithms.vm3ac import (
    ISAC,
    MAAC,
    MASAC,
    VM3AC,
    VM3ACConfig,
    VM3ACNoLatent,
    fixed_sigma_log_density,
    tanh_gaussian_log_prob,
)
from harness import registry
from harness.api import EnvSpec, Step, Transition
from harness.config import build_config
from harness.run.runner import rollout

SMALL = {"hidden": 16, "batch_size": 8, "buffer_size": 64}
seeds = st.integers(0, 2**31 - 1)


def build(cls: type = VM3AC, seed: int = 0, spec: EnvSpec = SPEC, **params: object) -> VM3AC:
    return cls(spec, build_config(cls, {**SMALL, **params}), seed, "cpu")


# ------------------------------------------------------------------------------ building blocks


def test_agentwise_mlp_equals_one_mlp_per_agent() -> None:
    torch.manual_seed(0)
    net = AgentwiseMLP(A, 7, 4, hidden=8, layers=2)
    x = torch.randn(5, 6, A, 7)  # two leading batch axes
    out = net(x)
    for i in range(A):
        h = x[..., i, :]
        for layer in net.hidden:
            h = torch.relu(h @ layer.weight[i] + layer.bias[i, 0])
        expected = h @ net.out.weight[i] + net.out.bias[i, 0]
        torch.testing.assert_close(out[..., i, :], expected)


def test_agentwise_mlp_keeps_agents_parameters_apart() -> None:
    net = AgentwiseMLP(A, 7, 4, hidden=8)
    loss = net(torch.randn(5, A, 7))[:, 1].pow(2).sum()
    for g in grads(loss, list(net.parameters())):
        assert g[1].abs().sum() > 0
        assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0


def test_own_action_swapped_puts_own_action_on_the_diagonal() -> None:
    own, others = torch.randn(4, A, D), torch.randn(4, A, D)
    joint = own_action_swapped(own, others)
    for i in range(A):
        for k in range(A):
            torch.testing.assert_close(joint[:, i, k], own[:, k] if i == k else others[:, k])


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_tanh_gaussian_log_prob_matches_a_transformed_distribution(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mean, log_std = torch.randn(64, 3, generator=g), torch.rand(64, 3, generator=g) * 2 - 1.5
    pre_tanh = mean + log_std.exp() * torch.randn(64, 3, generator=g)
    pre_tanh = pre_tanh.clamp(-4, 4).double()  # the reference inverts tanh, which loses precision beyond
    mean, log_std = mean.double(), log_std.double()
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    ).log_prob(torch.tanh(pre_tanh)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(pre_tanh, mean, log_std), reference, rtol=1e-6, atol=1e-6)


def test_tanh_gaussian_log_prob_stays_finite_where_tanh_saturates() -> None:
    u = torch.tensor([[-50.0, 0.0, 50.0]], requires_grad=True)
    log_prob = tanh_gaussian_log_prob(u, torch.zeros(1, 3), torch.zeros(1, 3))
    log_prob.backward()
    assert torch.isfinite(log_prob).all() and torch.isfinite(u.grad).all()


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(0.05, 3.0))
def test_fixed_sigma_neg_log_q_is_scaled_squared_error_plus_a_constant(seed: int, sigma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    target, mean = torch.randn(32, D, generator=g).double(), torch.randn(32, D, generator=g).double()
    neg_log_q = -fixed_sigma_log_density(target, mean, sigma)
    constant = neg_log_q - (target - mean).pow(2).sum(-1) / (2 * sigma**2)
    torch.testing.assert_close(constant, torch.full_like(constant, 0.5 * D * math.log(2 * math.pi * sigma**2)))
    reference = -torch.distributions.Normal(mean, sigma).log_prob(target).sum(-1)
    torch.testing.assert_close(neg_log_q, reference)


# ------------------------------------------------------------------------------ gradient routing


@pytest.mark.parametrize("absent", [False, True])
def test_variational_net_learns_only_from_predicting_the_partner(absent: bool) -> None:
    algo = build(beta=0.2)
    parts = algo.losses(random_batch(absent=absent))
    xi = agent_slices(algo.variational)
    rest = (parts["actor_value"] + parts["actor_entropy"]).sum() + parts["value"] + parts["q"]
    assert all(g.abs().sum() == 0 for g in grads(rest, xi)), "xi got gradient from a term other than q(a_j|a_i)"
    for i in range(A):
        per_agent = grads(parts["actor_mi"][i], xi)
        assert all(g[i].abs().sum() > 0 for g in per_agent[-2:]), f"xi_{i} gets no gradient from its own factor"
        others = [k for k in range(A) if k != i]
        assert all(g[others].abs().sum() == 0 for g in per_agent), f"agent {i}'s factor reached another agent's xi"


def test_mutual_information_term_moves_only_the_predicting_agents_policy() -> None:
    """a_j is detached in agent i's factor q(a_j | a_i): the term reaches pi_i, never pi_j."""
    algo = build(beta=0.2)
    parts = algo.losses(random_batch())
    phi = agent_slices(algo.policy)
    for i in range(A):
        per_agent = grads(parts["actor_mi"][i], phi)
        assert sum(g[i].abs().sum() for g in per_agent) > 0
        assert all(g[[k for k in range(A) if k != i]].abs().sum() == 0 for g in per_agent)


@pytest.mark.parametrize("cls", [VM3AC, MASAC, ISAC])
def test_each_actor_loss_trains_only_its_own_policy(cls: type) -> None:
    algo = build(cls)
    parts = algo.losses(random_batch())
    phi = agent_slices(algo.policy)
    actor = parts["actor_value"] + parts["actor_entropy"] + parts["actor_mi"]
    for i in range(A):
        per_agent = grads(actor[i], phi)
        assert all(g[[k for k in range(A) if k != i]].abs().sum() == 0 for g in per_agent)


def test_critic_losses_do_not_reach_the_actor() -> None:
    algo = build()
    parts = algo.losses(random_batch())
    actor_params = [*algo.policy.parameters(), *algo.variational.parameters()]
    assert all(g.abs().sum() == 0 for g in grads(parts["value"] + parts["q"], actor_params))


def test_independent_critics_see_only_their_own_agent() -> None:
    algo = build(ISAC)
    batch = random_batch()
    x = algo.batch_inputs(batch)
    q = algo.twin_q(algo.q_input(x, batch["actions"], batch["actions"]))
    changed = {**batch, "obs": batch["obs"].clone(), "actions": batch["actions"].clone()}
    changed["obs"][:, 1] += 1.0
    changed["actions"][:, 1] *= -1
    x2 = algo.batch_inputs(changed)
    q2 = algo.twin_q(algo.q_input(x2, changed["actions"], changed["actions"]))
    torch.testing.assert_close(q2[:, :, [0, 2]], q[:, :, [0, 2]])
    assert not torch.allclose(q2[:, :, 1], q[:, :, 1])


def test_centralised_critics_see_every_agent() -> None:
    algo = build(MASAC)
    batch = random_batch()
    q = algo.twin_q(algo.q_input(algo.batch_inputs(batch), batch["actions"], batch["actions"]))
    changed = {**batch, "actions": batch["actions"].clone()}
    changed["actions"][:, 1] *= -1
    q2 = algo.twin_q(algo.q_input(algo.batch_inputs(changed), changed["actions"], changed["actions"]))
    assert not torch.allclose(q2[:, :, 0], q[:, :, 0])


def test_beta_zero_without_latent_reproduces_ma_ac() -> None:
    vm3 = build(VM3AC, seed=3, beta=0.0, latent_dim=0)
    maac = build(MAAC, seed=3)
    assert maac.cfg.beta == 0.0 and maac.cfg.latent_dim == 0 and maac.variational is None
    batches = [random_batch(seed=s) for s in range(4)]
    for batch in batches:
        a, b = vm3.losses(batch), maac.losses(batch)
        for key in ("actor_value", "actor_entropy", "actor_mi", "value", "q"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        assert vm3._train_step(batch)["actor_loss"] == maac._train_step(batch)["actor_loss"]
    for name in ("policy", "critic", "value", "target_value"):
        for p, q in zip(getattr(vm3, name).parameters(), getattr(maac, name).parameters(), strict=True):
            assert torch.equal(p, q)


def test_variants_and_defaults_are_the_papers() -> None:
    cfg = VM3ACConfig()
    assert (cfg.lr, cfg.gamma, cfg.tau, cfg.batch_size, cfg.buffer_size) == (3e-4, 0.99, 0.005, 128, 500_000)
    assert (cfg.hidden, cfg.hidden_layers, cfg.beta, cfg.latent_dim) == (128, 2, 0.1, 8)
    assert VM3ACNoLatent.Config().latent_dim == 0 and VM3ACNoLatent.Config().mutual_information
    sac, isac = MASAC.Config(), ISAC.Config()
    assert not sac.mutual_information and sac.latent_dim == 0 and sac.critic == "centralised"
    assert isac.critic == "independent" and not isac.mutual_information
    for name in ("vm3ac", "ma_ac", "vm3ac_no_latent", "ma_sac", "i_sac"):
        assert registry.get_algorithm(name).action_spaces == ("continuous",)
    from harness.api import tunable_fields

    assert tunable_fields(VM3ACConfig)["beta"]["low"] == 0.0  # beta = 0 stays reachable
    assert "beta" not in tunable_fields(MAAC.Config)


@pytest.mark.parametrize("params", [{"beta": -0.1}, {"latent_dim": -1}, {"variational_sigma": 0.0},
                                    {"critic": "shared"}, {"buffer_size": 4}, {"tau": 0.0}, {"lr": -1.0},
                                    {"updates_per_env_step": 0.0}])
def test_bad_configuration_is_rejected(params: dict) -> None:
    with pytest.raises(ValueError):
        build_config(VM3AC, {**SMALL, **params})


def test_discrete_tasks_are_refused() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="continuous"):
        build(spec=replace(SPEC, discrete=True))


# ------------------------------------------------------------------------------ acting


def test_execution_with_zero_latent_and_mean_repeats_its_action() -> None:
    algo = build()
    step = random_step()
    step.obs[1] = step.obs[0]  # the same observations in two environments
    first, _ = algo.act(step, None, explore=False)
    algo.act(step, None, explore=True)  # advances the generator: must not matter
    second, _ = algo.act(step, None, explore=False)
    assert np.array_equal(first, second) and np.array_equal(first[0], first[1])
    obs = algo.step_inputs(step).obs
    expected = torch.tanh(algo.policy(obs, torch.zeros(4, algo.cfg.latent_dim))[0]).detach().numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    explored, _ = algo.act(step, None, explore=True)
    assert not np.array_equal(explored, first) and (np.abs(explored) <= 1).all()


def test_training_latent_is_drawn_once_per_env_step_for_the_whole_team() -> None:
    algo = build()
    seen = []
    forward = algo.policy.forward

    def spy(obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(z.clone())
        return forward(obs, z)

    algo.policy.forward = spy  # type: ignore[method-assign]
    algo.act(random_step(b=4), None, explore=True)
    algo.act(random_step(b=4), None, explore=True)
    assert [z.shape for z in seen] == [torch.Size([4, 8])] * 2  # one z per env, not per agent
    assert not torch.equal(seen[0], seen[1])  # fresh every step


def test_absent_agents_act_zero_and_smaller_teams_are_padded() -> None:
    algo = build()
    step = random_step()
    step.agent_mask[:, 2] = False
    actions, _ = algo.act(step, None, explore=True)
    assert (actions[:, 2] == 0).all()
    small = random_step()
    small = Step(**{**small.__dict__, "obs": small.obs[:, :2, :3], "obs_mask": small.obs_mask[:, :2, :3],
                    "agent_mask": small.agent_mask[:, :2], "avail_actions": small.avail_actions[:, :2]})
    actions, _ = algo.act(small, None, explore=False)
    assert actions.shape == (4, 2, D)


# ------------------------------------------------------------------------------ replay and schedule


def test_transition_replay_skips_inactive_envs_and_round_trips() -> None:
    env, spec = mpe_env()
    replay = TransitionReplay.for_spec(spec, capacity=30)
    step = env.reset(0)
    rng = np.random.default_rng(0)
    stored = []
    for t in range(5):
        actions = rng.uniform(-1, 1, (4, 2, 5)).astype(np.float32)
        nxt = env.step(actions)
        active = np.array([True, t < 2, True, False])
        replay.add(Transition(step=step, actions=actions, next=nxt, active=active))
        stored += [(step.obs[b], actions[b], nxt.reward[b], nxt.obs[b]) for b in np.flatnonzero(active)]
        step = nxt
    assert len(replay) == len(stored) == 12 and replay.added == 12
    for k, (obs, act, rew, nobs) in enumerate(stored):
        assert np.array_equal(replay.data["obs"][k], obs) and np.array_equal(replay.data["actions"][k], act)
        assert replay.data["reward"][k] == rew and np.array_equal(replay.data["next_obs"][k], nobs)
    clone = TransitionReplay.for_spec(spec, capacity=30)
    clone.load_state_dict(saved_and_loaded(replay.state_dict()))
    assert saved_and_loaded(replay.state_dict())["data"]["obs"].shape[0] == 12  # only the filled part
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = replay.sample(16, g1), clone.sample(16, g2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Both continue identically, wrapping around the ring.
    for _ in range(6):
        actions = rng.uniform(-1, 1, (4, 2, 5)).astype(np.float32)
        tr = Transition(step=step, actions=actions, next=env.step(actions), active=np.ones(4, bool))
        replay.add(tr)
        clone.add(tr)
    assert len(replay) == 30 and replay.ptr == clone.ptr == (12 + 24) % 30
    assert all(np.array_equal(replay.data[k], clone.data[k]) for k in replay.data)


def test_transition_replay_pads_smaller_teams() -> None:
    env, spec = mpe_env(n_agents=2)
    big = EnvSpec(**{**spec.__dict__, "max_agents": 3, "max_entities": 6, "max_state_entities": 6})
    replay = TransitionReplay.for_spec(big, capacity=8)
    replay.data["obs_mask"][:] = True  # stale content must not survive a smaller write
    step = env.reset(0)
    actions = np.zeros((4, 2, 5), np.float32)
    replay.add(Transition(step=step, actions=actions, next=env.step(actions), active=np.ones(4, bool)))
    assert not replay.data["obs_mask"][:4, 2:].any() and not replay.data["obs_mask"][:4, :, 4:].any()
    assert replay.data["obs_mask"][:4, :2, :4].all() and not replay.data["agent_mask"][:4, 2].any()


def test_updates_follow_the_env_steps_collected() -> None:
    env, spec = mpe_env(envs=4, cycles=5)
    algo = build(spec=spec, batch_size=8)
    rollout(env, algo, explore=True, seed=None, learn=True)  # 20 env steps = 5 vector steps
    assert algo.update()["grad_steps_per_update"] == 5.0 and algo.grad_steps == 5
    half = build(spec=spec, batch_size=8, updates_per_env_step=0.5)
    rollout(env, half, explore=True, seed=None, learn=True)
    half.update()
    assert half.grad_steps == 10
    warm = build(spec=spec, batch_size=64)
    rollout(env, warm, explore=True, seed=None, learn=True)
    assert warm.update() == {} and warm.grad_steps == 0 and warm.update_credit == 0.0


def test_checkpoint_continues_identically() -> None:
    env, spec = mpe_env()
    algo = build(spec=spec)
    for _ in range(3):
        rollout(env, algo, explore=True, seed=None, learn=True)
        algo.update()
    clone = build(spec=spec, seed=99)
    clone.load_state_dict(saved_and_loaded(algo.state_dict()))
    env_a, _ = mpe_env(seed=7)
    env_b, _ = mpe_env(seed=7)
    for _ in range(2):
        rollout(env_a, algo, explore=True, seed=None, learn=True)
        rollout(env_b, clone, explore=True, seed=None, learn=True)
        assert algo.update() == clone.update()
    for p, q in zip(algo.policy.parameters(), clone.policy.parameters(), strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------------------------ learning


def greedy_return(algo: VM3AC, env) -> float:  # noqa: ANN001
    return float(rollout(env, algo, explore=False, seed=123, learn=False)["returns"].mean())


@pytest.mark.slow
def test_vm3ac_learns_cooperative_navigation() -> None:
    """Two agents, 25-step continuous cooperative navigation: after 12k env steps the greedy
    team return is clearly (>= 15%) better than the untrained policy's (fixed seed: ~30% here)."""
    torch.set_num_threads(1)
    env, spec = mpe_env(n_agents=2, cycles=25, envs=16, seed=1)
    evaluation, _ = mpe_env(n_agents=2, cycles=25, envs=32, seed=2)
    algo = VM3AC(spec, build_config(VM3AC, {"updates_per_env_step": 0.25, "gamma": 0.9, "lr": 1e-3,
                                            "beta": 0.02, "hidden": 64}), 0, "cpu")
    before = greedy_return(algo, evaluation)
    for _ in range(30):
        rollout(env, algo, explore=True, seed=None, learn=True)
        algo.update()
    after = greedy_return(algo, evaluation)
    assert after > before + 0.15 * abs(before), (before, after)
