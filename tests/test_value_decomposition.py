"""IQL / VDN / QMIX learners: acting, masking, losses, determinism, checkpoints, learning."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from algorithms.value_decomposition import IQL, QMIX, VDN, QMIXConfig, ValueDecompositionConfig
from harness.api import EnvSpec, Step, Transition, tunable_fields

F, G, U = 4, 3, 5
SPEC = EnvSpec(
    obs_features=F, state_features=G, n_actions=U, max_agents=4, max_entities=6, max_state_entities=7, episode_limit=6
)
ALGORITHMS = [IQL, VDN, QMIX]
SMALL = {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 8, "batch_size": 4, "buffer_size": 50}


def small_config(cls, **overrides):
    extra = {"mixing_embed": 8, "hypernet_embed": 16, "hypernet_heads": 2} if cls is QMIX else {}
    return cls.Config(**{**SMALL, **extra, **overrides})


class RandomEpisodes:
    """A fake synchronous env batch: random entity observations, masks and rewards.

    Each env gets a random length; it terminates or (at the episode limit, or by chance)
    is truncated, then reports done/inactive like a real backend. Agents come first in
    the state entity list, as the mixer assumes.
    """

    def __init__(self, seed: int, b: int = 3, a: int = 3, e: int = 5, n: int = 6, limit: int = 6):
        self.rng = np.random.default_rng(seed)
        self.b, self.a, self.e, self.n, self.limit = b, a, e, n, limit

    def _step(self, t: int, reward: np.ndarray) -> Step:
        b, a, e, n, rng = self.b, self.a, self.e, self.n, self.rng
        obs_mask = rng.random((b, a, e)) < 0.7
        obs_mask[..., 0] = True
        avail = rng.random((b, a, U)) < 0.6
        avail[..., 0] = True
        agent_mask = self.present.copy()
        state_mask = rng.random((b, n)) < 0.8
        state_mask[:, :a] = agent_mask
        done = t >= self.length
        return Step(
            obs=rng.normal(size=(b, a, e, F)).astype(np.float32),
            obs_mask=obs_mask & agent_mask[..., None],
            state=rng.normal(size=(b, n, G)).astype(np.float32),
            state_mask=state_mask,
            avail_actions=avail,
            agent_mask=agent_mask,
            reward=np.where(t <= self.length, reward, 0).astype(np.float32),
            done=done,
            terminated=done & self.terminates,
            won=np.zeros(b, bool),
            composition=np.zeros(b, np.int64),
        )

    def reset(self) -> Step:
        self.length = self.rng.integers(1, self.limit + 1, size=self.b)
        self.terminates = (self.length < self.limit) & (self.rng.random(self.b) < 0.7)
        self.present = self.rng.random((self.b, self.a)) < 0.8
        self.present[:, 0] = True
        self.t = 0
        return self._step(0, np.zeros(self.b))

    def step(self, actions: np.ndarray) -> Step:
        self.t += 1
        return self._step(self.t, self.rng.normal(size=self.b))


def run_round(alg, env: RandomEpisodes, step: Step | None = None, memory=None):
    """Play one synchronous batch of episodes; return the actions taken and update metrics."""
    step = env.reset() if step is None else step
    taken = []
    while True:
        actions, memory = alg.act(step, memory, explore=True)
        taken.append(actions)
        nxt = env.step(actions)
        alg.observe(Transition(step, actions, nxt, ~step.done))
        step = nxt
        if step.done.all():
            return taken, alg.update()


def parameters(alg) -> list[torch.Tensor]:
    return [p.detach().clone() for p in alg.params]


# ------------------------------------------------------------------ configuration


def test_registered_names_and_pymarl_defaults():
    assert (IQL.name, VDN.name, QMIX.name) == ("iql", "vdn", "qmix")
    cfg = QMIXConfig()
    assert (cfg.lr, cfg.optim_alpha, cfg.optim_eps, cfg.batch_size, cfg.buffer_size) == (5e-4, 0.99, 1e-5, 32, 5000)
    assert (cfg.gamma, cfg.target_update_episodes, cfg.grad_norm_clip, cfg.rnn_hidden) == (0.99, 200, 10.0, 64)
    assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_steps) == (1.0, 0.05, 50_000)
    assert (cfg.attn_embed, cfg.attn_heads, cfg.mixing_embed, cfg.hypernet_embed) == (128, 4, 32, 64)
    assert cfg.double_q and cfg.td_lambda == 0 and cfg.updates_per_round == 1
    assert tunable_fields(ValueDecompositionConfig)["lr"] == {"low": 1e-4, "high": 3e-3, "log": True}
    assert QMIX.Config is QMIXConfig and VDN.Config is ValueDecompositionConfig


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_weights_do_not_depend_on_team_size(cls):
    bigger = dataclasses.replace(SPEC, max_agents=9, max_entities=20, max_state_entities=30)
    small, large = cls(SPEC, small_config(cls), 0, "cpu"), cls(bigger, small_config(cls), 0, "cpu")
    for (name, p), (_, p2) in zip(small.agent.named_parameters(), large.agent.named_parameters(), strict=True):
        assert torch.equal(p, p2), name
    for p, p2 in zip(small.mixer.parameters(), large.mixer.parameters(), strict=True):
        assert torch.equal(p, p2)


# ------------------------------------------------------------------ acting


@pytest.mark.parametrize("explore", [True, False])
def test_act_respects_available_actions_and_absent_agents(explore):
    alg = QMIX(SPEC, small_config(QMIX), 0, "cpu")
    env = RandomEpisodes(1, b=64, a=4)
    step = env.reset()
    step.avail_actions[0, 0] = False  # nothing available: action 0, no NaN
    actions, memory = alg.act(step, None, explore)
    assert actions.shape == (64, 4) and actions.dtype == np.int64
    chosen_ok = np.take_along_axis(step.avail_actions, actions[..., None], -1)[..., 0]
    assert np.all(chosen_ok | ~step.avail_actions.any(-1))
    assert np.all(actions[~step.agent_mask] == 0) and actions[0, 0] == 0
    assert memory.shape == (64, 4, 8) and torch.isfinite(memory).all()


def test_epsilon_is_driven_by_observed_active_steps():
    alg = VDN(SPEC, small_config(VDN, epsilon_anneal_steps=100), 0, "cpu")
    env = RandomEpisodes(2)
    run_round(alg, env)
    assert alg.env_steps == int(env.length.sum())
    assert alg.epsilon(alg.env_steps) == pytest.approx(1.0 - 0.95 * alg.env_steps / 100)


# ------------------------------------------------------------------ learning


def collect(alg, seed: int, rounds: int):
    env = RandomEpisodes(seed)
    for _ in range(rounds):
        run_round(alg, env)


def scramble_after_episode_end(batch: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Junk in every step after an episode ended, and in the final observation slot too when
    the episode terminated (nothing bootstraps from it)."""
    gen = torch.Generator().manual_seed(seed)
    length = batch["filled"].sum(1)
    terminated = batch["terminated"].any(1)
    steps, slots = batch["filled"].shape[1], batch["obs"].shape[1]
    junk_step = torch.arange(steps) >= length[:, None]
    junk_slot = torch.arange(slots) >= (length + (~terminated).long())[:, None]
    out = {"filled": batch["filled"]}  # the definition of where the episode ended
    for name, x in batch.items():
        if name == "filled":
            continue
        where = junk_slot if x.shape[1] == slots else junk_step
        where = where.view(*where.shape, *([1] * (x.dim() - 2)))
        if x.dtype == torch.bool:
            noise = torch.rand(x.shape, generator=gen) < 0.5
        elif x.dtype == torch.int64:
            noise = torch.randint(0, U, x.shape, generator=gen)
        else:
            noise = torch.randn(x.shape, generator=gen) * 100
        out[name] = torch.where(where, noise, x)
    return out


