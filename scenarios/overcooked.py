"""Overcooked-AI (Carroll et al., 2019) as a batched entity backend.

Two cooks share a kitchen: fetch three onions into a pot, start it cooking (interact with
empty hands), fetch a dish, pick up the finished soup and deliver it; every delivered
onion soup pays 20 (the sparse reward). A composition is a layout plus who plays the second
cook: `self` (both cooks are learners, 2 agents), or a partner outside the learning team
(`random`, `stay`, or `checkpoint`: a policy trained earlier by this harness), which leaves
a learning team of one agent. `player` chooses which cook (0 or 1) the first learner
controls; the layouts are asymmetric.

Observation of an agent: one entity row per player (own row first), pot, dispenser,
serving location and item lying on a counter, all with the same `F` features whatever the
layout, so one network runs on held-out layouts (column groups, in order):

    type         7  one-hot: player, pot, onion/tomato/dish dispenser, serving, item
    pos          2  x, y relative to the observer, divided by the layout's width, height
    self         1  1 on the observer's own row
    orientation  4  players: north, south, east, west
    item         4  held item (players) or the item itself (items): onion, tomato, dish, soup
    soup         5  pots and soups: onions / 3, tomatoes / 3, cooking, ready, cooking progress
    time         1  players: elapsed fraction of the episode
    size         2  players: layout width, height / 10 (to undo the position scaling)
    terrain     24  players: 5x5 window around the player, 1 = not walkable (centre left out)

Items on counters are capped at `max_items` entities (the nearest to the observer when
more lie around; masked padding when fewer). The state lists the same entities with
absolute positions: the learners' cooks first in slot order (the mixers rely on that), then
the partner's cook, then the rest.

Reward: the sparse reward summed over both cooks, plus, on training instances only, the
library's shaped reward (onion into pot 3, useful dish pickup 3, soup pickup 5) times a
factor decaying linearly from 1 to 0 over `shaped_reward_horizon` env steps taken by that
instance (checkpointed with its random state). `won` = at least `win_soups` soups delivered
in the episode (default 1), so `win_rate` is the fraction of episodes that served a soup;
soups delivered = sparse return / 20 on these layouts. The game lasts exactly `horizon`
steps by its rules and the time is observed, so the last step is `terminated` (the value
after the end is truly zero), not a truncation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.api import EnvSpec, Loop, Step
from harness.errors import ConfigError, closest
from harness.registry import register_env
from scenarios.python_batch import Frame, Outcome, PythonBatchBackend

INSTALL_HINT = "backend overcooked needs overcooked-ai: pip install -e '.[overcooked]' -c constraints.txt"

# Friendly name -> overcooked-ai layout file. The paper's counter circuit (onions only) is
# `counter_circuit_o_1order` in release 1.x; its `counter_circuit` has tomato recipes.
LAYOUTS = {
    "cramped_room": "cramped_room",
    "asymmetric_advantages": "asymmetric_advantages",
    "coordination_ring": "coordination_ring",
    "forced_coordination": "forced_coordination",
    "counter_circuit": "counter_circuit_o_1order",
}

# ---------------------------------------------------------------------------------------------
# Importing overcooked-ai (lazily: the harness imports every scenarios module at startup)


@contextlib.contextmanager
def _without_gym_notice() -> Iterator[None]:
    """overcooked_ai_py's __init__ imports gym only to register an env id, and gym prints a
    notice that it does not support NumPy 2; we never use gym, so that notice is dropped and
    anything else printed during the import is passed on."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        text = captured.getvalue()
        if text and "Gym has been unmaintained" not in text:
            sys.stderr.write(text)


@functools.cache
def _overcooked() -> SimpleNamespace:
    """The overcooked-ai names this backend uses; ImportError (with the install hint) if absent."""
    # overcooked-ai 1.1.0 uses `np.Inf` (at import time in overcooked_env, inside functions in
    # the planners), which NumPy 2 removed; restore the alias rather than fork the package.
    if "Inf" not in np.__dict__:
        np.Inf = np.inf  # type: ignore[attr-defined]
    try:
        with _without_gym_notice():
            from overcooked_ai_py.mdp.actions import Action, Direction
            from overcooked_ai_py.mdp.overcooked_mdp import OvercookedGridworld
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return SimpleNamespace(Action=Action, Direction=Direction, OvercookedGridworld=OvercookedGridworld)


