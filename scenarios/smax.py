"""StarCraft-like combat on JaxMARL's SMAX, the embedded default for the SC2 suites.

SMAX reimplements SMAC/SMACv2 micromanagement in JAX; no game binary is needed. This backend
keeps SMAX's units, combat rules and heuristic enemy AI, and replaces three things:

- Team generation. SMAX's SMACv2 sampler draws every unit from all six unit types; here a
  composition fixes the race, the ally and enemy counts, and either exact unit counts or
  per-unit type probabilities within the race (enemies mirror the allies' types, extra
  enemies are drawn from the same distribution, as SMACv2 does). Start positions follow
  SMACv2: `surround`, `reflect`, or either with probability 1/2; or `smax`, the layout of
  SMAX's fixed maps (3m, 2s3z, ...): each team in a clump on its own side of the map, units
  of each team in slot order with their types unshuffled; or `refil`, the layout of REFIL's
  symmetric-army maps (3-8sz_symmetric, ...), which MIPI's SMAC experiments use: the two
  armies face each other across the centre at a random angle. A composition may also draw its
  team uniformly from a list of unit mixes (`mixes`), as REFIL draws from its list of teams.
- Observations: entity lists for the harness's batched API (see `_entity_features`), so
  one network runs on teams of any size.
- Reward: SMAX's shaped reward (enemy health removed, normalised by the enemy count, plus
  a bonus for winning), computed with the *real* enemy count of each episode.

One compiled program serves every composition of a backend instance: the arrays are sized
for the largest composition, and the units a smaller team lacks start dead (dead SMAX
units cannot act, be seen, be shot or collide). With auto-reset on (continuous rollouts),
the compiled step itself draws the next battle of every env that was done, from that env's
own key, for a few envs at a time. Programs are cached per shape in this
process, and on disk by JAX's persistent compilation cache across processes.

Agents pick among `5 + max_enemies` discrete actions: 4 moves, stop, attack enemy slot k.
SMAX numbers are not comparable with SMACv2 (StarCraft II) numbers: the combat model,
timing and enemy AI are simplified.

Playing SMAX's fixed maps (to compare with JaxMARL's published baselines): the default args
(map_size 32, episode_limit 100, won_battle_bonus 1, enemy_attack_mode closest,
see_enemy_actions true) are JaxMARL's, so a map is its race, its team and `smax` starts:

    3m:       args: {race: terran, start_positions: smax}   train: [{allies: 3, units: {marine: 3}}]
    8m, 25m:  the same with 8 or 25 marines
    2s3z:     args: {race: protoss, start_positions: smax}  train: [{allies: 5, units: {stalker: 2, zealot: 3}}]
    5m_vs_6m: args: {race: terran, start_positions: smax}   train: [{allies: 5, enemies: 6, type_probs: {marine: 1}}]

(`type_probs` there, since extra enemies are drawn from the type distribution, which `units`
leaves uniform over the race.) JaxMARL's SMACv2-style maps draw every unit from all six types
of the three races, mirrored, with SMACv2's start positions (the default here):

    smacv2_5_units:  args: {race: any}   train: [{allies: 5}]     (10 and 20 units likewise)
 Maps whose enemies are not the allies' types (3s_vs_5z,
6h_vs_8z) cannot be written. What still differs from JaxMARL: the observation features
(entity rows, see `_entity_features`) and synchronous episodes (an env whose battle ended
waits for the batch's next reset instead of restarting at once).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from harness.api import Backend, Loop, Step
from harness.registry import register_env
from scenarios.smax_spec import (
    MIN_BATCH,
    STOP,
    SmaxArgs,
    SmaxComposition,
    SmaxTasks,
    composition_table,
    pow2,
)


@register_env("smax")
class SmaxBackend(SmaxTasks, Backend):
    """SMAX: StarCraft-like unit micromanagement in JAX (JaxMARL); no game binary needed."""

    supports_autoreset = True  # inside the compiled step: a done env draws its next battle from its own key
    supports_assigned_compositions = True  # the compiled reset takes each env's composition as data
    leaderboard_note = ("SMAX (JaxMARL's JAX reimplementation of SMAC combat) numbers are not comparable with "
                        "SMACv2 (StarCraft II) numbers: units, timing and the enemy AI are simplified.")
    raw_loop_label = "JaxMARL SMAX step_env, jitted and vmapped"

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def raw_loop(cls, args: SmaxArgs, composition: SmaxComposition, num_envs: int, **options: Any) -> Loop:
        """SMACv2's generation for the composition's sizes, or (`map_name`) JaxMARL's named map."""
        return JittedSmaxLoop(composition.allies, composition.n_enemies, num_envs, map_name=options.get("map_name"))

    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        try:
            with quiet_stdout():
                import jaxmarl.environments.smax  # noqa: F401
        except ImportError as exc:
            return (f"backend smax needs JaxMARL ({exc.name} is missing): "
                    "pip install -e '.[smax]' -c constraints.txt")
        return None

    # ---- batched environment ----------------------------------------------------------------
    def __init__(self, args: SmaxArgs, compositions: list[SmaxComposition], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        import jax

        self.args, self.num_envs = args, num_envs
        self.spec = self.describe(args, compositions)
        a, e = self.spec.max_agents, self.spec.max_entities - self.spec.max_agents
        # Race and start positions reach the program as data (the composition table), so every
        # race shares one compiled program per team size.
        self.core = _core(a, e, args.model_copy(update={"race": "protoss", "start_positions": "surround"}).model_dump_json())
        # Each new array shape costs a compilation of seconds, so the batch is padded to a power
        # of two (at least MIN_BATCH: small batches cost as much per step as 16 envs do) and the
        # composition table to a power of two rows (the extra rows have zero weight).
        self.padded = max(MIN_BATCH, pow2(num_envs))
        self.table = jax.device_put(composition_table(args, compositions, a, weights))  # read by every step
        self.key = jax.random.PRNGKey(seed)
        self.state: Any = None
        # The step's autoreset argument, both values on the device once (not copied over every step),
        # and the reset's "draw every env's composition by weight".
        self.autoreset_flags = jax.device_put((np.bool_(False), np.bool_(True)))
        self.draw_all = jax.device_put(np.full(self.padded, -1, np.int32))
        self.n_compositions = len(compositions)

    @functools.cached_property
    def programs(self) -> tuple[Any, Any]:
        """The compiled reset and step of this batch (see `SmaxCore.programs`)."""
        return self.core.programs(self.padded, self.table)

    def reset(self, seed: int | None = None) -> Step:
        return self._reset(seed, self.draw_all)

    def reset_compositions(self, seed: int | None, compositions: np.ndarray) -> Step:
        compositions = np.asarray(compositions, dtype=np.int32)
        if compositions.shape != (self.num_envs,) or not ((compositions >= 0) & (compositions < self.n_compositions)).all():
            raise ValueError(f"compositions must be {self.num_envs} indices below {self.n_compositions}, got {compositions}")
        assigned = np.full(self.padded, -1, np.int32)  # the padding envs draw theirs
        assigned[: self.num_envs] = compositions
        return self._reset(seed, assigned)

    def _reset(self, seed: int | None, assigned: Any) -> Step:
        import jax

        if seed is not None:
            self.key = jax.random.PRNGKey(seed)
        self.key, self.state, out = self.programs[0](self.key, self.table, assigned)
        return self._to_step(out)

    def step(self, actions: np.ndarray) -> Step:
        actions = np.asarray(actions, dtype=np.int32)
        if actions.shape != (self.num_envs, self.spec.max_agents):
            raise ValueError(f"actions must have shape {(self.num_envs, self.spec.max_agents)}, got {actions.shape}")
        if self.padded > self.num_envs:
            actions = np.concatenate([actions, np.full((self.padded - self.num_envs, actions.shape[1]), STOP, np.int32)])
        self.state, out = self.programs[1](self.state, actions, self.table, self.autoreset_flags[self.autoreset])
        return self._to_step(out)

    def _to_step(self, packed: dict[str, Any]) -> Step:
        return Step(**self.core.to_host(packed, self.padded, self.num_envs))

    def rng_state(self) -> str:
        return json.dumps(np.asarray(self.key).tolist())

    def set_rng_state(self, state: str) -> None:
        import jax.numpy as jnp

        if state:
            self.key = jnp.asarray(json.loads(state), dtype=jnp.uint32)

    def env_state(self) -> dict[str, np.ndarray]:
        """The batch of battles in flight (every leaf of the compiled state, in tree order)."""
        import jax

        if self.state is None:
            raise RuntimeError("smax: call reset() before env_state()")
        return {f"{i:03d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(self.state))}

    def load_env_state(self, state: dict[str, np.ndarray]) -> None:
        import jax
        import jax.numpy as jnp

        # The compiled step takes exactly the dtypes it was compiled for.
        template = self.core.state_template(self.padded, self.table)
        leaves = [jnp.asarray(state[k], dtype=like.dtype) for k, like in zip(sorted(state), jax.tree.leaves(template),
                                                                            strict=True)]
        self.state = jax.tree.unflatten(jax.tree.structure(template), leaves)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1: JaxMARL prints a notice when imported, and a library it imports
    resets `sys.stdout`, so `contextlib.redirect_stdout` cannot catch it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# The compiled core: one per (max allies, max enemies, args) in this process.


def _enable_compilation_cache() -> None:
    """Reuse compiled SMAX programs across processes (every worker would compile them again)."""
    import jax

    if getattr(jax.config, "jax_compilation_cache_dir", None):
        return
    path = os.environ.get("HARNESS_JAX_CACHE") or str(Path.home() / ".cache" / "teamgen-harness" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@functools.cache
def _core(max_allies: int, max_enemies: int, args_json: str) -> Any:
    with quiet_stdout():
        from scenarios._smax_core import SmaxCore

    _enable_compilation_cache()
    return SmaxCore(max_allies, max_enemies, SmaxArgs.model_validate_json(args_json))


class JittedSmaxLoop(Loop):
    """JaxMARL's SMAX transition (`step_env`: no auto-reset, whose reset-every-step would slow this
    side down) vmapped over the batch and `jax.jit`ted, random actions drawn inside the compiled
    function, nothing copied to the host: JaxMARL's SMAX as fast as its users run it (the
    harness compiles its own SMAX with a faster random hash, see `scenarios._jax_programs`).
    Every env counts at every call, a finished battle too (no reset to wait for): an upper bound.

    Teams and start positions: SMACv2's generation for `allies` v `enemies`, or JaxMARL's
    named map `map_name` (3m: its fixed teams and clumped starts; the sizes come from the map)."""

    def __init__(self, allies: int, enemies: int, num_envs: int, seed: int = 0, map_name: str | None = None) -> None:
        import jax

        with quiet_stdout():
            from jaxmarl.environments.smax import map_name_to_scenario
            from jaxmarl.environments.smax.heuristic_enemy_smax_env import HeuristicEnemySMAX
        if map_name is not None:
            env = HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name))
        else:
            env = HeuristicEnemySMAX(num_allies=allies, num_enemies=enemies, smacv2_position_generation=True,
                                     smacv2_unit_type_generation=True)
        agents, n_actions = list(env.agents), env.action_space(env.agents[0]).n  # type: ignore[attr-defined]

        def one(key: Any, state: Any) -> tuple[Any, Any, Any]:
            key, k_act, k_step = jax.random.split(key, 3)
            acts = jax.random.randint(k_act, (len(agents),), 0, n_actions)
            obs, state, _, _, _ = env.step_env(k_step, state, {a: acts[i] for i, a in enumerate(agents)})
            return key, state, obs

        self.jax, self.num_envs = jax, num_envs
        self.step = jax.jit(jax.vmap(one))
        self.keys = jax.random.split(jax.random.PRNGKey(seed), num_envs)
        _, states = jax.jit(jax.vmap(env.reset))(self.keys)
        # reset leaves a field weakly typed that step returns strongly typed: made strong here,
        # the first step's program is the one every later step runs (one compilation, not two).
        self.states = jax.tree_util.tree_map(lambda x: jax.numpy.array(x, dtype=x.dtype), states)
        self.obs: Any = None

    def advance(self) -> int:
        self.keys, self.states, self.obs = self.step(self.keys, self.states)
        return self.num_envs

    def settle(self) -> None:
        self.jax.block_until_ready(self.obs)

    def warm_up(self) -> None:
        self.advance()  # compiles
        self.settle()
