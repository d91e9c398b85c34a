"""PettingZoo SISL multiwalker as an entity-list backend (continuous control, 2 to 5 walkers).

Each walker applies four torques (hips and knees), actions in [-1, 1] (the env's own bounds).
Its 31-number observation (`[own state (24: hull, joints, legs' contacts, 10 lidar) | left
neighbour rel x, y | right neighbour rel x, y | package rel x, y | package angle]`) becomes
four entity rows with the same features for any team size:

    [kind one-hot (self, neighbour, package) | rel_x rel_y | package angle | own state (24)]

- row 0, the walker itself: its 24 own-state numbers (rel and angle zero);
- rows 1 and 2, the left and right neighbours: relative position (masked off at the ends
  of the line, where there is no neighbour on that side);
- row 3, the package: relative position and angle.

Relative positions are the env's noisy readings, in units of the package length (which grows
with the team). The global state lists the walkers in slot order, each as its own state, its
package-relative position and the package angle (27 numbers).

Team reward: PettingZoo's shared reward (`shared_reward=True`), i.e. the mean over walkers
of their individual rewards (package progress x forward_reward, head-angle shaping, fall and
termination penalties). The mean keeps the scale independent of the team size (the progress
term is the same for every walker). An episode terminates when a walker falls, the package
falls or leaves the terrain on the left, or crosses the finish on the right; it is truncated
at `max_cycles` (PettingZoo reports that as termination too: the backend tells them apart
from the walkers' own end flags). `won`: the package crossed the finish line.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.api import EnvSpec
from harness.registry import register_env
from scenarios.pettingzoo_generic import ParallelEnvBackend, Slot, quiet_import
from scenarios.python_batch import Frame

OWN = 24  # the walker's own state in the env's observation
KINDS = 3  # self, neighbour, package
REL = slice(KINDS, KINDS + 2)
ANGLE = KINDS + 2
OWN_AT = slice(KINDS + 3, KINDS + 3 + OWN)
FEATURES = KINDS + 3 + OWN
ENTITIES = 4  # self, left neighbour, right neighbour, package
STATE_FEATURES = OWN + 3
MODULE = "pettingzoo.sisl.multiwalker.multiwalker"  # multiwalker_v9 without its deprecation warning


class MultiwalkerArgs(BaseModel):
    """`args:` of a multiwalker task (PettingZoo's defaults)."""

    model_config = ConfigDict(extra="forbid")

    max_cycles: int = Field(default=500, ge=1, le=100_000, description="episode length limit in env steps")
    terrain_length: int = Field(default=200, ge=100, le=10_000, description="terrain length in terrain steps")
    position_noise: float = Field(default=1e-3, ge=0, description="noise on neighbour and package positions")
    angle_noise: float = Field(default=1e-3, ge=0, description="noise on the package angle")
    forward_reward: float = Field(default=1.0, description="reward per unit of package progress")
    fall_reward: float = Field(default=-10.0, description="reward of a walker that falls")
    terminate_reward: float = Field(
        default=-100.0, description="reward when the package falls or a walker falls"
    )


class MultiwalkerComposition(BaseModel):
    """A line of n_walkers walkers carrying one package."""

    model_config = ConfigDict(extra="forbid")

    n_walkers: int = Field(default=3, ge=2, le=5, description="walkers carrying the package (2 to 5)")


def walker_entities(raw: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, 31] observations -> entity rows [n, 4, F] and their mask [n, 4] (module docstring)."""
    n = len(raw)
    rows = np.zeros((n, ENTITIES, FEATURES), dtype=np.float32)
    rows[:, 0, 0] = 1
    rows[:, 0, OWN_AT] = raw[:, :OWN]
    for e, at in ((1, OWN), (2, OWN + 2)):  # left and right neighbours
        rows[:, e, 1] = 1
        rows[:, e, REL] = raw[:, at : at + 2]
    rows[:, 3, 2] = 1
    rows[:, 3, REL] = raw[:, OWN + 4 : OWN + 6]
    rows[:, 3, ANGLE] = raw[:, OWN + 6]
    left = np.concatenate([[False], alive[:-1]])
    right = np.concatenate([alive[1:], [False]])
    mask = np.stack([alive, alive & left, alive & right, alive], axis=1)
    rows[~mask] = 0  # nothing of an absent entity leaks into the features
    return rows, mask


@register_env("multiwalker")
class MultiwalkerBackend(ParallelEnvBackend):
    """PettingZoo SISL multiwalker: 2 to 5 walkers carry a package (continuous torques)."""

    Args = MultiwalkerArgs
    Composition = MultiwalkerComposition
    requires: ClassVar[tuple[str, str]] = (MODULE, "PettingZoo's SISL environments (pettingzoo[sisl], Box2D)")
    raw_loop_label = "PettingZoo multiwalker parallel_env loop"

    @classmethod
    def default_compositions(cls, args: MultiwalkerArgs) -> list[MultiwalkerComposition]:
        return [MultiwalkerComposition()]

    @classmethod
    def composition_name(cls, args: MultiwalkerArgs, composition: MultiwalkerComposition) -> str:
        return f"{composition.n_walkers} walkers"

    @classmethod
    def describe(cls, args: MultiwalkerArgs, compositions: list[MultiwalkerComposition]) -> EnvSpec:
        walkers = max(c.n_walkers for c in compositions)
        return EnvSpec(
            obs_features=FEATURES,
            state_features=STATE_FEATURES,
            n_actions=4,
            max_agents=walkers,
            max_entities=ENTITIES,
            max_state_entities=walkers,
            episode_limit=args.max_cycles,
            discrete=False,
        )

    def build(self, composition_index: int) -> Any:
        # terminate_on_fall stays at PettingZoo's default (True): without it PettingZoo charges a
        # fallen walker's penalty again at every later step, which the shared reward would carry.
        return quiet_import(MODULE).parallel_env(
            n_walkers=self.compositions[composition_index].n_walkers,
            shared_reward=True,
            terminate_on_fall=True,
            **self.args.model_dump(),
        )

    def reward_mode(self) -> str:
        return "mean"  # with shared_reward every walker already gets the mean: keep it

    def parse(self, slot: Slot, composition_index: int) -> Frame:
        n = len(slot.team)
        raw = np.zeros((n, OWN + 7), dtype=np.float32)
        for i, name in enumerate(slot.team):
            if slot.alive[i] and name in slot.obs:
                raw[i] = slot.obs[name]
        obs, mask = walker_entities(raw, slot.alive)
        state = np.concatenate([raw[:, :OWN], raw[:, OWN + 4 :]], axis=1)
        state[~slot.alive] = 0
        return Frame(
            obs=obs,
            obs_mask=mask,
            state=state,
            state_mask=slot.alive.copy(),
            avail_actions=np.ones((n, 4), dtype=bool),
            agent_mask=slot.alive.copy(),
        )

    def _base(self, slot: Slot) -> Any:
        return slot.env.unwrapped.env  # PettingZoo's MultiWalkerEnv under the AEC wrapper

    def episode_end(
        self, slot: Slot, terminations: dict[str, bool], truncations: dict[str, bool]
    ) -> tuple[bool, bool]:
        if slot.env.agents and slot.alive.any():
            return False, False
        # PettingZoo reports the max_cycles limit as termination; the walkers' own end flags
        # (a fall, the package down or off an edge) say whether the task really ended.
        by_rules = bool(np.all(list(self._base(slot).last_dones)))
        return by_rules or slot.t < self.args.max_cycles, not by_rules and slot.t >= self.args.max_cycles

    def success(self, slot: Slot, composition_index: int, terminated: bool) -> bool:
        from pettingzoo.sisl.multiwalker.multiwalker_base import TERRAIN_GRASS, TERRAIN_STEP

        finish = (self.args.terrain_length - TERRAIN_GRASS) * TERRAIN_STEP  # where the env ends with success
        package = self._base(slot).package
        return bool(terminated and package is not None and package.position.x > finish)