# ---------------------------------------------------------------------------------------------
# Entity features (see the module docstring)

ENTITY_TYPES = ("player", "pot", "onion_dispenser", "tomato_dispenser", "dish_dispenser", "serving", "item")
TERRAIN_TYPES = {"P": "pot", "O": "onion_dispenser", "T": "tomato_dispenser", "D": "dish_dispenser", "S": "serving"}
ITEMS = ("onion", "tomato", "dish", "soup")
WINDOW = 2  # terrain window radius: 5x5 cells around the player
SIZE_SCALE = 10.0  # the five layouts are at most 9 cells wide
N_ACTIONS = 6  # north, south, east, west, stay, interact (overcooked-ai's action order)
STAY = 4


def _column_groups(*groups: tuple[str, int]) -> tuple[dict[str, int], int]:
    starts, offset = {}, 0
    for name, width in groups:
        starts[name] = offset
        offset += width
    return starts, offset


COL, FEATURES = _column_groups(
    ("type", len(ENTITY_TYPES)), ("pos", 2), ("self", 1), ("orientation", 4), ("item", len(ITEMS)),
    ("soup", 5), ("time", 1), ("size", 2), ("terrain", (2 * WINDOW + 1) ** 2 - 1),
)
POS = slice(COL["pos"], COL["pos"] + 2)
TERRAIN = slice(COL["terrain"], FEATURES)
TYPE_INDEX = {t: COL["type"] + i for i, t in enumerate(ENTITY_TYPES)}
ITEM_INDEX = {t: COL["item"] + i for i, t in enumerate(ITEMS)}


@dataclass(frozen=True)
class Layout:
    """A layout's MDP and everything about it that does not change during an episode."""

    name: str
    mdp: Any  # OvercookedGridworld (holds no episode state, so games share it)
    width: int
    height: int
    n_fixed: int  # fixed entities: pots, then dispensers and serving locations
    pot_rows: dict[tuple[int, int], int]  # pot position -> its index among the fixed entities
    windows: np.ndarray  # [H, W, 24] terrain window around every cell
    template: np.ndarray  # [2 + n_fixed, F]: the cooks' constant features, then the fixed rows (absolute)
    orders: np.ndarray  # [2, 2 + n_fixed]: row p lists cook p, the other cook, the fixed entities

    def entities(self, max_items: int) -> int:
        return 2 + self.n_fixed + max_items


def _terrain_windows(terrain: np.ndarray) -> np.ndarray:
    """[H, W, 24]: for each cell, which cells of the 5x5 window around it are not walkable."""
    h, w = terrain.shape
    blocked = np.pad(terrain != " ", WINDOW, constant_values=True)  # outside the grid: blocked
    size = 2 * WINDOW + 1
    keep = np.arange(size * size) != size * size // 2  # the centre is the player's own cell
    out = np.zeros((h, w, int(keep.sum())), np.float32)
    for y in range(h):
        for x in range(w):
            out[y, x] = blocked[y : y + size, x : x + size].reshape(-1)[keep]
    return out


