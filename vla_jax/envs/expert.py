"""Scripted experts for every task family: the demonstrators that write the RLDS datasets.

The expert reads the privileged `SceneState` and is closed-loop (it re-plans from the current
state every step), so injected noise makes demos vary without making them fail. Variation comes
from three knobs: per-step Gaussian action noise, a per-episode speed, and a per-episode drop
point inside the goal region.

Push tolerances (`PushTolerances`): the push expert decides when to close its fist behind the
target and when it has lost the object (open, re-approach). With tight thresholds those decisions
flip on errors of a pixel or two, which a cloned policy makes all the time: fed perceived object
positions with 0.03 table units (~2 px) of noise, the tight expert (`TIGHT_PUSH`, the strategy of
datasets written before these knobs) solved 8 % of pushes, dithering between closing and
re-approaching until time ran out. The default tolerances keep pushing through small
misalignments (the steering corrects them) and solve 100 % under the same noise
(`tests/envs/test_expert_robustness.py`), so its demos show a strategy that survives a policy's
own errors.

Recovery demonstrations (DART-style), two kinds; in both the executed action is the mistake, the
recorded label stays the expert's intended action, and the following steps show the closed-loop
expert recovering:
  * premature close (`mistake_prob` per episode): `perturb` closes the gripper once too early on
    the way to the grasp (or push) point and keeps it closed for `mistake_steps` steps; the expert
    opens and re-approaches. Without them a cloned policy has never seen a missed grasp and, after
    its first one, wanders as a fist. At k x the control rate a mistake held for k steps lasts as
    long as one default step: a single step gave the policy trained at k = 4 too few "closed and
    empty -> open" labels (0.5 % of its samples), and it spent 44-52 % of its place and pick
    steps as an empty fist (experiments/configs/tabletop_data.py:rate4).
  * push slip (`slip_prob` per push episode): a few steps into the push, the fist's motion is
    turned by `slip_angle` degrees (either side) for `slip_steps` steps, so the target slides off
    the push line or out of contact; the expert steers back or opens and re-approaches. Why: the
    quickstart policy's push rollouts drift off the target (after a perfect start its closed-fist
    moves pointed 8.5 deg from the reference object but 18 deg from the expert's aim, median),
    and then stay closed beside it, a state the demos never showed (the expert almost
    never loses the object).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_jax.envs import tabletop
from vla_jax.envs.tabletop import CONTACT_DIST, SceneState

GRASP_TOLERANCE = 0.025  # Close when this near the target centre (well inside GRASP_RADIUS).
RELEASE_TOLERANCE = 0.03


@dataclasses.dataclass(frozen=True)
class PushTolerances:
  """How forgiving the push expert's decisions are (table units; see the module docstring)."""

  close_within: float = 0.04  # Close the fist once this near the approach point behind the target.
  keep_within: float = 0.12  # Keep pushing while the target centre is within CONTACT_DIST + this
  keep_cos: float = 0.4  # and within arccos(keep_cos) of the push direction; else open, re-approach.
  depth: float = 0.05  # Aim this far inside contact distance behind the target (the push speed).

  def __post_init__(self):
    for name, high in (("close_within", CONTACT_DIST), ("keep_within", 0.5), ("depth", CONTACT_DIST)):
      if not 0 < getattr(self, name) < high:
        raise ValueError(f"push {name}={getattr(self, name)} is not valid; expected in (0, {high})")
    if not -1 < self.keep_cos < 1:
      raise ValueError(f"push keep_cos={self.keep_cos} is not valid; expected in (-1, 1)")


# The push strategy of datasets written before the tolerances were knobs (brittle, see above).
TIGHT_PUSH = PushTolerances(close_within=0.02, keep_within=0.06, keep_cos=0.85, depth=0.03)


