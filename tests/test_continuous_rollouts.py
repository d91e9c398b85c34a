"""Continuous rollouts (`rollout: continuous`): episode collectors fed episodes that start and
end at any step, PPO across updates, recurrent memory of restarted envs, and runs that play
episodes back to back, count every active env step, idle only to reset, checkpoint between
rounds and resume to the uninterrupted result."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from countdown_env import Countdown
from helpers import eval_values, spec_for

from algorithms.common.on_policy import RolloutStore
from algorithms.common.replay import EpisodeCollector, EpisodeReplay
from algorithms.common.transition_replay import TransitionReplay
from harness import registry
from harness.api import EnvSpec, Step, Transition
from harness.config import build_config, load_suite
from harness.errors import ConfigError
from harness.policies import reset_memory_rows
from harness.run.runner import ContinuousRollout, execute_run

LIMIT = 5
SPEC = EnvSpec(obs_features=1, state_features=1, n_actions=2, max_agents=1, max_entities=1, max_state_entities=1,
               episode_limit=LIMIT)


def coded_step(codes: np.ndarray, done: np.ndarray, reward: np.ndarray) -> Step:
    """A Step whose obs and state of env b are codes[b] (one agent, one entity)."""
    b = len(codes)
    column = codes.astype(np.float32).reshape(b, 1, 1)
    ones = np.ones((b, 1), bool)
    return Step(obs=column[..., None], obs_mask=ones[..., None], state=column, state_mask=ones,
                avail_actions=np.ones((b, 1, 2), bool), agent_mask=ones, reward=reward.astype(np.float32),
                done=done.copy(), terminated=done.copy(), won=np.zeros(b, bool), composition=np.zeros(b, np.int64))


class BackToBack:
    """Envs playing episodes of `lengths[b]` steps one after the other, with next-step
    auto-reset, as the runner feeds them to collectors (a `Transition` per step). The code
    100 e + 10 b + t + 1 names slot t of env b's episode e; a step's reward is the code of
    the slot it acted in, its action that code's parity."""

    def __init__(self, lengths: list[list[int]], first_episode: int = 0) -> None:
        self.lengths, n = lengths, len(lengths)
        self.episode, self.t = np.full(n, first_episode, np.int64), np.zeros(n, np.int64)
        self.step = coded_step(self.codes(), np.zeros(n, bool), np.zeros(n))
        self.first = np.ones(n, bool)

    def codes(self) -> np.ndarray:
        return 100 * self.episode + 10 * np.arange(len(self.lengths)) + self.t + 1

    def transition(self) -> Transition:
        before, restart = self.step, self.step.done.copy()
        reward = np.where(restart, 0, self.codes())
        self.episode[restart] += 1
        self.t = np.where(restart, 0, self.t + 1)
        ends = np.array([plan[min(e, len(plan) - 1)] for plan, e in zip(self.lengths, self.episode, strict=True)])
        self.step = coded_step(self.codes(), ~restart & (self.t == ends), reward)
        tr = Transition(before, (before.obs[:, :, 0, 0] % 2).astype(np.int64), self.step, ~restart, self.first)
        self.first = restart
        return tr


def stored(replay: EpisodeReplay, i: int) -> tuple[list[float], list[float], list[bool], int]:
    """Episode i of a replay: its observation codes (all slots), rewards, filled flags, length."""
    d = replay.data
    return d["obs"][i, :, 0, 0, 0].tolist(), d["reward"][i].tolist(), d["filled"][i].tolist(), int(replay.extents[i, 0])


def expected_episode(env: int, episode: int, length: int) -> tuple[list[float], list[float], list[bool], int]:
    codes = [100 * episode + 10 * env + t + 1 for t in range(length + 1)]
    pad = LIMIT - length
    return codes + [0.0] * pad, codes[:-1] + [0.0] * pad, [True] * length + [False] * pad, length


def test_episodes_are_stored_whole_as_they_end_and_in_flight_ones_wait() -> None:
    replay = EpisodeReplay.for_spec(SPEC, 16)
    collector = EpisodeCollector(replay)
    feed = BackToBack([[2, 4, 1], [3, 3, 5], [4, 4]])
    active = 0
    for _ in range(9):
        tr = feed.transition()
        active += int(tr.active.sum())
        collector.observe(tr)
    # (env, episode, length) in the order they ended; within a step, in env order.
    ended = [(0, 0, 2), (1, 0, 3), (2, 0, 4), (0, 1, 4), (1, 1, 3), (0, 2, 1), (2, 1, 4)]
    assert len(replay) == collector.episodes == len(ended)
    for i, (env, episode, length) in enumerate(ended):
        assert stored(replay, i) == expected_episode(env, episode, length), (env, episode)
    assert collector.env_steps == active == 9 * 3 - 5  # one reset step per episode that restarted
    # Env 1's third episode is in flight: its first slot is waiting in the collector.
    assert collector.lengths[1] == 1 and collector.buffers["obs"][1, :2, 0, 0, 0].tolist() == [211, 212]