def _fixed_rows(terrain: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    h, w = terrain.shape
    cells = [(TERRAIN_TYPES[terrain[y, x]], x, y) for y in range(h) for x in range(w) if terrain[y, x] in TERRAIN_TYPES]
    cells.sort(key=lambda c: (ENTITY_TYPES.index(c[0]), c[2], c[1]))  # pots first, then by kind
    rows = np.zeros((len(cells), FEATURES), np.float32)
    for row, (kind, x, y) in zip(rows, cells, strict=True):
        row[TYPE_INDEX[kind]] = 1.0
        row[POS] = (x / w, y / h)
    pots = {(x, y): i for i, (kind, x, y) in enumerate(cells) if kind == "pot"}
    return rows, pots


@functools.cache
def load_layout(name: str) -> Layout:
    # overcooked-ai keeps recipe settings (soup value and cook time) in class-level state that
    # each gridworld sets; the five layouts all use the defaults (onion soup: 20 points, 20 ticks).
    oc = _overcooked()
    mdp = oc.OvercookedGridworld.from_layout_name(LAYOUTS[name])
    terrain = np.array(mdp.terrain_mtx)
    rows, pots = _fixed_rows(terrain)
    n = len(rows)
    orders = np.array([[0, 1, *range(2, 2 + n)], [1, 0, *range(2, 2 + n)]], np.int64)
    template = np.concatenate((np.zeros((2, FEATURES), np.float32), rows))
    template[:2, TYPE_INDEX["player"]] = 1.0
    template[:2, COL["size"] : COL["size"] + 2] = (mdp.width / SIZE_SCALE, mdp.height / SIZE_SCALE)
    return Layout(name, mdp, mdp.width, mdp.height, n, pots, _terrain_windows(terrain), template, orders)


def _row_major(pos: tuple[int, int]) -> tuple[int, int]:
    return pos[1], pos[0]


def _fill_soup(row: np.ndarray, soup: Any) -> None:
    ingredients = soup.ingredients
    s = COL["soup"]
    row[s] = ingredients.count("onion") / 3.0
    row[s + 1] = ingredients.count("tomato") / 3.0
    if not soup.is_idle:  # an idle soup has no recipe yet, hence no cook time
        row[s + 2] = float(soup.is_cooking)
        row[s + 3] = float(soup.is_ready)
        row[s + 4] = 1.0 - soup.cook_time_remaining / max(soup.cook_time, 1)


def _fill_item(row: np.ndarray, obj: Any) -> None:
    row[ITEM_INDEX[obj.name]] = 1.0
    if obj.name == "soup":
        _fill_soup(row, obj)


# ---------------------------------------------------------------------------------------------
# Configuration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OvercookedArgs(Strict):
    """`args:` of an overcooked task."""

    horizon: int = Field(400, ge=1, le=100_000, description="steps per episode (400 in the Overcooked-AI paper)")
    shaped_reward: bool = Field(True, description="add the annealed shaped reward on training instances")
    shaped_reward_horizon: int = Field(
        1_000_000, ge=1, le=10**10, description="training env steps over which the shaped-reward factor decays from 1 to 0"
    )
    max_items: int = Field(8, ge=0, le=64, description="items lying on counters shown as entities (nearest first)")
    win_soups: int = Field(1, ge=1, le=1000, description="soups an episode must deliver to count as won")


PARTNER_KINDS = ("self", "random", "stay", "checkpoint")


class Partner(Strict):
    """Who plays the second cook. `self`: a learner too; `random`: uniform random actions;
    `stay`: never moves; `checkpoint`: a policy trained earlier by this harness, acting greedily.
    (One model rather than a union, so a typo is reported against every valid key.)"""

    kind: Literal["self", "random", "stay", "checkpoint"] = "self"
    algorithm: str | None = Field(default=None, description="checkpoint: the algorithm that trained it (e.g. qmix)")
    path: str | None = Field(default=None, description="checkpoint: the file (e.g. runs/checkpoints/SUITE/RUN_ID/best.pt)")
    params: dict[str, Any] = Field(default_factory=dict, description="checkpoint: config overrides it was trained with")

    @model_validator(mode="after")
    def _checkpoint_fields(self) -> Partner:
        if self.kind == "checkpoint":
            missing = [k for k in ("algorithm", "path") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a checkpoint partner needs {' and '.join(missing)}")
        elif self.algorithm is not None or self.path is not None or self.params:
            raise ValueError(f"algorithm, path and params belong to kind: checkpoint, not kind: {self.kind}")
        return self


class OvercookedComposition(Strict):
    """A layout and who plays the second cook: `partner: random` or `{kind: checkpoint, ...}`."""

    layout: str = Field(description=f"one of {', '.join(LAYOUTS)}")
    partner: Partner = Field(default_factory=Partner)
    player: Literal[0, 1] = Field(0, description="the cook (0 or 1) the first learner controls")

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, v: str) -> str:
        if v not in LAYOUTS:
            guess = closest(v, LAYOUTS)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            raise ValueError(f"expected one of {', '.join(LAYOUTS)}{hint}")
        return v

    @field_validator("partner", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v  # `partner: random` = {kind: random}

    @property
    def learners(self) -> list[int]:
        """The cook each learner slot controls, in slot order."""
        return [self.player, 1 - self.player] if self.partner.kind == "self" else [self.player]

    @property
    def partner_player(self) -> int | None:
        return None if self.partner.kind == "self" else 1 - self.player


# ---------------------------------------------------------------------------------------------
# Checkpoint partners

def _check_checkpoint_partner(partner: Partner, where: tuple[str | int, ...]) -> Any:
    """The algorithm class, after checking the name, the params and that the file exists."""
    from harness import registry

    assert partner.algorithm is not None and partner.path is not None  # Partner's validator ensures both

    cls = registry.get_algorithm(partner.algorithm, where + ("algorithm",))
    known = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = [k for k in partner.params if k not in known]
    if unknown:
        raise ConfigError.single(where + ("params", unknown[0]), f"unknown parameter of {partner.algorithm}; "
                                 f"expected one of {', '.join(known)}", found=unknown[0], choices=known)
    if not Path(partner.path).is_file():  # relative paths are read from the working directory
        raise ConfigError.single(where + ("path",), "checkpoint file not found", found=partner.path)
    return cls


@functools.lru_cache(maxsize=16)
def _load_partner(algorithm: str, path: str, params_json: str, mtime_ns: int, spec: EnvSpec) -> Any:
    """Build the algorithm on `spec` and load the checkpoint's weights (cached: evaluation
    builds one backend per composition, and the file does not change between them)."""
    from harness.policies import policy_from_checkpoint  # imports torch: not at startup

    partner = Partner(kind="checkpoint", algorithm=algorithm, path=path, params=json.loads(params_json))
    cls = _check_checkpoint_partner(partner, ("partner",))
    try:
        algo = policy_from_checkpoint(cls, path, spec, partner.params)
    except Exception as exc:
        raise ConfigError.single(
            ("partner", "path"), f"cannot load this checkpoint into {algorithm} built with params {partner.params} "
            f"(were other params used to train it?): {type(exc).__name__}: {str(exc)[:300]}", found=path,
        ) from None
    return algo


def load_partner(partner: Partner, spec: EnvSpec) -> Any:
    """The partner's algorithm, ready to `act`. Buffers are sized by `episode_limit`, which a
    partner never needs, so it is built with a one-step limit (weights do not depend on it)."""
    _check_checkpoint_partner(partner, ("partner",))
    assert partner.path is not None  # the check above refuses a checkpoint partner without one
    resolved = Path(partner.path).resolve()
    return _load_partner(partner.algorithm, str(resolved), json.dumps(partner.params, sort_keys=True),
                         resolved.stat().st_mtime_ns, dataclasses.replace(spec, episode_limit=1))


# ---------------------------------------------------------------------------------------------
# One game


class Game:
    """One kitchen of one composition: the MDP state, the partner, and the entity encoding."""

    def __init__(self, layout: Layout, composition: OvercookedComposition, args: OvercookedArgs) -> None:
        oc = _overcooked()
        self.layout, self.args = layout, args
        self.learners = composition.learners
        self.partner = composition.partner_player
        self.partner_kind = composition.partner.kind
        self.actions = oc.Action.INDEX_TO_ACTION
        self.directions = {d: i for i, d in enumerate(oc.Direction.ALL_DIRECTIONS)}
        self.state: Any = None
        self.rng = np.random.default_rng(0)
        self.soups = 0
        self.partner_action = STAY  # set by the backend before each step of a checkpoint partner
        self.partner_view: tuple[np.ndarray, np.ndarray] | None = None  # (obs [e, F], state [n, G])
        self._masks: dict[tuple[int, ...], np.ndarray] = {}

    def reset(self, seed: int) -> Frame:
        self.rng = np.random.default_rng(seed)
        self.state = self.layout.mdp.get_standard_start_state()
        self.soups = 0
        return self.frame()

    def _partner_index(self) -> int:
        if self.partner_kind == "random":
            return int(self.rng.integers(N_ACTIONS))
        return self.partner_action if self.partner_kind == "checkpoint" else STAY

    def step(self, actions: np.ndarray, shaping: float) -> Outcome:
        joint = [self.actions[STAY]] * 2
        for slot, player in enumerate(self.learners):
            joint[player] = self.actions[int(actions[slot])]
        if self.partner is not None:
            joint[self.partner] = self.actions[self._partner_index()]
        self.state, info = self.layout.mdp.get_state_transition(self.state, joint)
        # Count deliveries that paid: overcooked-ai also logs delivering a soup no order values
        # (e.g. one onion cooked alone), which must not count as a served soup.
        self.soups += sum(r > 0 for r in info["sparse_reward_by_agent"])
        reward = sum(info["sparse_reward_by_agent"])
        if shaping > 0.0:
            reward += shaping * sum(info["shaped_reward_by_agent"])
        over = self.state.timestep >= self.args.horizon
        return Outcome(self.frame(), float(reward), terminated=over, truncated=False, won=self.soups >= self.args.win_soups)

    # ---- encoding --------------------------------------------------------------------------
    def table(self) -> np.ndarray:
        """Every entity with absolute positions: both cooks (by index), fixed entities, all items."""
        lay, state = self.layout, self.state
        # Items in grid order (row by row), so the encoding does not depend on the drop order.
        items = [state.objects[pos] for pos in sorted(state.objects, key=_row_major) if pos not in lay.pot_rows]
        base = 2 + lay.n_fixed
        rows = np.zeros((base + len(items), FEATURES), np.float32)
        rows[:base] = lay.template
        t = state.timestep / self.args.horizon
        for row, player in zip(rows[:2], state.players, strict=True):
            self._fill_player(row, player, t)
        for pos, i in lay.pot_rows.items():
            soup = state.objects.get(pos)
            if soup is not None:
                _fill_soup(rows[2 + i], soup)
        for row, obj in zip(rows[base:], items, strict=True):
            x, y = obj.position
            row[TYPE_INDEX["item"]] = 1.0
            row[POS] = (x / lay.width, y / lay.height)
            _fill_item(row, obj)
        return rows

    def _fill_player(self, row: np.ndarray, player: Any, t: float) -> None:
        lay = self.layout
        x, y = player.position
        row[POS] = (x / lay.width, y / lay.height)
        row[COL["orientation"] + self.directions[player.orientation]] = 1.0
        if player.held_object is not None:
            _fill_item(row, player.held_object)
        row[COL["time"]] = t
        row[TERRAIN] = lay.windows[y, x]

    def _orders(self, rows: np.ndarray, cooks: list[int], nearest: bool) -> np.ndarray:
        """[len(cooks), e] row indices of each cook's entity list: that cook first, the other cook,
        the fixed entities, then the items: all of them, or `max_items` of them (the nearest to
        the cook for observations, the first in grid order (row by row) for the state)."""
        first = 2 + self.layout.n_fixed
        n_items, cap = rows.shape[0] - first, self.args.max_items
        out = np.empty((len(cooks), first + min(n_items, cap)), np.int64)
        out[:, :first] = self.layout.orders[cooks]
        if n_items <= cap or not nearest:
            out[:, first:] = np.arange(first, out.shape[1])
        else:
            items = np.arange(first, rows.shape[0])
            scale = np.array([self.layout.width, self.layout.height], np.float32)
            dist = (np.abs(rows[None, items, POS] - rows[cooks, None, POS]) * scale).sum(-1)  # [cooks, items]
            out[:, first:] = items[np.argsort(dist, axis=1, kind="stable")[:, :cap]]
        return out

    def views(self, rows: np.ndarray, cooks: list[int]) -> np.ndarray:
        """Each cook's observation [len(cooks), e, F]: own row first, positions relative to it."""
        out = rows[self._orders(rows, cooks, nearest=True)]
        out[:, :, POS] -= rows[cooks, None, POS]
        out[:, 0, COL["self"]] = 1.0
        return out

    def global_state(self, rows: np.ndarray, first: int) -> np.ndarray:
        """Absolute rows: cook `first`, the other cook, the fixed entities, the items."""
        return rows[self._orders(rows, [first], nearest=False)[0]]

    def frame(self) -> Frame:
        rows = self.table()
        obs = self.views(rows, self.learners)
        state = self.global_state(rows, self.learners[0])  # learners first: the other cook is next
        if self.partner_kind == "checkpoint":
            assert self.partner is not None
            self.partner_view = (self.views(rows, [self.partner])[0], self.global_state(rows, self.partner))
        a, e = obs.shape[:2]
        return Frame(obs=obs, obs_mask=self._ones(a, e), state=state, state_mask=self._ones(e),
                     avail_actions=self._ones(a, N_ACTIONS), agent_mask=self._ones(a))

    def _ones(self, *shape: int) -> np.ndarray:
        """All-True masks, shared between frames (the batch only copies them into its arrays)."""
        if shape not in self._masks:
            self._masks[shape] = np.ones(shape, bool)
        return self._masks[shape]


# ---------------------------------------------------------------------------------------------
# The backend


@register_env("overcooked")
class OvercookedBackend(PythonBatchBackend):
    Args = OvercookedArgs
    Composition = OvercookedComposition
    raw_loop_label = "overcooked-ai OvercookedEnv loop"

    # ---- class-level contract ---------------------------------------------------------------
    @classmethod
    def raw_loop(cls, args: OvercookedArgs, composition: OvercookedComposition, num_envs: int,
                 **options: Any) -> Loop:
        return OvercookedLoop(composition.layout, args.horizon, num_envs)

    @classmethod
    def missing_requirements(cls, args: Any) -> str | None:
        try:
            _overcooked()
        except ImportError:
            return INSTALL_HINT
        return None

    @classmethod
    def default_compositions(cls, args: OvercookedArgs) -> list[OvercookedComposition]:
        raise ConfigError.single(
            ("train",), f"declare the train compositions, e.g. [{{layout: cramped_room}}]; layouts: {', '.join(LAYOUTS)}"
        )

    @classmethod
    def check_task(cls, args: OvercookedArgs, splits: dict[str, list[OvercookedComposition]]) -> None:
        for split, comps in splits.items():
            for i, comp in enumerate(comps):
                if comp.partner.kind == "checkpoint":
                    _check_checkpoint_partner(comp.partner, (split, i, "partner"))

    @classmethod
    def describe(cls, args: OvercookedArgs, compositions: list[OvercookedComposition]) -> EnvSpec:
        entities = max(load_layout(c.layout).entities(args.max_items) for c in compositions)
        return EnvSpec(
            obs_features=FEATURES,
            state_features=FEATURES,
            n_actions=N_ACTIONS,
            max_agents=max(len(c.learners) for c in compositions),
            max_entities=entities,
            max_state_entities=entities,
            episode_limit=args.horizon,
        )

    @classmethod
    def composition_name(cls, args: OvercookedArgs, composition: OvercookedComposition) -> str:
        partner = composition.partner
        name = composition.layout
        if partner.kind == "checkpoint" and partner.path is not None:
            path = Path(partner.path)
            name += f"+{partner.algorithm}:{path.parent.name + '/' if path.parent.name else ''}{path.name}"
        elif partner.kind != "self":
            name += f"+{partner.kind}"
        return name + ("@p1" if composition.player == 1 else "")

    # ---- instances --------------------------------------------------------------------------
    def __init__(self, args: OvercookedArgs, compositions: list[OvercookedComposition], num_envs: int, seed: int,
                 weights: list[float] | None = None, training: bool = False) -> None:
        super().__init__(args, compositions, num_envs, seed, weights, training)
        self.shaping_steps = 0  # env steps taken by this (training) instance, for the annealing
        self.partners = {
            c: load_partner(comp.partner, self.spec)
            for c, comp in enumerate(compositions) if comp.partner.kind == "checkpoint"
        }
        self.partner_memory: dict[int, Any] = {}
        self._shaping = 0.0

    def make_env(self, composition_index: int) -> Game:
        comp = self.compositions[composition_index]
        return Game(load_layout(comp.layout), comp, self.args)

    def reset_env(self, env: Game, composition_index: int, seed: int) -> Frame:
        return env.reset(seed)

    def step_env(self, env: Game, composition_index: int, actions: np.ndarray) -> Outcome:
        return env.step(actions, self._shaping)

    def shaping_factor(self) -> float:
        """Weight of the shaped reward now: 1 -> 0 linearly on training instances, else 0."""
        if not (self.training and self.args.shaped_reward):
            return 0.0
        return max(0.0, 1.0 - self.shaping_steps / self.args.shaped_reward_horizon)

    def reset(self, seed: int | None = None) -> Step:
        self.partner_memory.clear()  # recurrent partners start every episode afresh
        return super().reset(seed)

    def reset_slots(self, slots: np.ndarray) -> None:
        super().reset_slots(slots)
        from harness.policies import reset_memory_rows  # imports torch: not at startup

        # Auto-reset: the partners of the slots starting over start afresh too.
        self.partner_memory = {c: reset_memory_rows(m, slots) for c, m in self.partner_memory.items()}

    def step(self, actions: np.ndarray) -> Step:
        actions = np.asarray(actions)
        expected = (self.num_envs, self.spec.max_agents)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected}, got {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= N_ACTIONS):
            raise ValueError(f"actions must lie in [0, {N_ACTIONS}), got {actions.min()}..{actions.max()}")
        active = int((~self.finished).sum())
        self._shaping = self.shaping_factor()  # one factor for the whole batched step
        self._act_partners()
        out = super().step(actions)
        if self.training:
            self.shaping_steps += active
        return out

    # ---- checkpoint partners: one batched forward pass per partner and step ------------------
    def _act_partners(self) -> None:
        for c, algorithm in self.partners.items():
            playing = (self.comp == c) & ~self.finished
            if not playing.any():
                continue
            actions, self.partner_memory[c] = algorithm.act(self._partner_step(playing), self.partner_memory.get(c), False)
            for b in np.flatnonzero(playing):
                self._env(int(b)).partner_action = int(actions[b, 0])

    def _partner_step(self, playing: np.ndarray) -> Step:
        """The partners' own views as a one-agent batch (agent_mask False where not playing)."""
        spec, b = self.spec, self.num_envs
        obs = np.zeros((b, 1, spec.max_entities, spec.obs_features), np.float32)
        obs_mask = np.zeros((b, 1, spec.max_entities), bool)
        state = np.zeros((b, spec.max_state_entities, spec.state_features), np.float32)
        state_mask = np.zeros((b, spec.max_state_entities), bool)
        for i in np.flatnonzero(playing):
            view = self._env(int(i)).partner_view
            assert view is not None
            own, glob = view
            obs[i, 0, : len(own)] = own
            obs_mask[i, 0, : len(own)] = True
            state[i, : len(glob)] = glob
            state_mask[i, : len(glob)] = True
        zeros = np.zeros(b, bool)
        return Step(obs=obs, obs_mask=obs_mask, state=state, state_mask=state_mask,
                    avail_actions=np.ones((b, 1, N_ACTIONS), bool), agent_mask=playing[:, None].copy(),
                    reward=np.zeros(b, np.float32), done=~playing, terminated=zeros, won=zeros,
                    composition=self.comp.copy())

    # ---- checkpoints ------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"shaping_steps": self.shaping_steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.shaping_steps = int(state.get("shaping_steps", 0))


class OvercookedLoop(Loop):
    """overcooked-ai's own OvercookedEnv, one per batch slot, random joint actions."""

    def __init__(self, layout: str, horizon: int, num_envs: int, seed: int = 0) -> None:
        names = _overcooked()  # also restores the NumPy 2 alias overcooked_env needs at import
        from overcooked_ai_py.mdp.overcooked_env import OvercookedEnv

        mdp = names.OvercookedGridworld.from_layout_name(LAYOUTS[layout])
        self.envs = [OvercookedEnv.from_mdp(mdp, horizon=horizon, info_level=0) for _ in range(num_envs)]
        self.actions = names.Action.INDEX_TO_ACTION
        self.rng = np.random.default_rng(seed)
        for env in self.envs:
            env.reset()

    def advance(self) -> int:
        picks = self.rng.integers(0, len(self.actions), size=(len(self.envs), 2))
        for env, (a, b) in zip(self.envs, picks, strict=True):
            _, _, done, _ = env.step((self.actions[a], self.actions[b]))
            if done:
                env.reset()
        return len(self.envs)
