"""The SMAX backend's compiled programs: the straight-line random hash they are compiled with,
and the packed outputs they return, against JAX's own lowering and the unpacked Step arrays.

The backends here share test_smax_backend's 4 v 4 program (one compilation for the module).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("jaxmarl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.extend.random import threefry_2x32  # noqa: E402

from harness.api import Step  # noqa: E402
from scenarios._jax_programs import compile_program, threefry2x32  # noqa: E402
from scenarios.smax import SmaxBackend  # noqa: E402
from scenarios.smax_spec import STOP, SmaxArgs  # noqa: E402
from scenarios.smax_spec import SmaxComposition as Comp  # noqa: E402

FIELDS = [field.name for field in dataclasses.fields(Step)]


def test_straight_threefry_hashes_as_jax_does() -> None:
    rng = np.random.default_rng(0)
    key1, key2 = (np.uint32(k) for k in rng.integers(0, 2**32, size=2))
    counts = rng.integers(0, 2**32, size=2 * 1000, dtype=np.uint32)
    ours = np.concatenate(jax.jit(threefry2x32)(key1, key2, counts[:1000], counts[1000:]))
    assert np.array_equal(ours, np.asarray(jax.jit(threefry_2x32)((key1, key2), counts)))


def _draws(keys: jax.Array) -> dict[str, jax.Array]:
    """Every kind of draw the SMAX programs make, per key of a batch."""

    def one(key: jax.Array) -> dict[str, jax.Array]:
        k_split, k_uniform, k_choice, k_int = jax.random.split(key, 4)
        return {
            "split": jax.random.split(k_split, 3),
            "uniform": jax.random.uniform(k_uniform, (5, 2), minval=-2.0, maxval=2.0),
            "categorical": jax.random.categorical(k_choice, jnp.log(jnp.arange(1.0, 7.0)), shape=(9,)),
            "randint": jax.random.randint(k_int, (4,), 0, 11),
        }

    return jax.vmap(one)(keys)


def test_compiled_programs_draw_the_numbers_jit_draws_without_loops() -> None:
    keys = jax.random.split(jax.random.PRNGKey(7), 16)
    program = compile_program(_draws, keys)
    assert " while(" not in program.as_text()  # the hash is straight-line code
    expected = jax.jit(_draws)(keys)
    for name, drawn in program(keys).items():
        assert np.array_equal(np.asarray(drawn), np.asarray(expected[name])), name


def make_backend() -> SmaxBackend:
    """12 envs (a batch padded to 16) of three compositions, up to 4 v 4, short battles."""
    comps = [Comp(allies=2), Comp(allies=3, enemies=4), Comp(allies=4)]
    return SmaxBackend(SmaxArgs(race="terran", episode_limit=30), comps, num_envs=12, seed=5)


def _assert_same_step(step: Step, reference: dict[str, jax.Array], batch: int) -> None:
    for name in FIELDS:
        expected = np.asarray(reference[name])[:batch]
        got = getattr(step, name)
        assert got.shape == expected.shape and np.array_equal(got, expected), name
        assert got.flags.writeable, name
    assert step.composition.dtype == np.int64


@pytest.mark.parametrize("autoreset", [False, True])
def test_packed_steps_equal_the_unpacked_outputs_of_the_same_states(autoreset: bool) -> None:
    """Each Step field is exactly the unpacked program's output (JAX's own lowering), in
    synchronous episodes and with restarts inside the step, over a padded batch."""
    env, rng = make_backend(), np.random.default_rng(1)
    if autoreset:
        env.enable_autoreset()
    reset = jax.jit(env.core._reset)
    step_unpacked = jax.jit(env.core._step)
    key = env.key
    step = env.reset()
    _, state, reference = reset(key, env.table, env.draw_all)
    _assert_same_step(step, reference, env.num_envs)
    restarted = 0
    for _ in range(40):
        actions = np.where(step.avail_actions, rng.random(step.avail_actions.shape), -1.0).argmax(-1)
        padded = np.full((env.padded, env.spec.max_agents), STOP, np.int32)
        padded[: env.num_envs] = actions
        restarted += int(step.done.sum()) if autoreset else 0
        step = env.step(actions)
        state, reference = step_unpacked(state, padded, env.table, np.bool_(autoreset))
        _assert_same_step(step, reference, env.num_envs)
        for ours, theirs in zip(jax.tree.leaves(env.state), jax.tree.leaves(state), strict=True):
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert restarted > 0 or not autoreset  # the restart path ran


def test_flag_fields_are_separate_blocks_of_one_buffer() -> None:
    """Writing into one boolean field (views of one packed copy) leaves the others alone."""
    step = make_backend().reset(3)
    before = {name: getattr(step, name).copy() for name in FIELDS}
    step.avail_actions[...] = ~step.avail_actions
    step.done[...] = True
    for name in FIELDS:
        if name not in ("avail_actions", "done"):
            assert np.array_equal(getattr(step, name), before[name]), name