def synchronous_batch(lengths: list[int]) -> list[Transition]:
    """One batch of episodes as a synchronous backend plays it: a done env repeats its last
    observation with zero reward until every env is done."""
    n = len(lengths)
    t, trs = np.zeros(n, np.int64), []
    step = coded_step(10 * np.arange(n) + 1, np.zeros(n, bool), np.zeros(n))
    while not step.done.all():
        active = ~step.done
        codes = 10 * np.arange(n) + t + 1
        t = np.where(active, t + 1, t)
        nxt = coded_step(10 * np.arange(n) + t + 1, t == np.array(lengths), np.where(active, codes, 0))
        trs.append(Transition(step, (codes % 2).astype(np.int64).reshape(n, 1), nxt, active))
        step = nxt
    return trs


def test_a_synchronous_batch_fed_as_continuous_stores_the_same_episodes() -> None:
    lengths = [2, 4, 3]
    sync, cont = EpisodeReplay.for_spec(SPEC, 8), EpisodeReplay.for_spec(SPEC, 8)
    sync_collector, cont_collector = EpisodeCollector(sync), EpisodeCollector(cont)
    first = np.ones(3, bool)
    for tr in synchronous_batch(lengths):
        sync_collector.observe(tr)
        cont_collector.observe(Transition(tr.step, tr.actions, tr.next, tr.active, first))
        first = np.zeros(3, bool)
    # Synchronous: the batch in env order; padding after an episode repeats its last
    # observation (what the env kept returning). Continuous: in order of ending, zero padding.
    assert [stored(cont, i) for i in range(3)] == [expected_episode(b, 0, lengths[b]) for b in (0, 2, 1)]
    for b, n in enumerate(lengths):
        codes, rewards, filled, length = stored(sync, b)
        real = expected_episode(b, 0, n)
        assert (codes[: n + 1], rewards, filled, length) == (real[0][: n + 1], real[1], real[2], real[3])
        assert codes[n + 1 : max(lengths) + 1] == [codes[n]] * (max(lengths) - n)
    for name in ("actions", "terminated", "obs_mask", "agent_mask", "avail_actions"):
        assert np.array_equal(sync.data[name][[0, 2, 1]][:, :2], cont.data[name][:3, :2]), name


def test_a_first_row_mid_episode_drops_the_unfinished_episode() -> None:
    """A resumed run whose backend could not save its episodes restarts every env: the
    collector forgets what it held of them."""
    replay = EpisodeReplay.for_spec(SPEC, 8)
    collector = EpisodeCollector(replay)
    feed = BackToBack([[4, 2], [5]])
    for _ in range(2):
        collector.observe(feed.transition())
    fresh = BackToBack([[2], [2]], first_episode=7)  # codes of the restarted episodes: 7xx
    for _ in range(2):
        collector.observe(fresh.transition())
    assert len(replay) == 2
    assert [stored(replay, i) for i in range(2)] == [
        expected_episode(b, 7, 2) for b in range(2)
    ], "slots of the dropped episodes leaked into the new ones"


def test_rollout_store_keeps_episodes_in_flight_across_clear_and_grows() -> None:
    store = RolloutStore(SPEC)
    feed = BackToBack([[1] * 30, [5] * 30, [2] * 30])
    for _ in range(4):
        store.observe(feed.transition())
    assert len(store) == 3 and store.collector.lengths[1] == 4  # env 1's first episode is in flight
    store.clear()
    for _ in range(20):
        store.observe(feed.transition())
    episodes = store.episodes_batch(torch.device("cpu"))
    firsts = sorted(episodes["obs"][:, 0, 0, 0, 0].tolist())
    assert 11.0 in firsts, "the episode in flight at clear() was lost"
    assert len(store) == store.episodes - 3 and store.replay.capacity >= len(store)


def test_transition_replay_skips_reset_steps() -> None:
    replay = TransitionReplay.for_spec(SPEC, 16)
    feed = BackToBack([[1], [3]])
    for _ in range(4):
        replay.add(feed.transition())
    # env 0: steps at t = 0, 2 (reset steps at 1, 3); env 1: 3 steps, then its reset.
    assert len(replay) == 5
    assert sorted(replay.data["obs"][:5, 0, 0, 0].tolist()) == [1, 11, 12, 13, 101]