class ScriptedExpert:
  """A noisy, closed-loop expert. Call `reset(scene)` at each episode start, then `act(scene)`."""

  def __init__(self, noise_std: float = 0.1, speed_range: tuple[float, float] = (0.7, 1.0), seed: int = 0,
               mistake_prob: float = 0.0, mistake_distance: tuple[float, float] = (0.06, 0.3),
               mistake_steps: int = 1, push: PushTolerances = PushTolerances(), slip_prob: float = 0.0,
               slip_steps: tuple[int, int] = (2, 4), slip_angle: tuple[float, float] = (40.0, 90.0),
               slip_after: tuple[int, int] = (1, 5)):
    if noise_std < 0:
      raise ValueError(f"noise_std={noise_std} is not valid; expected >= 0")
    if not 0 <= mistake_prob <= 1:
      raise ValueError(f"mistake_prob={mistake_prob} is not valid; expected in [0, 1]")
    if not 0 < mistake_distance[0] <= mistake_distance[1]:
      raise ValueError(f"mistake_distance={mistake_distance} is not valid; expected 0 < lo <= hi")
    if not (int(mistake_steps) == mistake_steps and mistake_steps >= 1):
      raise ValueError(f"mistake_steps={mistake_steps!r} is not valid; expected an integer >= 1")
    if not 0 < speed_range[0] <= speed_range[1] <= 1:
      raise ValueError(f"speed_range={speed_range} is not valid; expected 0 < lo <= hi <= 1")
    if not 0 <= slip_prob <= 1:
      raise ValueError(f"slip_prob={slip_prob} is not valid; expected in [0, 1]")
    for name, (lo, hi) in (("slip_steps", slip_steps), ("slip_after", slip_after)):
      if not (int(lo) == lo and int(hi) == hi and 1 <= lo <= hi):
        raise ValueError(f"{name}={tuple((lo, hi))} is not valid; expected integers 1 <= lo <= hi")
    if not 0 < slip_angle[0] <= slip_angle[1] <= 180:
      raise ValueError(f"slip_angle={tuple(slip_angle)} is not valid; expected degrees 0 < lo <= hi <= 180")
    self.noise_std = float(noise_std)
    self.speed_range = tuple(speed_range)
    self.mistake_prob = float(mistake_prob)
    self.mistake_distance = tuple(mistake_distance)
    self.mistake_steps = int(mistake_steps)
    self.push = push
    self.slip_prob = float(slip_prob)
    self.slip_steps, self.slip_angle, self.slip_after = tuple(slip_steps), tuple(slip_angle), tuple(slip_after)
    self.rng = np.random.default_rng(seed)
    # Separate streams: turning mistakes or slips on or off leaves the noise and speeds of every
    # demo (and the other kind of perturbation) as they are.
    self.mistake_rng = np.random.default_rng([seed, 1])
    self.slip_rng = np.random.default_rng([seed, 2])
    self.slip = None  # This episode's slip: [pushing steps before it, steps left, angle in rad].
    self.last_perturbation: str | None = None  # What the last `perturb` did: None, "close", "slip".
    self.speed = 1.0
    self.drop_point = np.zeros(2)
    self.mistake_at = None  # Distance to the grasp/push point below which the mistake happens.
    self.mistake_hold = 0  # Steps the premature close still keeps the gripper closed.

  def reset(self, scene: SceneState, seed: int | None = None) -> None:
    if seed is not None:
      self.rng = np.random.default_rng(seed)
      self.mistake_rng = np.random.default_rng([seed, 1])
      self.slip_rng = np.random.default_rng([seed, 2])
    self.mistake_at = None
    self.mistake_hold = 0
    if self.mistake_prob and self.mistake_rng.uniform() < self.mistake_prob:
      self.mistake_at = float(self.mistake_rng.uniform(*self.mistake_distance))
    self.slip = None
    if scene.family == "push" and self.slip_prob and self.slip_rng.uniform() < self.slip_prob:
      side = 1.0 if self.slip_rng.uniform() < 0.5 else -1.0
      self.slip = [int(self.slip_rng.integers(self.slip_after[0], self.slip_after[1] + 1)),
                   int(self.slip_rng.integers(self.slip_steps[0], self.slip_steps[1] + 1)),
                   side * np.radians(self.slip_rng.uniform(*self.slip_angle))]
    self.last_perturbation = None
    self.speed = float(self.rng.uniform(*self.speed_range))
    if scene.family == "place":
      x0, y0, x1, y1 = tabletop.tasks.REGIONS[scene.region]
      centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
      self.drop_point = centre + self.rng.uniform(-0.07, 0.07, size=2)

  def act(self, s: SceneState) -> np.ndarray:
    """float32 [3] = [dx, dy, gripper] for the current state."""
    if s.family == "pick":
      goal, close = self._grasp(s)
    elif s.family == "place":
      if s.held == s.target:
        goal = self.drop_point
        close = np.linalg.norm(s.gripper_pos - goal) > RELEASE_TOLERANCE
      else:
        goal, close = self._grasp(s)
    elif s.family == "push":
      goal, close = self._push(s)
    else:
      raise ValueError(f"unknown task family {s.family!r}")
    return self._action(s, goal, close)

  def perturb(self, s: SceneState, action: np.ndarray) -> np.ndarray:
    """The action to execute: `action`, except for this episode's premature close and push slip.

    The close fires the first time the open, empty gripper is within `mistake_at` of the point it
    is heading to (the target for pick/place, the approach point for push), holds for
    `mistake_steps` steps (each reported as "close"), then never again. The
    slip turns the motion of `slip_steps` consecutive steps once the fist has pushed (closed, in
    contact with the target, meaning to keep pushing) for `slip_after` steps. Call it once per
    executed step; `last_perturbation` says what it did.
    """
    self.last_perturbation = None
    if self.slip is not None:
      executed = self._slip(s, action)
      if self.last_perturbation:
        return executed
    if self.mistake_hold > 0:
      self.mistake_hold -= 1
      self.last_perturbation = "close"
      return np.array([action[0], action[1], 1.0], np.float32)
    if self.mistake_at is None or s.gripper_closed or s.held >= 0:
      return action
    if action[2] > 0.5:  # The expert closes here anyway: too late for a premature close.
      self.mistake_at = None
      return action
    if s.family == "push":
      point = tabletop.push_approach_point(s)
    elif s.family in ("pick", "place"):
      point = s.obj_pos[s.target]
    else:
      raise ValueError(f"unknown task family {s.family!r}")
    if np.linalg.norm(s.gripper_pos - point) >= self.mistake_at:
      return action
    self.mistake_at = None
    self.mistake_hold = self.mistake_steps - 1
    self.last_perturbation = "close"
    return np.array([action[0], action[1], 1.0], np.float32)

  def _slip(self, s: SceneState, action: np.ndarray) -> np.ndarray:
    before, _, angle = self.slip
    if before > 0:  # Count pushing steps: closed fist in contact, the expert pushing on.
      in_contact = np.linalg.norm(s.obj_pos[s.target] - s.gripper_pos) < CONTACT_DIST + 0.01
      if s.gripper_closed and s.held < 0 and action[2] > 0.5 and in_contact:
        self.slip[0] -= 1
      return action
    self.slip[1] -= 1
    if self.slip[1] <= 0:
      self.slip = None
    c, sn = np.cos(angle), np.sin(angle)
    dx, dy = float(action[0]), float(action[1])
    self.last_perturbation = "slip"
    return np.array([np.clip(c * dx - sn * dy, -1, 1), np.clip(sn * dx + c * dy, -1, 1), action[2]], np.float32)

  def _grasp(self, s: SceneState) -> tuple[np.ndarray, bool]:
    target = s.obj_pos[s.target]
    if s.held == s.target:
      return s.gripper_pos, True
    if s.gripper_closed:  # Holding the wrong thing, or an empty fist: open first.
      return target, False
    return target, bool(np.linalg.norm(s.gripper_pos - target) < GRASP_TOLERANCE)

  def _push(self, s: SceneState) -> tuple[np.ndarray, bool]:
    target = s.obj_pos[s.target]
    if s.held >= 0:  # Never carry: pushing means the object stays on the table.
      return s.gripper_pos, False
    direction = tabletop.push_goal(s) - target
    direction /= max(np.linalg.norm(direction), 1e-9)
    behind = tabletop.push_approach_point(s)
    tol = self.push
    if not s.gripper_closed:
      return behind, bool(np.linalg.norm(s.gripper_pos - behind) < tol.close_within)
    to_target = target - s.gripper_pos
    dist = np.linalg.norm(to_target)
    aligned = dist < CONTACT_DIST + tol.keep_within and np.dot(to_target, direction) > tol.keep_cos * dist
    if not aligned:  # Lost the object: open (passes over objects) and re-approach.
      return behind, False
    # Aim inside the contact distance, on the line behind the object: pushes it along `direction`
    # and corrects sideways drift.
    return target - direction * (CONTACT_DIST - tol.depth), True

  def _action(self, s: SceneState, goal: np.ndarray, close: bool) -> np.ndarray:
    move = (goal - s.gripper_pos) / s.step_size
    norm = np.linalg.norm(move)
    if norm > 1.0:
      move /= norm
    move = move * self.speed + self.rng.normal(0.0, self.noise_std, size=2)
    return np.array([*np.clip(move, -1.0, 1.0), float(close)], np.float32)
