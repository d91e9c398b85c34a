"""MIPI: the Blahut-Arimoto iteration, the penalty's special cases and gradient routing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.mipi import MIPI, MIPIEntropy, MIPIValue, blahut_arimoto_step, regularised_value
from algorithms.refil import RefilMixer
from harness.api import EnvSpec
from harness.config import build_config
from harness.run.runner import rollout
from scenarios.matrix import MatrixArgs, MatrixBackend, MatrixComposition

SMALL = {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 16, "batch_size": 8, "buffer_size": 64,
         "hypernet_embed": 16, "mixing_embed": 8, "ba_iterations": 2, "alpha": 0.5}


def random_problem(seed: int, contexts: int, actions: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(contexts, actions, generator=g, dtype=torch.float64) * 2
    weights = torch.rand(contexts, generator=g, dtype=torch.float64) + 0.1
    policy = torch.rand(contexts, actions, generator=g, dtype=torch.float64) + 0.1
    return q, weights / weights.sum(), policy / policy.sum(-1, keepdim=True)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), contexts=st.integers(2, 5), alpha=st.floats(0.2, 3.0))
def test_blahut_arimoto_never_lowers_the_objective_and_reaches_its_fixed_point(seed, contexts, alpha) -> None:
    q, weights, policy = random_problem(seed, contexts)
    start_marginal = (weights.unsqueeze(-1) * policy).sum(0)
    values = [regularised_value(policy, q, weights, alpha)]
    for _ in range(2000):
        _, policy = blahut_arimoto_step(policy, q, weights, alpha)
        values.append(regularised_value(policy, q, weights, alpha))
        assert values[-1] >= values[-2] - 1e-9
    # Blahut-Arimoto's O(1/n) rate: after n steps the objective is within
    # alpha * KL(m* || m0) / n <= alpha * log(1 / min m0) / n of its optimum, so it can rise no further.
    assert values[2000] - values[1000] <= alpha * torch.log(1 / start_marginal.min()) / 1000 + 1e-9
    # Near an action whose marginal is dying out the iteration is slow (observed residuals up to
    # ~2e-4 after 1000 steps), so the fixed-point residual is checked loosely.
    marginal = (weights.unsqueeze(-1) * policy).sum(0)
    fixed_point = (marginal * torch.exp(q / alpha)) / (marginal * torch.exp(q / alpha)).sum(-1, keepdim=True)
    assert (policy - fixed_point).abs().max() < 1e-3


@settings(deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 6), alpha=st.floats(0.3, 3.0))
def test_one_context_multiplies_by_exp_q_over_alpha_each_step(seed, steps, alpha) -> None:
    """Nothing resists greediness with a single context: pi^M is pi^0 exp(M Q / alpha)."""
    q, _, policy0 = random_problem(seed, 1)
    policy = policy0
    for _ in range(steps):
        _, policy = blahut_arimoto_step(policy, q, torch.ones(1, dtype=torch.float64), alpha)
    expected = policy0 * torch.exp(steps * q / alpha)
    torch.testing.assert_close(policy, expected / expected.sum(-1, keepdim=True))


def two_type_env(seed: int = 0) -> tuple[MatrixBackend, EnvSpec]:
    args = MatrixArgs.model_validate({"game": "two_type", "episode_length": 2})
    comps = [MatrixComposition(types=["A", "B"]), MatrixComposition(types=["B", "A"])]
    spec = MatrixBackend.describe(args, comps)
    env = MatrixBackend(args, comps, 8, seed=seed)
    return env, spec


def build(cls: type, spec, seed: int = 0, **params):
    return cls(spec, build_config(cls, {**SMALL, **params}), seed, torch.device("cpu"))


def filled_batch(algorithm: MIPI, env: MatrixBackend) -> dict[str, torch.Tensor]:
    rollout(env, algorithm, explore=True, seed=3, learn=True)
    return algorithm.replay.sample(8, torch.Generator().manual_seed(0))


def constant_heads(algorithm: MIPI, bias: torch.Tensor) -> None:
    """Policy and marginal ignore their inputs and agree: log(pi / pi_bar) = 0 everywhere."""
    with torch.no_grad():
        for head in (algorithm.agent.policy, algorithm.agent.marginal):
            head.weight.zero_()
            head.bias.copy_(bias)


def test_a_policy_that_ignores_its_team_pays_no_penalty() -> None:
    """log(pi / pi_bar) = 0, so MIPI's critic target equals Value's."""
    env, spec = two_type_env()
    mipi, value = build(MIPI, spec), build(MIPIValue, spec)
    value.load_state_dict(mipi.state_dict())
    batch = filled_batch(mipi, env)
    for algorithm in (mipi, value):
        constant_heads(algorithm, torch.tensor([0.3, -0.2]))
    partition = mipi.draw_partition(batch)
    targets = []
    for algorithm in (mipi, value):
        algorithm.generator.manual_seed(5)
        targets.append(algorithm.loss(batch, partition)[0])
    torch.testing.assert_close(targets[0], targets[1])


def head_losses(algorithm: MIPI, batch, partition) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    algorithm.generator.manual_seed(11)
    critic, _, views = algorithm.critic_views(batch, partition)
    policy = algorithm._masked_mean(algorithm.policy_loss(batch, views), batch)
    marginal = algorithm._masked_mean(algorithm.marginal_loss(batch, views), batch)
    return critic, policy, marginal


def test_alpha_zero_is_the_value_ablation() -> None:
    env, spec = two_type_env()
    mipi, value = build(MIPI, spec, alpha=0.0), build(MIPIValue, spec)
    batch = filled_batch(mipi, env)
    value.load_state_dict(mipi.state_dict())
    partition = mipi.draw_partition(batch)
    for a, b in zip(head_losses(mipi, batch, partition)[:2], head_losses(value, batch, partition)[:2], strict=True):
        torch.testing.assert_close(a, b)


def test_a_uniform_marginal_is_the_entropy_ablation() -> None:
    """With the marginal head fixed at uniform, MIPI's critic and policy losses are Entropy's."""
    env, spec = two_type_env()
    mipi, entropy = build(MIPI, spec), build(MIPIEntropy, spec)
    batch = filled_batch(mipi, env)
    with torch.no_grad():
        mipi.agent.marginal.weight.zero_()
        mipi.agent.marginal.bias.zero_()
    entropy.load_state_dict(mipi.state_dict())
    partition = mipi.draw_partition(batch)
    for a, b in zip(head_losses(mipi, batch, partition)[:2], head_losses(entropy, batch, partition)[:2], strict=True):
        torch.testing.assert_close(a, b)


def test_each_loss_trains_only_its_own_parameters() -> None:
    env, spec = two_type_env()
    mipi = build(MIPI, spec)
    batch = filled_batch(mipi, env)
    critic, policy, marginal = head_losses(mipi, batch, mipi.draw_partition(batch))
    heads = {"policy": mipi.agent.policy, "marginal": mipi.agent.marginal}
    for name, loss in (("critic", critic), ("policy", policy), ("marginal", marginal)):
        grads = torch.autograd.grad(loss, list(mipi.agent.parameters()), allow_unused=True, retain_graph=True)
        touched = {
            n.split(".")[0] for (n, _), g in zip(mipi.agent.named_parameters(), grads, strict=True)
            if g is not None and g.abs().sum() > 0
        }
        if name == "critic":
            assert touched and not touched & set(heads)
        else:
            assert touched == {name}


def test_the_mixer_is_linear_and_monotone() -> None:
    """Q_jt = sum_i w_i(S) q_i + b(S) with w_i >= 0 (no nonlinearity between the layers)."""
    torch.manual_seed(0)
    mixer = RefilMixer(5, 8, 16, 2, softmax_weights=True, linear=True)
    state, state_mask = torch.randn(6, 3, 5), torch.ones(6, 3, dtype=torch.bool)
    agents = torch.ones(6, 3, dtype=torch.bool)
    q = torch.randn(6, 3, requires_grad=True)
    base = mixer(torch.zeros(6, 3), state, state_mask, agents)
    torch.testing.assert_close(mixer(2.5 * q, state, state_mask, agents) - base, 2.5 * (mixer(q, state, state_mask, agents) - base))
    (grad,) = torch.autograd.grad(mixer(q, state, state_mask, agents).sum(), q)
    assert (grad >= 0).all()


def test_the_penalty_weighs_what_the_config_says() -> None:
    _, spec = two_type_env()
    assert build(MIPIValue, spec).alpha == 0.0
    assert build(MIPIEntropy, spec, alpha=0.2).alpha == pytest.approx(0.2)
    defaults = MIPI.Config()
    assert (defaults.alpha, defaults.ba_iterations, defaults.lr) == (0.03, 4, 5e-4)
    assert {f.name for f in dataclasses.fields(MIPI.Config) if "tune" in f.metadata} >= {"alpha"}


def test_execution_needs_only_the_policy() -> None:
    """Greedy acting is the policy head's argmax: changing utilities or marginal changes nothing."""
    env, spec = two_type_env()
    mipi = build(MIPI, spec)
    filled_batch(mipi, env)
    step = env.reset(9)
    before, _ = mipi.act(step, None, explore=False)
    with torch.no_grad():
        mipi.agent.head.weight.normal_()
        mipi.agent.marginal.weight.normal_()
    after, _ = mipi.act(step, None, explore=False)
    assert (before == after).all()


