"""mpe2's simple_spread world, vectorised over a batch of environments (numpy only).

A re-implementation of the physics and rewards of `mpe2.simple_spread_v3` for B worlds at
once, so a step costs a few dozen numpy calls whatever B is, instead of B passes through
mpe2's per-entity Python loops and PettingZoo's AEC-to-parallel wrapper. `scenarios.mpe`
builds the harness's observations on top of it; tests/test_mpe_engine.py checks it step for
step against mpe2 itself.

What it reproduces (mpe2's `World.step`, `SimpleEnv._set_action` and `simple_spread.Scenario`):
- reset: each world draws its own generator from its seed as gymnasium's `seeding.np_random`
  does (PCG64 over a SeedSequence), then uniform(-1, 1) positions, the agents' first, then
  the landmarks'; velocities start at zero;
- actions: a discrete move is a unit vector (no-op, left, right, down, up); a continuous one
  is (a[2] - a[1], a[4] - a[3]) in mpe2's [0, 1] Box; either times the sensitivity 5;
- contact: every pair of agents pushes apart with contact_force * direction * a softplus of
  the penetration (margin 1e-3, agent radius 0.15); landmarks do not collide;
- integration: position += velocity * dt, then velocity = velocity * (1 - damping) + force * dt
  (unit mass, no speed limit);
- rewards: each agent gets (1 - local_ratio) x (minus the sum over landmarks of the nearest
  agent's distance) + local_ratio x (minus the number of agents it overlaps).

Worlds may hold fewer agents than the batch's largest team: their arrays are padded, and
the padding agents and landmarks exert no force, collide with nothing, get no reward and
count for no landmark distance.
"""

from __future__ import annotations

import numpy as np

AGENT_RADIUS = 0.15
CONTACT_DISTANCE = AGENT_RADIUS + AGENT_RADIUS  # agents overlap below this centre distance
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
DT = 0.1
DAMPING = 0.25
SENSITIVITY = 5.0  # mpe2 scales every movement action by this (agents have no own `accel`)
# Discrete movement actions as unit directions: no-op, left, right, down, up.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)


