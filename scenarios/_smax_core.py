"""The jitted part of the SMAX backend (imported only when an SMAX environment is built).

Everything random happens inside the compiled functions, driven by keys kept in the batch
state: an eager JAX call costs milliseconds, a Python loop over environments more.

The compiled reset and step return the seven boolean Step fields packed into one flat buffer
(`FLAGS`), each field a contiguous block over the whole batch: every output of a compiled
program and every array brought to the host has a fixed cost, a good part of a step at small
batches, so five outputs instead of eleven. The float fields stay apart: concatenating the
observations into a buffer costs more than it saves. `SmaxCore.to_host` makes the numpy fields.

The programs are compiled ahead of time, once per batch shape, by `compile_program` (whose
random draws run faster on the CPU than `jax.jit`'s, with the same numbers).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxmarl.environments.smax.heuristic_enemy_smax_env import HeuristicEnemySMAX

from harness.api import busy
from scenarios._jax_programs import compile_program
from scenarios.smax_spec import (
    N_MOVES,
    REFIL_JITTER,
    REFIL_SEPARATION,
    REFIL_UNIT_SPREAD,
    SMAX_START_NOISE,
    SMAX_UNIT_TYPES,
    SmaxArgs,
)

RESTART_CHUNK = 4  # envs whose next battle a step draws at once (as many chunks as needed)
# The Step fields packed into the "flags" output, in order.
FLAGS = ("obs_mask", "state_mask", "avail_actions", "agent_mask", "done", "terminated", "won")


class SmaxCore:
    """Batched reset / step of an SMAX battle sized for `max_allies` v `max_enemies`."""

    def __init__(self, max_allies: int, max_enemies: int, args: SmaxArgs) -> None:
        self.a, self.e, self.args = max_allies, max_enemies, args
        self.n_units = max_allies + max_enemies
        self.env = HeuristicEnemySMAX(
            num_allies=max_allies,
            num_enemies=max_enemies,
            map_width=args.map_size,
            map_height=args.map_size,
            max_steps=args.episode_limit,
            won_battle_bonus=args.won_battle_bonus,
            see_enemy_actions=args.see_enemy_actions,
            attack_mode=args.enemy_attack_mode,
        )
        self.smax = self.env._env
        # Agent i's entity order: itself, the other allies in slot order, then the enemies.
        order = [[i] + [j for j in range(self.n_units) if j != i] for i in range(max_allies)]
        self.view_order = jnp.asarray(np.array(order, np.int32))
        # Every field SMAX's reset sets but the positions, types, health and liveness that
        # `_new_battle` draws itself is the same for every key: one reset, made here, gives
        # them to every battle, and the compiled reset and step skip SMAX's own draws.
        self.blank = self.env.reset(jax.random.PRNGKey(0))[1]
        self.field_shapes = self._field_shapes()
        self._programs: dict[tuple, tuple[Any, Any]] = {}

    # ---- team generation ----------------------------------------------------------------------
    def _draw_types(self, key: jax.Array, probs: jax.Array, fixed: jax.Array, n: jax.Array, m: jax.Array,
                    shuffle: jax.Array) -> jax.Array:
        """Unit types of every slot: allies from the composition, enemies mirroring them."""
        k_draw, k_perm, k_extra = jax.random.split(key, 3)
        logits = jnp.log(probs)
        drawn = jax.random.categorical(k_draw, logits, shape=(self.a,))
        allies = jnp.where(fixed >= 0, fixed, drawn)
        # Exact counts are listed type by type: shuffle them over the real slots, except on
        # SMAX's fixed maps, which keep that order (2s3z: the stalkers in slots 0 and 1).
        order = jnp.where(shuffle, jax.random.uniform(k_perm, (self.a,)), jnp.arange(self.a) / self.a)
        rank = jnp.where(jnp.arange(self.a) < n, order, 2.0)
        allies = allies[jnp.argsort(rank)]
        extra = jax.random.categorical(k_extra, logits, shape=(self.e,))
        mirror = jnp.arange(self.e) < jnp.minimum(n, m)
        enemies = jnp.where(mirror, allies[jnp.minimum(jnp.arange(self.e), self.a - 1)], extra)
        return jnp.concatenate([allies, enemies]).astype(jnp.uint8)

    def _reflect(self, key: jax.Array, n: jax.Array, m: jax.Array) -> jax.Array:
        """Allies anywhere in the left half; enemies mirror them, extra enemies anywhere on the right."""
        size = self.args.map_size
        k_ally, k_enemy = jax.random.split(key)
        allies = jax.random.uniform(k_ally, (self.a, 2), minval=0.0, maxval=jnp.array([size / 2, size]))
        mirrored = allies[jnp.minimum(jnp.arange(self.e), self.a - 1)] * jnp.array([-1.0, 1.0]) + jnp.array([size, 0.0])
        extra = jax.random.uniform(k_enemy, (self.e, 2), minval=jnp.array([size / 2, 0.0]), maxval=size)
        enemies = jnp.where((jnp.arange(self.e) < jnp.minimum(n, m))[:, None], mirrored, extra)
        return jnp.concatenate([allies, enemies])

    def _surround(self, key: jax.Array) -> jax.Array:
        """One team in the centre, the other split in four groups on the diagonals around it."""
        size = self.args.map_size
        k_side, k_centre, k_group, k_t, k_noise = jax.random.split(key, 5)
        centre = jnp.full((2,), size / 2)
        corners = jnp.array([[0.0, 0.0], [0.0, size], [size, 0.0], [size, size]])
        t = jax.random.uniform(k_t, (4, 1))
        group_pos = t * centre + (1 - t) * corners
        group = jax.random.randint(k_group, (self.n_units,), 0, 4)
        noise = jax.random.uniform(k_noise, (self.n_units, 2), minval=-2.0, maxval=2.0)
        inner = centre + jax.random.uniform(k_centre, (self.n_units, 2), minval=-2.0, maxval=2.0)
        outer = group_pos[group] + noise
        allies_inside = jax.random.bernoulli(k_side)
        is_ally = jnp.arange(self.n_units) < self.a
        return jnp.where((is_ally == allies_inside)[:, None], inner, outer)

    def _clumps(self, key: jax.Array) -> jax.Array:
        """SMAX's fixed-map layout: allies around (1/4, 1/2) of the map, enemies around (3/4, 1/2),
        each unit uniformly within SMAX_START_NOISE of its team's centre on both axes."""
        size = self.args.map_size
        is_ally = jnp.arange(self.n_units) < self.a
        centres = jnp.stack([jnp.where(is_ally, size / 4, 3 * size / 4), jnp.full(self.n_units, size / 2)], axis=-1)
        noise = jax.random.uniform(key, (self.n_units, 2), minval=-SMAX_START_NOISE, maxval=SMAX_START_NOISE)
        return centres + noise

    def _refil(self, key: jax.Array, types: jax.Array) -> jax.Array:
        """REFIL's symmetric-army layout: army centres REFIL_SEPARATION apart across the map's
        centre at a uniform angle, each (team, unit type) group offset within REFIL_JITTER of
        its army's centre, each unit within REFIL_UNIT_SPREAD of its group's point."""
        k_angle, k_group, k_unit = jax.random.split(key, 3)
        theta = jax.random.uniform(k_angle, (), maxval=2 * jnp.pi)
        half = REFIL_SEPARATION / 2 * jnp.stack([jnp.cos(theta), jnp.sin(theta)])
        is_enemy = (jnp.arange(self.n_units) >= self.a).astype(jnp.int32)
        centres = self.args.map_size / 2 + jnp.where(is_enemy[:, None] == 1, -half, half)
        group_offsets = jax.random.uniform(k_group, (2, len(SMAX_UNIT_TYPES), 2),
                                           minval=-REFIL_JITTER, maxval=REFIL_JITTER)
        spread = jax.random.uniform(k_unit, (self.n_units, 2), minval=-REFIL_UNIT_SPREAD, maxval=REFIL_UNIT_SPREAD)
        return centres + group_offsets[is_enemy, types] + spread

    def _mix_types(self, key: jax.Array, table: dict[str, jax.Array], comp: jax.Array) -> jax.Array:
        """Exact ally types of a composition: from one of its mixes, drawn uniformly, where it
        has mixes, else as the table fixes them (-1: drawn per unit)."""
        weights = table["mix_weights"][comp]
        first_count = jax.random.categorical(key, weights)
        first, second = table["mix_types"][comp, 0], table["mix_types"][comp, 1]
        from_mix = jnp.where(jnp.arange(self.a) < first_count, first, second)
        return jnp.where(jnp.isfinite(weights).any(), from_mix, table["fixed_types"][comp])

    def _new_battle(self, key: jax.Array, table: dict[str, jax.Array], assigned: jax.Array) -> tuple[Any, jax.Array]:
        """A battle of composition `assigned` (a row of the table), or of one drawn by the
        table's weights where `assigned` is negative."""
        k_comp, k_types, k_clumps, k_mode, k_reflect, k_surround, k_later = jax.random.split(key, 7)
        # Draws added after the first six split the seventh key, so the earlier layouts and
        # team draws keep their numbers.
        k_mix, k_refil = jax.random.split(k_later)
        comp = jnp.where(assigned >= 0, assigned, jax.random.categorical(k_comp, table["weights"]))
        n, m = table["allies"][comp], table["enemies"][comp]
        smax_layout = table["smax_layout"][comp]
        fixed = self._mix_types(k_mix, table, comp)
        types = self._draw_types(k_types, table["type_probs"][comp], fixed, n, m, ~smax_layout)
        surround = jax.random.uniform(k_mode) < table["p_surround"][comp]
        positions = jnp.where(surround, self._surround(k_surround), self._reflect(k_reflect, n, m))
        positions = jnp.where(smax_layout, self._clumps(k_clumps), positions)
        positions = jnp.where(table["refil_layout"][comp], self._refil(k_refil, types), positions)
        # SMAX kills units touching walls (with `smax` starts only maps narrower than 10 come that close).
        positions = jnp.clip(positions, 0.5, self.args.map_size - 0.5)
        slot = jnp.arange(self.n_units)
        alive = jnp.where(slot < self.a, slot < n, slot - self.a < m)
        state = self.blank
        inner = state.state.replace(
            unit_types=types,
            unit_positions=positions,
            unit_alive=alive,
            unit_health=jnp.where(alive, self.smax.unit_type_health[types], 0.0),
        )
        inner = self.smax._push_units_away(inner)
        # Strong dtypes everywhere, so the state `step` returns has the same signature as this
        # one, the signature the step is compiled for.
        state = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state.replace(state=inner))
        return state, comp

    # ---- observations -----------------------------------------------------------------------
    def _entity_features(self, s: Any) -> tuple[jax.Array, jax.Array]:
        """obs [A, U, F] and obs_mask [A, U] of every ally, in each ally's entity order."""
        smax, size = self.smax, self.args.map_size
        max_health = smax.unit_type_health[s.unit_types]
        health = s.unit_health / max_health
        cooldown = jnp.clip(s.unit_weapon_cooldowns / smax.unit_type_weapon_cooldowns[s.unit_types], 0.0, 1.0)
        attacking = (s.prev_attack_actions >= N_MOVES).astype(jnp.float32)
        type_onehot = jax.nn.one_hot(s.unit_types, len(smax.unit_type_names))
        is_ally = jnp.arange(self.n_units) < self.a
        move = s.prev_movement_actions
        if not self.args.see_enemy_actions:
            move = jnp.where(is_ally[:, None], move, 0.0)
            attacking = jnp.where(is_ally, attacking, 0.0)

        order = self.view_order  # [A, U]
        sight = smax.unit_type_sight_ranges[s.unit_types[: self.a]]  # [A]
        rel = (s.unit_positions[order] - s.unit_positions[: self.a, None]) / sight[:, None, None]
        dist = jnp.linalg.norm(rel, axis=-1)
        seen = order[:, 1:]
        visible = (dist[:, 1:] < 1.0) & s.unit_alive[seen] & s.unit_alive[: self.a, None]
        mask = jnp.concatenate([s.unit_alive[: self.a, None], visible], axis=1)
        kind = jnp.stack([
            jnp.broadcast_to(jnp.arange(self.n_units) == 0, order.shape),
            is_ally[order] & (jnp.arange(self.n_units) > 0),
            ~is_ally[order],
        ], axis=-1).astype(jnp.float32)
        per_unit = jnp.concatenate([
            health[:, None], move, attacking[:, None], cooldown[:, None],
            s.unit_positions / size - 0.5, type_onehot,
        ], axis=-1)[order]  # [A, U, 1+2+1+1+2+6]
        obs = jnp.concatenate([
            kind, per_unit[..., :1], rel, dist[..., None], per_unit[..., 1:],
        ], axis=-1)
        return jnp.where(mask[..., None], obs, 0.0), mask

    def _state_features(self, s: Any) -> tuple[jax.Array, jax.Array]:
        smax = self.smax
        is_ally = (jnp.arange(self.n_units) < self.a).astype(jnp.float32)
        rows = jnp.concatenate([
            is_ally[:, None], 1.0 - is_ally[:, None],
            (s.unit_health / smax.unit_type_health[s.unit_types])[:, None],
            s.unit_positions / self.args.map_size - 0.5,
            s.prev_movement_actions,
            (s.prev_attack_actions >= N_MOVES).astype(jnp.float32)[:, None],
            jnp.clip(s.unit_weapon_cooldowns / smax.unit_type_weapon_cooldowns[s.unit_types], 0.0, 1.0)[:, None],
            jax.nn.one_hot(s.unit_types, len(smax.unit_type_names)),
        ], axis=-1)
        return jnp.where(s.unit_alive[:, None], rows, 0.0), s.unit_alive

    def _avail_actions(self, s: Any) -> jax.Array:
        """[A, 5 + E]: moves if alive, stop always, attack a live enemy within range."""
        alive = s.unit_alive[: self.a]
        ranges = self.smax.unit_type_attack_ranges[s.unit_types[: self.a]]
        gap = jnp.linalg.norm(s.unit_positions[: self.a, None] - s.unit_positions[None, self.a :], axis=-1)
        shoot = (gap < ranges[:, None]) & s.unit_alive[None, self.a :] & alive[:, None]
        moves = jnp.concatenate([jnp.repeat(alive[:, None], N_MOVES - 1, axis=1), jnp.ones((self.a, 1), bool)], axis=1)
        return jnp.concatenate([moves, shoot], axis=1)

    def _outputs(self, s: Any, comp: jax.Array, reward: jax.Array, done: jax.Array, terminated: jax.Array,
                 won: jax.Array) -> dict[str, jax.Array]:
        obs, obs_mask = self._entity_features(s)
        state, state_mask = self._state_features(s)
        return {
            "obs": obs, "obs_mask": obs_mask, "state": state, "state_mask": state_mask,
            "avail_actions": self._avail_actions(s), "agent_mask": s.unit_alive[: self.a],
            "reward": reward, "done": done, "terminated": terminated, "won": won, "composition": comp,
        }

    # ---- packing ----------------------------------------------------------------------------
    def _field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each Step field's shape for one env, as `_outputs` makes it."""
        flag = jnp.zeros((), bool)
        shapes = jax.eval_shape(self._outputs, self.blank.state, jnp.zeros((), jnp.int32), jnp.zeros(()),
                                flag, flag, flag)
        return {name: tuple(shape.shape) for name, shape in shapes.items()}

    @staticmethod
    def _pack(out: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`_outputs` (batched) with the boolean fields in one flat buffer, "flags"."""
        unpacked = {name: array for name, array in out.items() if name not in FLAGS}
        return {**unpacked, "flags": jnp.concatenate([out[name].ravel() for name in FLAGS])}

    def to_host(self, packed: dict[str, Any], padded: int, batch: int) -> dict[str, np.ndarray]:
        """The Step fields of the first `batch` envs of a `padded`-env batch as writable numpy
        arrays (JAX's are read-only): a copy of each float field's rows, composition widened
        to int64, and one copy of the flags buffer, whose fields are views (each field's block
        is env-major, so its first envs are a prefix of it)."""
        fields = {name: np.array(np.asarray(packed[name])[:batch]) for name in ("obs", "state", "reward")}
        fields["composition"] = np.asarray(packed["composition"])[:batch].astype(np.int64)
        flags, start = np.array(packed["flags"]), 0
        for name in FLAGS:
            end = start + padded * math.prod(self.field_shapes[name])
            fields[name] = flags[start:end].reshape(padded, *self.field_shapes[name])[:batch]
            start = end
        return fields

    # ---- compiled programs --------------------------------------------------------------------
    def programs(self, batch: int, table: dict[str, jax.Array]) -> tuple[Any, Any]:
        """The compiled reset `(key, table, assigned) -> (key, state, packed)` and step `(state,
        actions, table, autoreset) -> (state, packed)` of a `batch`-env batch (see `_reset`,
        `_step`), compiled at the first call for each batch size and table shape, then kept
        for the life of the process: every run of a worker on a task of this size reuses them."""
        signature = (batch, *((name, array.shape) for name, array in sorted(table.items())))
        if signature not in self._programs:
            key = jax.random.PRNGKey(0)
            assigned = jax.ShapeDtypeStruct((batch,), jnp.int32)
            state = self.state_template(batch, table)
            actions = jax.ShapeDtypeStruct((batch, self.a), jnp.int32)
            flag = jax.ShapeDtypeStruct((), jnp.bool_)
            with busy(f"compiling SMAX {self.a}v{self.e} for {batch} envs"):
                self._programs[signature] = (
                    compile_program(self._packed_reset, key, table, assigned),
                    compile_program(self._packed_step, state, actions, table, flag),
                )
        return self._programs[signature]

    def state_template(self, batch: int, table: dict[str, jax.Array]) -> Any:
        """The shapes and dtypes of a batch state (a tree of `jax.ShapeDtypeStruct`)."""
        assigned = jnp.full((batch,), -1, jnp.int32)
        return jax.eval_shape(lambda key, t: self._reset(key, t, assigned)[1], jax.random.PRNGKey(0), table)

    def _packed_reset(self, key: jax.Array, table: dict[str, Any], assigned: jax.Array) -> tuple[jax.Array, dict, dict]:
        key, batch_state, out = self._reset(key, table, assigned)
        return key, batch_state, self._pack(out)

    def _packed_step(self, batch_state: dict, actions: jax.Array, table: dict[str, Any],
                     autoreset: jax.Array) -> tuple[dict, dict]:
        batch_state, out = self._step(batch_state, actions, table, autoreset)
        return batch_state, self._pack(out)

    # ---- batched reset and step ---------------------------------------------------------------
    def _reset(self, key: jax.Array, table: dict[str, Any], assigned: jax.Array) -> tuple[jax.Array, dict, dict]:
        """New battles in every env: of composition `assigned[b]` ([batch] int32, rows of the
        table), or drawn by weight where it is negative."""
        batch = assigned.shape[0]
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, batch)
        states, comps = jax.vmap(self._new_battle, in_axes=(0, None, 0))(keys, table, assigned)
        false = jnp.zeros(batch, bool)
        batch_state = {
            "env": states, "key": jax.random.split(keys[0], batch), "comp": comps, "done": false,
            "n_enemies": table["enemies"][comps],
        }
        out = jax.vmap(self._outputs)(states.state, comps, jnp.zeros(batch), false, false, false)
        return key, batch_state, out

    def _step_one(self, key: jax.Array, state: Any, actions: jax.Array, done: jax.Array,
                  n_enemies: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        key, sub = jax.random.split(key)
        named = {agent: actions[i] for i, agent in enumerate(self.env.agents)}
        _, new, _, _, _ = self.env.step_env(sub, state, named)
        before, after = state.state, new.state
        enemy_max = self.smax.unit_type_health[after.unit_types[self.a :]]
        damage = jnp.sum((before.unit_health[self.a :] - after.unit_health[self.a :]) / enemy_max) / n_enemies
        allies_dead = ~jnp.any(after.unit_alive[: self.a])
        enemies_dead = ~jnp.any(after.unit_alive[self.a :])
        won = enemies_dead & ~allies_dead
        finished = allies_dead | enemies_dead | (after.step >= self.args.episode_limit)
        reward = damage + self.args.won_battle_bonus * won
        # An episode that ended earlier stays frozen and pays nothing until the next reset.
        new = jax.tree.map(lambda old, fresh: jnp.where(done, old, fresh), state, new)
        return new, key, jnp.where(done, 0.0, reward), finished | done

    def _step(self, batch_state: dict, actions: jax.Array, table: dict[str, Any],
              autoreset: jax.Array) -> tuple[dict, dict]:
        """One batched step; with `autoreset` (a traced bool: one program serves both modes),
        envs that were done start a new battle instead, drawn from their own keys."""
        states, keys, done = batch_state["env"], batch_state["key"], batch_state["done"]
        new, keys, reward, finished = jax.vmap(self._step_one)(keys, states, actions, done, batch_state["n_enemies"])
        inner = new.state
        # The outcome of a finished episode is a property of its frozen final state.
        enemies_dead = ~jnp.any(inner.unit_alive[:, self.a :], axis=1)
        allies_dead = ~jnp.any(inner.unit_alive[:, : self.a], axis=1)
        won = finished & enemies_dead & ~allies_dead
        terminated = finished & (enemies_dead | allies_dead)
        new_state = {**batch_state, "env": new, "key": keys, "done": finished}
        restart = done & autoreset
        # A real branch (outside the vmap): steps where no env restarts draw no battles.
        new_state = jax.lax.cond(restart.any(), self._restart, lambda s, _r, _t: s, new_state, restart, table)
        fresh = ~restart
        out = jax.vmap(self._outputs)(new_state["env"].state, new_state["comp"], jnp.where(fresh, reward, 0.0),
                                      finished & fresh, terminated & fresh, won & fresh)
        return new_state, out

    def _restart(self, batch_state: dict, restart: jax.Array, table: dict[str, Any]) -> dict:
        """`batch_state` with a new battle in every env where `restart` ([B] bool) holds, each
        drawn from the env's own key. Battles are drawn for `RESTART_CHUNK` envs at a time
        (usually one chunk: few envs end at once), not for the whole batch."""
        batch = restart.shape[0]
        split = jax.vmap(jax.random.split)(batch_state["key"])  # [B, 2, key]
        keys, battle_keys = split[:, 0], split[:, 1]

        def draw(carry: tuple[jax.Array, Any, jax.Array]) -> tuple[jax.Array, Any, jax.Array]:
            waiting, envs, comps = carry
            # The next chunk of waiting envs; unused places hold `batch`, dropped by the scatters.
            rows = jnp.nonzero(waiting, size=RESTART_CHUNK, fill_value=batch)[0]
            chunk_keys = battle_keys[jnp.minimum(rows, batch - 1)]
            battles, drawn = jax.vmap(self._new_battle, in_axes=(0, None, None))(chunk_keys, table, jnp.int32(-1))
            envs = jax.tree.map(lambda old, new: old.at[rows].set(new, mode="drop"), envs, battles)
            return waiting.at[rows].set(False, mode="drop"), envs, comps.at[rows].set(drawn, mode="drop")

        _, envs, comps = jax.lax.while_loop(lambda carry: carry[0].any(), draw,
                                            (restart, batch_state["env"], batch_state["comp"]))
        return {
            **batch_state,
            "env": envs,
            "key": jnp.where(restart[:, None], keys, batch_state["key"]),
            "comp": comps,
            "n_enemies": table["enemies"][comps],
            "done": batch_state["done"] & ~restart,
        }