class Memory(NamedTuple):
    h: torch.Tensor
    steps: torch.Tensor  # not per env: left alone


def test_default_memory_reset_zeroes_the_restarted_rows_only() -> None:
    with torch.inference_mode():  # as `act` makes it
        memory = {"agent": (torch.ones(3, 2, 4), Memory(torch.ones(3, 4), torch.ones(5)))}
    rows = np.array([False, True, False])
    out = reset_memory_rows(memory, rows)
    h, named = out["agent"]
    assert h[1].eq(0).all() and h[[0, 2]].eq(1).all()
    assert isinstance(named, Memory) and named.h[1].eq(0).all() and named.h[0].eq(1).all()
    assert named.steps.eq(1).all()
    assert reset_memory_rows(None, rows) is None


def _small(name: str, spec: EnvSpec, seed: int = 0) -> object:
    cls = registry.get_algorithm(name)
    params = {"attn_embed": 16, "attn_heads": 2, "rnn_hidden": 16, "batch_size": 4, "buffer_size": 64}
    fields = set(cls.Config.__dataclass_fields__)
    return cls(spec, build_config(cls, {k: v for k, v in params.items() if k in fields}), seed, torch.device("cpu"))


def countdown(num_envs: int, seed: int) -> Countdown:
    return Countdown(Countdown.Args(episode_limit=LIMIT), [Countdown.Composition(agents=2)], num_envs, seed)


@pytest.mark.parametrize("name", ["qmix", "ippo"])
def test_rounds_count_every_active_step_and_idle_only_to_reset(name: str) -> None:
    env = countdown(8, 1)
    algorithm = _small(name, env.spec)
    continuous = ContinuousRollout(env, algorithm, steps=7)
    counted = 0
    for _ in range(4):
        counted += continuous.run()
        algorithm.update()
    assert getattr(algorithm, "grad_steps", 0) > 0
    collector = algorithm.store.collector if name == "ippo" else algorithm.collector
    assert counted == collector.env_steps
    # Every env slot-step is active but one per episode: the step that restarts it (episodes
    # that ended at the very last step have not restarted yet).
    restarted = collector.episodes - int(continuous.step.done.sum())
    assert 4 * 7 * 8 - counted == restarted


def test_restarted_envs_get_fresh_memory_from_the_algorithms_own_hook() -> None:
    env = countdown(4, 2)
    algorithm = _small("random", env.spec)
    calls: list[np.ndarray] = []

    def reset_memory(memory: object, rows: np.ndarray) -> object:
        calls.append(rows.copy())
        return memory

    algorithm.reset_memory = reset_memory  # type: ignore[attr-defined]
    continuous = ContinuousRollout(env, algorithm, steps=1)
    restarts = 0
    for _ in range(12):
        before = len(calls)
        continuous.run()
        assert continuous.step is not None
        counters = continuous.step.obs[:, 0, 0, 0]
        if continuous.first.any():  # this step restarted those envs: first observations
            assert len(calls) == before + 1 and np.array_equal(calls[-1], continuous.first)
            assert (counters[continuous.first] == 0).all()
            restarts += 1
        else:
            assert len(calls) == before
    assert restarts >= 2