def world_rng(seed: int) -> np.random.Generator:
    """The generator mpe2 draws a world from after `reset(seed=seed)` (gymnasium's seeding)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


def discrete_forces(actions: np.ndarray) -> np.ndarray:
    """[B, n, 2] control forces of discrete move indices [B, n]."""
    return MOVES[actions] * SENSITIVITY


def continuous_forces(actions: np.ndarray) -> np.ndarray:
    """[B, n, 2] control forces of continuous actions [B, n, 5] given in mpe2's [0, 1] Box.
    The differences are taken in the actions' own dtype before widening, as mpe2 does with
    the float32 arrays PettingZoo hands it."""
    push = actions[..., 2::2] - actions[..., 1::2]  # (right - left, up - down)
    return push.astype(np.float64) * SENSITIVITY


class SpreadWorlds:
    """B simple_spread worlds padded to `max_agents` agents and as many landmarks.

    `entities[b]` holds world b's agent positions (rows 0..max_agents-1) then its landmark
    positions, like mpe2's `world.entities`; `agents` and `landmarks` are views of it. After
    every reset and step, `offset[b, i, k]` is entity k's position relative to agent i (what
    mpe2's observations list) and `distance[b, i, k]` its length: contacts, rewards and the
    harness's observation rows all read them.

    Padding agents and landmarks stay at the origin, at rest: they never feel a force. So a
    padding entity's position, and an agent's offset to itself, are zeros a reader may gather.
    """

    def __init__(self, num_worlds: int, max_agents: int) -> None:
        self.num_worlds, self.max_agents = num_worlds, max_agents
        n = max_agents
        self.entities = np.zeros((num_worlds, 2 * n, 2))
        self.velocity = np.zeros((num_worlds, n, 2))
        self.present = np.zeros((num_worlds, n), dtype=bool)  # agent i (and landmark i) exists
        self.padded = False  # some world has fewer agents than max_agents
        self.offset = np.zeros((num_worlds, n, 2 * n, 2))
        self.distance = np.zeros((num_worlds, n, 2 * n))
        # Added to distances: 0, or inf where no contact or no nearest agent can come from.
        self._unpaired = np.zeros((num_worlds, n, n))  # agent pairs: itself, padding
        self._absent = np.zeros((num_worlds, n, 1))  # padding agents, for the landmarks
        self._gap = np.zeros((num_worlds, n, n))  # agents' distances, inf where unpaired

    @property
    def agents(self) -> np.ndarray:
        return self.entities[:, : self.max_agents]

    @property
    def landmarks(self) -> np.ndarray:
        return self.entities[:, self.max_agents :]

    # ---- episodes --------------------------------------------------------------------------
    def reset(self, team_sizes: np.ndarray, seeds: np.ndarray) -> None:
        """New worlds: world b has team_sizes[b] agents and landmarks, drawn from seeds[b]."""
        n = self.max_agents
        self.entities[:] = 0.0
        self.velocity[:] = 0.0
        self.present = np.arange(n) < np.asarray(team_sizes)[:, None]
        self.padded = not self.present.all()
        # One generator per world is what makes the episodes mpe2's: a loop at reset only.
        for b, (size, seed) in enumerate(zip(team_sizes.tolist(), seeds.tolist(), strict=True)):
            drawn = world_rng(seed).uniform(-1.0, 1.0, size=(2 * size, 2))
            self.entities[b, :size] = drawn[:size]
            self.entities[b, n : n + size] = drawn[size:]
        self._pair()
        self._measure()

    def restore(self, entities: np.ndarray, velocity: np.ndarray, present: np.ndarray) -> None:
        """Put back worlds saved mid-episode (`entities`, `velocity` and `present` are all the
        state there is; the rest is measured from them)."""
        self.entities, self.velocity = entities.astype(np.float64), velocity.astype(np.float64)
        self.present = present.astype(bool)
        self.padded = not self.present.all()
        self._pair()
        self._measure()

    def _pair(self) -> None:
        n = self.max_agents
        paired = self.present[:, :, None] & self.present[:, None, :] & ~np.eye(n, dtype=bool)
        self._unpaired = np.where(paired, 0.0, np.inf)
        self._absent = np.where(self.present, 0.0, np.inf)[:, :, None]

    def set_positions(self, agents: np.ndarray, landmarks: np.ndarray) -> None:
        """Place agents and landmarks ([B, max_agents, 2] each; padding rows stay at the origin)."""
        real = self.present[..., None]
        self.agents[:] = np.where(real, agents, 0.0)
        self.landmarks[:] = np.where(real, landmarks, 0.0)
        self._measure()

    def _measure(self) -> None:
        self.offset = self.entities[:, None, :, :] - self.agents[:, :, None, :]
        self.distance = np.sqrt(np.square(self.offset).sum(axis=-1))
        self._gap = self.distance[:, :, : self.max_agents] + self._unpaired

    # ---- dynamics ----------------------------------------------------------------------------
    def step(self, control: np.ndarray) -> None:
        """Advance every world by one mpe2 step under control forces [B, max_agents, 2]."""
        if self.padded:
            control = control * self.present[..., None]
        force = control + self._contact_forces()
        agents = self.agents
        agents += self.velocity * DT  # in place: `agents` is a view of `entities`
        self.velocity = self.velocity * (1.0 - DAMPING) + force * DT
        self._measure()

    def _contact_forces(self) -> np.ndarray:
        """[B, n, 2] summed pushes of every other agent (unpaired distances are inf: no push)."""
        k = CONTACT_MARGIN
        penetration = np.logaddexp(0.0, (CONTACT_DISTANCE - self._gap) / k) * k
        # offset[i, j] points from agent i to agent j; the push on i points the other way.
        toward = self.offset[:, :, : self.max_agents]
        push = -CONTACT_FORCE * toward / self._gap[..., None] * penetration[..., None]
        return push.sum(axis=2)

    # ---- rewards and success -----------------------------------------------------------------
    def rewards(self, local_ratio: float) -> np.ndarray:
        """[B, max_agents] each agent's mpe2 reward (zero for padding agents)."""
        collisions = (self._gap < CONTACT_DISTANCE).sum(axis=2)
        cover = -self.nearest_agent_distances().sum(axis=1)
        reward = cover[:, None] * (1.0 - local_ratio) - collisions * local_ratio
        return reward * self.present if self.padded else reward

    def nearest_agent_distances(self) -> np.ndarray:
        """[B, max_agents] each landmark's distance to its nearest agent (zero for padding)."""
        to_landmarks = self.distance[:, :, self.max_agents :]
        if not self.padded:
            return to_landmarks.min(axis=1)
        return (to_landmarks + self._absent).min(axis=1) * self.present

    def covered(self, radius: float) -> np.ndarray:
        """[B] whether every landmark has an agent closer than `radius`. The offsets go through
        float32 first, as they do when read from mpe2's float32 observations."""
        offset = self.offset[:, :, self.max_agents :].astype(np.float32).astype(np.float64)
        nearest = (np.sqrt(np.square(offset).sum(axis=-1)) + self._absent).min(axis=1)
        return ((nearest < radius) | ~self.present).all(axis=1)
