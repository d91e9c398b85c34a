"""ME-IGM: the order-preserving transform, the soft policy, its targets and temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.common.exploration import masked_log_softmax
from algorithms.me_igm import (
    MEQMIX,
    MEQMIXMLP,
    MEIGMConfig,
    OrderPreservingTransform,
    UnorderedTransform,
    soft_td_lambda_targets,
    temperature_loss,
)
from harness.api import EnvSpec, Step
from harness.config import build_config

G, U, A, N = 5, 6, 3, 4
SPEC = EnvSpec(
    obs_features=4,
    state_features=G,
    n_actions=U,
    max_agents=A,
    max_entities=4,
    max_state_entities=N,
    episode_limit=5,
)
SMALL = {
    "attn_embed": 16,
    "attn_heads": 2,
    "rnn_hidden": 8,
    "mixing_embed": 8,
    "hypernet_embed": 16,
    "hypernet_heads": 2,
    "transform_embed": 16,
    "batch_size": 4,
    "buffer_size": 20,
}

seeds = st.integers(0, 2**31 - 1)


def random_inputs(seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(7, A, U, generator=g) * scale
    state = torch.randn(7, N, G, generator=g)
    mask = torch.rand(7, N, generator=g) < 0.8
    mask[:, :A] = True
    return q, state, mask


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh random weights, larger than the default init, so the hypernetworks' outputs vary."""
    torch.manual_seed(seed)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.7)
    return module


@settings(max_examples=40, deadline=None)
@given(seeds, st.sampled_from([1, 2]))
def test_transform_keeps_the_order_of_every_utility_vector(seed: int, layers: int) -> None:
    transform = randomised(OrderPreservingTransform(G, hidden=8, embed=8, heads=2, layers=layers), seed)
    q, state, mask = random_inputs(seed)
    with torch.no_grad():
        out = transform(q, state, mask)
    assert torch.equal(out.argmax(-1), q.argmax(-1))
    # Every pair keeps its order (ties in the output only where ELU saturates far below zero).
    before = q.unsqueeze(-1) > q.unsqueeze(-2)
    after = out.unsqueeze(-1) >= out.unsqueeze(-2)
    assert bool((after | ~before).all())


def test_unordered_mlp_breaks_the_order_somewhere() -> None:
    """Negative control: signed weights (the `mlp` ablation) do not keep argmax q."""
    broken = 0
    for seed in range(5):
        transform = randomised(UnorderedTransform(G, U, hidden=16, embed=8, heads=2), seed)
        q, state, mask = random_inputs(seed)
        with torch.no_grad():
            broken += int((transform(q, state, mask).argmax(-1) != q.argmax(-1)).sum())
    assert broken > 0


def test_masked_actions_get_zero_probability_even_with_the_largest_utility() -> None:
    algorithm = MEQMIX(SPEC, build_config(MEQMIX, SMALL), seed=0, device="cpu")
    q, state, mask = random_inputs(1)
    q[..., 2] = 100.0
    avail = torch.ones(7, A, U, dtype=torch.bool)
    avail[..., 2] = False
    with torch.no_grad():
        pi = algorithm._log_policy(q, state, mask, avail).exp()
    assert float(pi[..., 2].max()) == 0.0
    assert torch.allclose(pi.sum(-1), torch.ones(7, A))


def test_temperature_gradient_is_entropy_minus_target() -> None:
    alpha = torch.tensor(0.7, requires_grad=True)
    entropy, target = torch.tensor([0.2, 0.4, 0.3]), torch.full((3,), 0.5)
    temperature_loss(alpha, entropy, target).backward()
    assert alpha.grad is not None
    assert float(alpha.grad) == pytest.approx(float((entropy - target).mean()))
    assert float(alpha.grad) < 0  # less random than the target: a descent step raises alpha


def reference_soft_targets(reward, terminated, filled, bootstrap, alpha_log_pi, gamma, lam):
    """The recursion as the paper writes it, one episode and step at a time."""
    out = torch.zeros_like(reward)
    for b in range(reward.shape[0]):
        steps = int(filled[b].sum())
        later = None
        for t in reversed(range(steps)):
            if terminated[b, t]:
                g = reward[b, t]
            else:
                ahead = bootstrap[b, t] if later is None else later
                g = reward[b, t] + gamma * ((1 - lam) * bootstrap[b, t] + lam * ahead - alpha_log_pi[b, t])
            out[b, t] = later = g
    return out


@settings(max_examples=30, deadline=None)
@given(seeds, st.sampled_from([0.0, 0.4, 1.0]))
def test_soft_targets_match_the_paper_recursion(seed: int, lam: float) -> None:
    g = torch.Generator().manual_seed(seed)
    b, t = 4, 6
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    filled = torch.arange(t) < lengths.unsqueeze(1)
    terminated = torch.zeros(b, t, dtype=torch.bool)
    ends = torch.rand(b, generator=g) < 0.5  # the others are truncated and bootstrap at the end
    terminated[torch.arange(b), lengths - 1] = ends
    reward, bootstrap, alpha_log_pi = (torch.randn(b, t, generator=g) for _ in range(3))
    ours = soft_td_lambda_targets(reward, terminated, filled, bootstrap, alpha_log_pi, 0.9, lam)
    expected = reference_soft_targets(reward, terminated, filled, bootstrap, alpha_log_pi, 0.9, lam)
    assert torch.allclose(torch.where(filled, ours, 0.0), expected, atol=1e-5)