def test_the_marginal_converges_to_the_imagined_average_of_the_policy() -> None:
    """Trained alone on a fixed batch, the marginal head's pi_bar(.|s+) becomes the average of
    the policy over the imagined contexts that share s+ (the Blahut-Arimoto marginal)."""
    from algorithms.common.batch import NOW, loss_mask
    from algorithms.mipi import Views

    env, spec = two_type_env()
    mipi = build(MIPI, spec)
    batch = filled_batch(mipi, env)
    with torch.no_grad():
        for weight in mipi.agent.parameters():  # sharper than at initialisation, so the policy
            weight.mul_(4.0)  # clearly depends on what the agent sees of its team
        views = Views(*(v.detach() for v in mipi.critic_views(batch)[2]))
    optimiser = torch.optim.Adam(mipi.agent.marginal.parameters(), lr=0.05)
    for _ in range(1500):
        loss = mipi._masked_mean(mipi.marginal_loss(batch, views), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    avail = batch["avail_actions"][:, NOW]
    with torch.no_grad():
        imagined = mipi.log_policy(views.within[:, NOW], avail).exp()
        marginal = mipi.log_marginal(views.alone[:, NOW], avail).exp()
    real = loss_mask(imagined[..., 0], batch)
    own_view, imagined, marginal = views.alone[:, NOW][real], imagined[real], marginal[real]
    groups = torch.unique(own_view, dim=0, return_inverse=True)[1]  # entries sharing s+
    assert groups.max() > 0, "the batch should hold several distinct s+"
    for g in range(int(groups.max()) + 1):
        members = groups == g
        torch.testing.assert_close(marginal[members], imagined[members].mean(0).expand_as(marginal[members]),
                                   atol=0.02, rtol=0)