@pytest.mark.parametrize("lam", [0.0, 0.8])
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_data_after_the_episode_end_does_not_change_the_loss(cls, lam):
    alg = cls(SPEC, small_config(cls, td_lambda=lam), 0, "cpu")
    collect(alg, 3, rounds=4)
    batch = alg.replay.sample(8, torch.Generator().manual_seed(0))
    assert batch["terminated"].any() and (~batch["terminated"].any(1) & (batch["filled"].sum(1) < 6)).any()
    assert_loss_ignores_data_after_episode_end(alg, batch)


def assert_same_loss(alg, batch: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    """The loss and every statistic it reports agree on two views of the same episodes."""
    with torch.no_grad():
        loss, stats = alg.loss(batch)
        loss2, stats2 = alg.loss(other)
    torch.testing.assert_close(loss2, loss, atol=1e-5, rtol=1e-5)
    assert stats2 == pytest.approx(stats, abs=1e-5)


def assert_loss_ignores_data_after_episode_end(alg, batch: dict[str, torch.Tensor]) -> None:
    for seed in range(3):
        assert_same_loss(alg, batch, scramble_after_episode_end(batch, seed))


def insert_slice(x: torch.Tensor, dim: int, at: int, fill: torch.Tensor) -> torch.Tensor:
    """x with `fill` inserted along `dim` before index `at`."""
    return torch.cat([x.narrow(dim, 0, at), fill, x.narrow(dim, at, x.shape[dim] - at)], dim)


def padded_batch(batch: dict[str, torch.Tensor], seed: int = 0,
                 trailing_state_row: bool = False) -> dict[str, torch.Tensor]:
    """The same episodes with one more (masked, junk-filled) entity row after the last one and
    one more (absent) agent after the last agent, whose state row follows the agents'; with
    `trailing_state_row`, also one more masked junk row at the end of the state."""
    gen = torch.Generator().manual_seed(seed)
    _, _, a, e, _ = batch["obs"].shape

    def pad(x: torch.Tensor, dim: int, at: int) -> torch.Tensor:
        shape = [*x.shape[:dim], 1, *x.shape[dim + 1 :]]
        if x.dtype == torch.bool:
            fill = torch.zeros(shape, dtype=torch.bool)
        elif x.dtype == torch.int64:
            fill = torch.randint(0, U, shape, generator=gen)
        else:
            fill = torch.randn(shape, generator=gen) * 100
        return insert_slice(x, dim, at, fill)

    padded = dict(batch)
    padded["obs"] = pad(pad(batch["obs"], 3, e), 2, a)
    padded["obs_mask"] = pad(pad(batch["obs_mask"], 3, e), 2, a)
    for name in ("avail_actions", "agent_mask", "actions", "state", "state_mask"):
        padded[name] = pad(batch[name], 2, a)
    if trailing_state_row:
        for name in ("state", "state_mask"):
            padded[name] = pad(padded[name], 2, padded[name].shape[2])
    return padded


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_padding_agents_and_entities_does_not_change_the_loss(cls):
    alg = cls(SPEC, small_config(cls), 0, "cpu")
    collect(alg, 4, rounds=3)
    batch = alg.replay.sample(6, torch.Generator().manual_seed(1))
    b, slots, a, e, _ = batch["obs"].shape

    padded = padded_batch(batch)
    with torch.no_grad():
        torch.testing.assert_close(alg.loss(padded)[0], alg.loss(batch)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_update_runs_and_reports(cls):
    alg = cls(SPEC, small_config(cls, td_lambda=0.6, updates_per_round=2, target_update_episodes=5), 0, "cpu")
    env = RandomEpisodes(5)
    _, metrics = run_round(alg, env)
    assert metrics == {} and alg.grad_steps == 0  # fewer episodes than a batch
    _, metrics = run_round(alg, env)
    assert {"loss", "q_taken_mean", "grad_norm", "epsilon", "target_mean"} <= metrics.keys()
    assert all(np.isfinite(v) for v in metrics.values()) and alg.grad_steps == 2
    assert alg.last_target_update == alg.collector.episodes == 6
    for p, t in zip(alg.agent.parameters(), alg.target_agent.parameters(), strict=True):
        assert torch.equal(p, t)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_same_seed_same_actions_and_learning(cls):
    runs = []
    for _ in range(2):
        alg = cls(SPEC, small_config(cls), 7, "cpu")
        env = RandomEpisodes(11)
        actions = [run_round(alg, env)[0] for _ in range(4)]
        runs.append((actions, parameters(alg), alg.grad_steps))
    (actions1, params1, steps1), (actions2, params2, steps2) = runs
    assert steps1 == steps2 > 0
    for a1, a2 in zip(actions1, actions2, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a1, a2, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(params1, params2, strict=True))
    other = cls(SPEC, small_config(cls), 8, "cpu")
    assert not all(torch.equal(p, q) for p, q in zip(params1, parameters(other), strict=True))


def assert_resumes_mid_episode(alg, rebuild, env, tmp_path, params_of=parameters) -> None:
    """Checkpoint `alg` one step into a batch of episodes (the collector's partial batch is
    saved too); a fresh learner from `rebuild()` loaded from it continues exactly like `alg`:
    same actions, metrics and parameters (`params_of(learner)`)."""
    step = env.reset()
    actions, memory = alg.act(step, None, True)
    nxt = env.step(actions)
    alg.observe(Transition(step, actions, nxt, ~step.done))
    torch.save(alg.state_dict(), tmp_path / "ckpt.pt")
    restored = rebuild()
    restored.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    results = []
    for learner in (alg, restored):
        same_env = copy.deepcopy(env)
        taken, metrics = run_round(learner, same_env, step=nxt, memory=memory.clone())
        taken2, metrics2 = run_round(learner, same_env)
        results.append((taken + taken2, metrics, metrics2, params_of(learner)))
    (t1, m1, n1, p1), (t2, m2, n2, p2) = results
    assert all(np.array_equal(x, y) for x, y in zip(t1, t2, strict=True))
    assert m1 == m2 and n1 == n2 and m1
    assert all(torch.equal(p, q) for p, q in zip(p1, p2, strict=True))


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_state_dict_round_trip_mid_episode(cls, tmp_path):
    alg = cls(SPEC, small_config(cls), 0, "cpu")
    env = RandomEpisodes(6)
    for _ in range(3):
        run_round(alg, env)
    assert_resumes_mid_episode(alg, lambda: cls(SPEC, small_config(cls), 123, "cpu"), env, tmp_path)


# ------------------------------------------------------------------ a tiny cooperative game


PAYOFF = np.diag([1.0, 0.5, 0.25]).astype(np.float32)  # unique optimum: both agents pick 0
GAME_SPEC = EnvSpec(
    obs_features=2, state_features=2, n_actions=3, max_agents=2, max_entities=2, max_state_entities=2, episode_limit=1
)


def game_step(b: int, reward: np.ndarray | None = None) -> Step:
    obs = np.zeros((b, 2, 2, 2), np.float32)
    obs[:, :, :, 0] = 1  # both rows are units of type 0 (one-hot)
    state = np.zeros((b, 2, 2), np.float32)
    state[:, :, 0] = 1
    done = np.full(b, reward is not None)
    return Step(
        obs=obs,
        obs_mask=np.ones((b, 2, 2), bool),
        state=state,
        state_mask=np.ones((b, 2), bool),
        avail_actions=np.ones((b, 2, 3), bool),
        agent_mask=np.ones((b, 2), bool),
        reward=np.zeros(b, np.float32) if reward is None else reward.astype(np.float32),
        done=done,
        terminated=done,
        won=np.zeros(b, bool),
        composition=np.zeros(b, np.int64),
    )


def greedy_after_one_step_game(alg, steps: int, b: int = 8) -> list[list[int]]:
    """Train on the one-step PAYOFF game for `steps` env steps; the greedy joint action after."""
    while alg.env_steps < steps:
        start = game_step(b)
        actions, _ = alg.act(start, None, explore=True)
        alg.observe(Transition(start, actions, game_step(b, PAYOFF[actions[:, 0], actions[:, 1]]), np.ones(b, bool)))
        alg.update()
    greedy, _ = alg.act(game_step(1), None, explore=False)
    return greedy.tolist()


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_learns_the_optimum_of_a_one_step_game(cls):
    cfg = dataclasses.replace(
        small_config(cls, rnn_hidden=16, epsilon_anneal_steps=500, lr=5e-3, target_update_episodes=20),
        batch_size=32,
        buffer_size=500,
    )
    assert greedy_after_one_step_game(cls(GAME_SPEC, cfg, 0, "cpu"), steps=2000) == [[0, 0]]


def assert_trains_on_cuda_and_loads_on_cpu(cls, config) -> None:
    """A few rounds on CUDA give finite metrics, and the state loaded into a CPU copy gives
    the same utilities (checkpoints move between devices)."""
    alg = cls(SPEC, config, 0, torch.device("cuda"))
    env = RandomEpisodes(9)
    for _ in range(3):
        _, metrics = run_round(alg, env)
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    on_cpu = cls(SPEC, config, 0, "cpu")
    on_cpu.load_state_dict(alg.state_dict())
    step = env.reset()
    gpu_q, _ = alg.agent(*(torch.from_numpy(x).cuda() for x in (step.obs, step.obs_mask, step.agent_mask)),
                         alg.agent.initial_state(3, 3, "cuda"))
    cpu_q, _ = on_cpu.agent(*(torch.from_numpy(x) for x in (step.obs, step.obs_mask, step.agent_mask)),
                            on_cpu.agent.initial_state(3, 3))
    torch.testing.assert_close(gpu_q.cpu(), cpu_q, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ALGORITHMS)
def test_runs_on_cuda_and_checkpoints_load_on_cpu(cls):
    assert_trains_on_cuda_and_loads_on_cpu(cls, small_config(cls))


def test_flat_agent_encoder_is_built_and_options_an_agent_lacks_are_refused() -> None:
    from algorithms.collaq import CollaQ
    from algorithms.common.networks import FlatEncoder

    flat = QMIX(SPEC, small_config(QMIX, agent_encoder="flat"), 0, "cpu")
    assert isinstance(flat.agent.encoder, FlatEncoder) and flat.agent.encoder.max_entities == SPEC.max_entities
    with pytest.raises(ValueError, match="no attn_self_residual option"):  # a flat encoder has no attention
        QMIX(SPEC, small_config(QMIX, agent_encoder="flat", attn_self_residual=True), 0, "cpu")
    collaq = {"mixing_embed": 8, "hypernet_embed": 16, "hypernet_heads": 2}
    with pytest.raises(ValueError, match="CollaQ: its networks have no agent_encoder option"):
        CollaQ(SPEC, CollaQ.Config(**{**SMALL, **collaq, "agent_encoder": "flat"}), 0, "cpu")


def test_flat_mixer_is_built_for_qmix_and_refused_where_a_subclass_builds_its_own() -> None:
    from algorithms.common.mixers import FlatQMixer
    from algorithms.refil import REFIL

    flat = QMIX(SPEC, small_config(QMIX, mixer="flat"), 0, "cpu")
    assert isinstance(flat.mixer, FlatQMixer) and flat.mixer.max_agents == SPEC.max_agents
    refil = {"mixing_embed": 8, "hypernet_embed": 16, "hypernet_heads": 2}
    with pytest.raises(ValueError, match="REFIL: its networks have no mixer option"):
        REFIL(SPEC, REFIL.Config(**{**SMALL, **refil, "mixer": "flat"}), 0, "cpu")


def test_agent_id_input_tells_agents_with_the_same_view_apart() -> None:
    """PyMARL's obs_agent_id: without it two agents seeing the same entities get the same
    utilities; with it their utilities differ, and a team bigger than the id slots is refused."""
    same_view = torch.randn(2, 1, 6, F).expand(2, 3, 6, F)
    mask = torch.ones(2, 3, 6, dtype=torch.bool)
    present = torch.ones(2, 3, dtype=torch.bool)
    for agent_id in (False, True):
        agent = QMIX(SPEC, small_config(QMIX, agent_id=agent_id), 0, "cpu").agent
        q, _ = agent(same_view, mask, present, agent.initial_state(2, 3))
        assert torch.allclose(q[:, 0], q[:, 1]) != agent_id
    with pytest.raises(ValueError, match="has 4 slots, got 5 agents"):
        agent(torch.zeros(2, 5, 6, F), torch.ones(2, 5, 6, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool),
              agent.initial_state(2, 5))


def test_mixers_run_on_filled_steps_only_with_the_same_values_there() -> None:
    """`on_filled_steps` hands the function the filled (episode, step) entries only and puts
    its outputs back: equal to the whole computation where filled, zero elsewhere; inputs over
    the T+1 observation slots go in whole."""
    from algorithms.common.batch import on_filled_steps

    gen = torch.Generator().manual_seed(0)
    filled = torch.rand(3, 5, generator=gen) < 0.6
    batch = {"filled": filled}
    q, state = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 2, generator=gen)
    calls = []

    def mix(q: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(q.shape[0])
        return q.sum(-1) * state[..., 0], q * 2

    total, per_agent = on_filled_steps(batch, mix, q, state)
    expected_total, expected_per_agent = mix(q, state)
    assert calls[0] == int(filled.sum())
    torch.testing.assert_close(total, torch.where(filled, expected_total, 0.0))
    torch.testing.assert_close(per_agent, torch.where(filled[..., None], expected_per_agent, 0.0))
    slots = torch.randn(3, 6, 4, generator=gen)  # T+1 slots: computed whole
    torch.testing.assert_close(on_filled_steps(batch, lambda x: x * 3, slots), slots * 3)


def test_bfloat16_precision_runs_the_entity_encoders_in_bfloat16_and_learns() -> None:
    """`precision: bfloat16` autocasts the agent's and the mixer's attention, not the weights or
    the rest: the loss stays within a few percent of float32's on the same batch, and QMIX still
    finds the one-step game's optimum. "auto" follows the hardware."""
    from algorithms.common.networks import EntityEncoder, StateContext
    from algorithms.common.torch_utils import bfloat16_is_native, compute_dtype

    exact, reduced = (QMIX(SPEC, small_config(QMIX, precision=p), 0, "cpu") for p in ("float32", "bfloat16"))
    encoders = [m for m in (*reduced.agent.modules(), *reduced.mixer.modules(), *reduced.target_agent.modules())
                if isinstance(m, EntityEncoder | StateContext)]
    assert len(encoders) == 3 and all(m.compute_dtype == torch.bfloat16 for m in encoders)
    assert all(p.dtype == torch.float32 for p in reduced.agent.parameters())
    env = RandomEpisodes(2)
    for _ in range(2):
        run_round(exact, env)
    batch = exact.replay.sample(4, exact.generator)
    with torch.no_grad():
        loss32, loss16 = exact.loss(batch)[0], reduced.loss(batch)[0]
    assert loss16.dtype == torch.float32 and abs(float(loss16) - float(loss32)) < 0.05 * abs(float(loss32)) + 1e-3
    cfg = dataclasses.replace(small_config(QMIX, rnn_hidden=16, epsilon_anneal_steps=500, lr=5e-3,
                                           target_update_episodes=20, precision="bfloat16"),
                              batch_size=32, buffer_size=500)
    assert greedy_after_one_step_game(QMIX(GAME_SPEC, cfg, 0, "cpu"), steps=2000) == [[0, 0]]
    native = bfloat16_is_native(torch.device("cpu"))
    assert compute_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
    with pytest.raises(ValueError, match="precision"):
        compute_dtype("float16", torch.device("cpu"))


def test_no_gradient_step_before_learning_starts() -> None:
    """`learning_starts`: updates wait for that many env steps, however full the replay."""
    alg = QMIX(SPEC, small_config(QMIX, learning_starts=60), 0, "cpu")
    env = RandomEpisodes(4)
    rounds = 0
    while alg.grad_steps == 0:
        metrics = run_round(alg, env)[1]
        rounds += 1
        assert (metrics == {}) == (alg.env_steps < 60)
    assert rounds > 2 and len(alg.replay) > alg.cfg.batch_size  # the replay had a batch long before