def matrix_step(seed: int, b: int = 5) -> Step:
    rng = np.random.default_rng(seed)
    return Step(
        obs=rng.normal(size=(b, A, 4, 4)).astype(np.float32),
        obs_mask=np.ones((b, A, 4), bool),
        state=rng.normal(size=(b, N, G)).astype(np.float32),
        state_mask=np.ones((b, N), bool),
        avail_actions=(rng.random((b, A, U)) < 0.7) | (np.arange(U) == 0),
        agent_mask=np.ones((b, A), bool),
        reward=np.zeros(b, np.float32),
        done=np.zeros(b, bool),
        terminated=np.zeros(b, bool),
        won=np.zeros(b, bool),
        composition=np.zeros(b, np.int64),
    )


@pytest.mark.parametrize("cls", [MEQMIX, MEQMIXMLP])
def test_execution_is_argmax_q_and_needs_no_state(cls) -> None:
    algorithm = cls(SPEC, build_config(cls, SMALL), seed=0, device="cpu")
    step = matrix_step(0)
    greedy, _ = algorithm.act(step, None, explore=False)
    other_state = Step(
        **{
            **step.__dict__,
            "state": np.random.default_rng(9).normal(size=step.state.shape).astype(np.float32),
        }
    )
    assert np.array_equal(greedy, algorithm.act(other_state, None, explore=False)[0])
    with torch.no_grad():
        x = {
            k: torch.from_numpy(getattr(step, k)) for k in ("obs", "obs_mask", "agent_mask", "avail_actions")
        }
        q, _ = algorithm.agent(x["obs"], x["obs_mask"], x["agent_mask"], algorithm.agent.initial_state(5, A))
    assert np.array_equal(greedy, q.masked_fill(~x["avail_actions"], -1e9).argmax(-1).numpy())


def test_exploring_policy_mode_is_the_greedy_action() -> None:
    """OPT-O keeps the order, so the most probable sampled action is argmax q."""
    algorithm = MEQMIX(SPEC, build_config(MEQMIX, {**SMALL, "alpha_init": 0.05}), seed=0, device="cpu")
    step = matrix_step(1, b=1)
    greedy, _ = algorithm.act(step, None, explore=False)
    draws = np.stack([algorithm.act(step, None, explore=True)[0] for _ in range(200)])
    counts = np.apply_along_axis(lambda x: np.bincount(x, minlength=U), 0, draws)  # [U, 1, A]
    assert np.array_equal(counts.argmax(0), greedy)


def test_entropy_ablation_uses_the_utilities_as_logits() -> None:
    cls = MEQMIX
    config = build_config(cls, {**SMALL, "transform": "none", "alpha_init": 2.0})
    algorithm = cls(SPEC, config, seed=0, device="cpu")
    q, state, mask = random_inputs(3)
    avail = torch.ones(7, A, U, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(
            algorithm._log_policy(q, state, mask, avail), masked_log_softmax(q / 2.0, avail)
        )
    assert not list(algorithm.transform.parameters())


def test_defaults_are_the_papers() -> None:
    config = MEIGMConfig()
    assert (config.optimiser, config.lr, config.batch_size, config.td_lambda) == ("adam", 1e-3, 128, 0.4)
    assert (config.alpha_lr, config.target_entropy_per_agent, config.target_update_episodes) == (
        0.3,
        0.24,
        200,
    )
    assert config.td_weighting == "none"


def _trained_alpha(learn_alpha: bool) -> float:
    from harness.testing import _train
    from scenarios.matrix import MatrixArgs, MatrixBackend

    args = MatrixArgs.model_validate({"game": "nonmonotonic_3x3"})
    comps = MatrixBackend.default_compositions(args)
    spec = MatrixBackend.describe(args, comps)
    params = {**SMALL, "alpha_init": 0.03, "learn_alpha": learn_alpha, "batch_size": 8}
    algorithm = MEQMIX(spec, build_config(MEQMIX, params), seed=0, device="cpu")
    assert any(_train(algorithm, MatrixBackend(args, comps, 8, seed=1), rounds=6))
    return float(algorithm.temperature().detach())


def test_a_fixed_temperature_stays_where_it_starts() -> None:
    """The released code's setting (alpha 0.03, no L_alpha) against the paper's auto-tuning."""
    assert _trained_alpha(learn_alpha=False) == pytest.approx(0.03, abs=1e-9)
    assert _trained_alpha(learn_alpha=True) != pytest.approx(0.03, abs=1e-4)


def test_sum_mixer_adds_the_utilities() -> None:
    algorithm = MEQMIX(SPEC, build_config(MEQMIX, {**SMALL, "mixer": "sum"}), seed=0, device="cpu")
    q = torch.randn(7, A)
    present = torch.rand(7, A) < 0.7
    assert torch.allclose(algorithm.mixer(q, None, None, present), torch.where(present, q, 0.0).sum(-1))
    assert not list(algorithm.mixer.parameters())