def test_ppo_takes_the_stored_log_probabilities_of_episodes_begun_before_an_update() -> None:
    env = countdown(8, 3)
    algorithm = _small("ippo", env.spec)
    continuous = ContinuousRollout(env, algorithm, steps=3)
    continuous.run()
    algorithm.update()
    assert algorithm.grad_steps > 0
    continuous.run()  # some episodes end now that began under the earlier parameters
    batch = algorithm.store.episodes_batch(torch.device("cpu"))
    stale = batch["policy_version"][:, 0] < algorithm.grad_steps
    assert stale.any() and (~stale).any()
    data, _ = algorithm.prepare(batch)
    recomputed, _ = algorithm.policy_terms(batch)
    mask, stored_log_pi = data["mask"], batch["behaviour_log_pi"]
    assert torch.equal(data["log_pi_old"][stale][mask[stale]], stored_log_pi[stale][mask[stale]])
    assert torch.equal(data["log_pi_old"][~stale][mask[~stale]], recomputed[~stale][mask[~stale]])
    # What acting stored is the acting policy's log-probability: the current one's for the
    # episodes begun since the update, no longer the current one's for the older episodes.
    assert torch.allclose(stored_log_pi[~stale][mask[~stale]], recomputed[~stale][mask[~stale]], atol=1e-5)
    assert not torch.allclose(stored_log_pi[stale][mask[stale]], recomputed[stale][mask[stale]], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Runs

SUITE = """\
name: continuous
metric: return
seeds: 1
budget: smoke
budgets:
  smoke: {{env_steps: 320, eval_every: 160, eval_episodes: 4}}
algorithms: [qmix, ippo]
allow_imports: [countdown_env]  # tests/countdown_env.py: a backend written for these tests
workers: 0
store: sqlite:///{dir}/store.db
checkpoint_dir: {dir}/checkpoints
params:
  "*": {{attn_embed: 16, attn_heads: 2, rnn_hidden: 16, epsilon_anneal_steps: 200, target_update_episodes: 20,
         batch_size: 8, buffer_size: 200}}
tasks:
  climbing:
    env: matrix
    args: {{game: climbing, episode_length: 3}}
    num_envs: 8
    rollout: continuous
    rollout_steps: 5
  countdown:
    env: countdown_env:Countdown
    args: {{episode_limit: 5}}
    num_envs: 8
    rollout: continuous
    rollout_steps: 3
  marines:
    env: smax
    args: {{race: terran, start_positions: smax, episode_limit: 40}}
    num_envs: 8
    rollout: continuous
    rollout_steps: 10
    train: [{{allies: 3, units: {{marine: 3}}}}]
"""


@pytest.fixture
def suite_path(tmp_path: Path) -> Path:
    path = tmp_path / "continuous.yaml"
    path.write_text(textwrap.dedent(SUITE.format(dir=tmp_path)))
    return path


def _interrupted_then_resumed(path: Path, task: str, algorithm: str, tmp_path: Path) -> tuple:
    reference = execute_run(spec_for(path, task, algorithm, checkpoint_dir=tmp_path / "ref"))
    spec = spec_for(path, task, algorithm, checkpoint_dir=tmp_path / "resumed")
    rounds: list[int] = []
    stopped = execute_run(spec, on_progress=rounds.append, should_stop=lambda: len(rounds) >= 3)
    assert stopped.status == "interrupted" and 0 < stopped.env_steps < spec.budget["env_steps"]
    resumed = execute_run(spec)
    assert reference.status == resumed.status == "done", (reference.reason, resumed.reason)
    return reference, resumed


@pytest.mark.parametrize(("task", "algorithm"), [("climbing", "qmix"), ("climbing", "ippo"), ("marines", "ippo")])
def test_a_continuous_run_resumes_to_the_uninterrupted_result(suite_path: Path, tmp_path: Path, task: str,
                                                              algorithm: str) -> None:
    if task == "marines":
        pytest.importorskip("jaxmarl")
    reference, resumed = _interrupted_then_resumed(suite_path, task, algorithm, tmp_path)
    assert eval_values(resumed.evals) == eval_values(reference.evals)
    assert (resumed.env_steps, resumed.grad_steps) == (reference.env_steps, reference.grad_steps)
    assert reference.env_steps >= 320 and reference.grad_steps > 0


def test_a_backend_that_cannot_save_its_episodes_resumes_with_new_ones(suite_path: Path, tmp_path: Path) -> None:
    reference, resumed = _interrupted_then_resumed(suite_path, "countdown", "qmix", tmp_path)
    assert resumed.env_steps >= 320 and resumed.grad_steps > 0


def test_continuous_rollouts_change_the_run_id_and_episodes_keep_theirs(suite_path: Path) -> None:
    plain = load_suite(str(suite_path), ["tasks.climbing.rollout=episodes", "tasks.climbing.rollout_steps=null"])
    continuous = load_suite(str(suite_path))
    config = {t.name: t.config_dict() for t in plain.tasks}["climbing"]
    assert "rollout" not in config and "rollout_steps" not in config  # ids of synchronous runs as before
    assert {t.name: t.config_dict() for t in continuous.tasks}["climbing"]["rollout"] == "continuous"


@pytest.mark.parametrize(("override", "key", "message"), [
    ("tasks.countdown.env=countdown_env:SynchronousCountdown", "rollout", "cannot reset its environments one by one"),
    ("tasks.climbing.rollout=episodes", "rollout_steps", "only applies to rollout: continuous"),
    ("tasks.climbing.rollout=always", "rollout", "'episodes' or 'continuous'"),
])
def test_bad_rollout_settings_are_refused_naming_the_key(suite_path: Path, override: str, key: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite_path), [override])
    text = str(info.value)
    assert key in text and message in text, text
