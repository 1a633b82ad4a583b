"""The language-conditioned tabletop: a deterministic, offline, fast gymnasium environment.

A gripper moves over a 2-D table (seen from above) with 4-5 objects. Each episode draws one task
from a family ("place" the X in a corner, "push" X next to Y, "pick" up X), phrased by a template;
at least two distractors share the target's colour or shape, so a policy must read the instruction.

Physics, kept simple and exactly reproducible (kinematic, no object-object collisions):
  * action = [dx, dy, gripper] float32; dx, dy in [-1, 1] scale the step size (`MAX_STEP` divided
    by the env's `control_rate`); gripper > 0.5 closes.
  * closing grasps the nearest object within `GRASP_RADIUS`; a held object moves with the gripper;
    opening releases it where it is;
  * a closed, empty gripper is a fist that pushes objects it overlaps out to contact distance;
    an open gripper passes over objects (its fingers are above them).
Proprio `state` float32 [5] = [gripper_x, gripper_y, gripper_closed, grasp_contact, push_force]:
the last two are the tactile-style channels (1 while an object is in the grasp; fist penetration
this step in units of the step size, clipped to [0, 1]).

Control rate: at the default `control_rate=1` a step moves up to `MAX_STEP` = 0.06 table units,
more than the grasp radius, so a policy that reacts one step late has already missed. Real arms
are commanded at 10-50 Hz in much finer increments, and an inference delay of d steps is only
meaningful against that. `control_rate=k` makes every step 1/k of the default one (and the
default episode limit k times longer); the scene, tasks and success are unchanged.

`referents(scene)` gives privileged per-step labels of where the instruction's objects are (for
auxiliary training losses only; a policy never sees them).

Typed instructions: `reset(options={"instruction": text})` draws the scene from the seed as usual,
then `with_instruction` grounds the text in it (`tasks.ground_instruction`). If the text names a
task in this scene, that task replaces the drawn one (success, referents and the scripted expert
follow it); if not, the episode still runs with the text as the instruction, but it is marked not
judgeable (`info["judgeable"]`, `info["grounding_note"]` says why) and never succeeds.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from vla_jax.envs import render as render_lib
from vla_jax.envs import tasks

OBJECT_RADIUS = 0.06
GRIPPER_RADIUS = 0.04  # Radius of the closed fist, for pushing.
GRASP_RADIUS = 0.05  # Closing within this distance of an object's centre grasps it.
CONTACT_DIST = OBJECT_RADIUS + GRIPPER_RADIUS
MAX_STEP = 0.06  # Table units moved per step at |dx| = 1 and control_rate 1.
DEFAULT_EPISODE_STEPS = 100  # Episode limit at control_rate 1 (k times this at control_rate k).
PUSH_SUCCESS_DIST = 0.16  # "next to": centre distance, objects touch at 0.12.
MIN_OBJECT_SEPARATION = 0.17
STATE_DIM = 5
ACTION_DIM = 3
STATE_NAMES = ("gripper_x", "gripper_y", "gripper_closed", "grasp_contact", "push_force")
ACTION_NAMES = ("dx", "dy", "gripper")
MAX_INSTRUCTION_CHARS = 128
# Printable ASCII: the charset of the observation's instruction. Template instructions use only
# lowercase letters and spaces; the rest is for text a person types ("Please grab the RED square!"),
# which the env passes to the policy as typed.
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
# Referents: the places the instruction names, in table coordinates (see `referents`).
#   0 "target": the centre of the object to act on (every family);
#   1 "goal": "push" the reference object's centre, "place" the goal region's centre, "pick" none.
NUM_REFERENTS = 2
REFERENT_NAMES = ("target", "goal")
# Attribute referents (see `attribute_referents`): per attribute of the target, every object in the
# scene that shares it (the target included), in MAX_OBJECTS slots.
MAX_OBJECTS = 6
ATTRIBUTE_NAMES = ("colour", "shape")


@dataclasses.dataclass
class SceneState:
  """Privileged, complete simulator state (the expert and the success predicates read it)."""

  obj_pos: np.ndarray  # float64 [K, 2]
  obj_colour: list[str]
  obj_shape: list[str]
  gripper_pos: np.ndarray  # float64 [2]
  gripper_closed: bool
  held: int  # Index of the held object, -1 if none.
  family: str
  split: str
  target: int
  ref: int  # "push": the object to push next to; -1 otherwise.
  region: str  # "place": a tasks.REGIONS key; "" otherwise.
  instruction: str
  push_force: float = 0.0
  steps: int = 0
  step_size: float = MAX_STEP  # Table units moved per step at |dx| = 1: MAX_STEP / the env's control_rate.
  # False when the instruction (typed by a person) names no task in this scene: family, target,
  # ref and region are then the drawn task, which the policy was not told, so nothing is judged
  # on them (no success, no referents). `grounding_note` says what a typed instruction meant.
  judgeable: bool = True
  grounding_note: str = ""

  def object_names(self) -> list[str]:
    return [tasks.object_name(c, s) for c, s in zip(self.obj_colour, self.obj_shape)]


def in_region(pos: np.ndarray, region: str) -> bool:
  x0, y0, x1, y1 = tasks.REGIONS[region]
  return bool(x0 <= pos[0] <= x1 and y0 <= pos[1] <= y1)


def push_goal(state: SceneState) -> np.ndarray:
  """Where "push" wants the target: on the side of the reference object that faces it, touching."""
  t, r = state.obj_pos[state.target], state.obj_pos[state.ref]
  away = (t - r) / max(np.linalg.norm(t - r), 1e-9)
  return r + away * (2 * OBJECT_RADIUS + 0.01)


def referents(state: SceneState) -> tuple[np.ndarray, np.ndarray]:
  """Where the instruction's referents are in this state: (position float32 [2, 2], valid bool [2]).

  Rows follow `REFERENT_NAMES`; positions are (x, y) table coordinates (x right, y down, so a point
  u is at pixel u * S of an S x S frame). Invalid rows (the goal of "pick"; every row of a scene
  whose instruction is not judgeable) are 0. Call it on the state a frame was rendered from: the
  labels describe that frame. Privileged simulator labels for auxiliary training losses only, never
  policy inputs.
  """
  position = np.zeros((NUM_REFERENTS, 2), np.float32)
  valid = np.zeros(NUM_REFERENTS, bool)
  if not state.judgeable:  # The instruction refers to nothing known in this scene.
    return position, valid
  position[0], valid[0] = state.obj_pos[state.target], True
  if state.family == "push":
    position[1], valid[1] = state.obj_pos[state.ref], True
  elif state.family == "place":
    x0, y0, x1, y1 = tasks.REGIONS[state.region]
    position[1], valid[1] = ((x0 + x1) / 2, (y0 + y1) / 2), True
  elif state.family != "pick":
    raise ValueError(f"unknown task family {state.family!r}; expected one of {list(tasks.FAMILIES)}")
  return position, valid


def attribute_referents(state: SceneState) -> tuple[np.ndarray, np.ndarray]:
  """Where the objects sharing the target's colour / shape are: (position float32 [2, MAX_OBJECTS, 2],
  valid bool [2, MAX_OBJECTS]).

  Row a follows `ATTRIBUTE_NAMES` and lists, in scene order, every object whose colour (a = 0) or
  shape (a = 1) is the target's — the target included — padded with invalid zero slots. Why: a
  map trained to find "all purple things" and one trained to find "all diamonds" are each learned
  from every training scene, and their intersection names a purple diamond the policy never saw
  (see `vla_jax/models/referents.py`). All invalid when the instruction is not judgeable.
  Privileged labels for auxiliary training losses only, never policy inputs.
  """
  position = np.zeros((len(ATTRIBUTE_NAMES), MAX_OBJECTS, 2), np.float32)
  valid = np.zeros((len(ATTRIBUTE_NAMES), MAX_OBJECTS), bool)
  if not state.judgeable:
    return position, valid
  if len(state.obj_pos) > MAX_OBJECTS:
    raise ValueError(f"scene has {len(state.obj_pos)} objects; attribute labels hold at most MAX_OBJECTS={MAX_OBJECTS}")
  wanted = (state.obj_colour[state.target], state.obj_shape[state.target])
  for a, values in enumerate((state.obj_colour, state.obj_shape)):
    match = [i for i, v in enumerate(values) if v == wanted[a]]
    position[a, :len(match)] = state.obj_pos[match]
    valid[a, :len(match)] = True
  return position, valid


def step_referents(state: SceneState) -> dict[str, Any]:
  """One recorded observation's `steps/referents` entry in the built-in datasets: `referents` as
  {"position", "valid"} plus `attribute_referents` as "attributes" {"position", "valid"}. Take it
  when the frame is rendered (the scene changes in place as the episode runs)."""
  position, valid = referents(state)
  attr_position, attr_valid = attribute_referents(state)
  return {"position": position, "valid": valid, "attributes": {"position": attr_position, "valid": attr_valid}}


def stack_referents(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """`step_referents` of every step of an episode → the same tree with a leading [T] axis."""
  return {"position": np.stack([r["position"] for r in steps]), "valid": np.stack([r["valid"] for r in steps]),
          "attributes": {k: np.stack([r["attributes"][k] for r in steps]) for k in ("position", "valid")}}


def push_approach_point(state: SceneState) -> np.ndarray:
  """Where a fist must stand to push the target straight towards its goal."""
  t = state.obj_pos[state.target]
  d = push_goal(state) - t
  d /= max(np.linalg.norm(d), 1e-9)
  return t - d * (CONTACT_DIST + 0.025)


def is_success(state: SceneState) -> bool:
  """The success predicate of each task family (never true when the instruction is not judgeable)."""
  if not state.judgeable:
    return False
  target = state.obj_pos[state.target]
  if state.family == "pick":
    return state.held == state.target
  if state.family == "place":
    return state.held != state.target and in_region(target, state.region)
  if state.family == "push":
    dist = np.linalg.norm(target - state.obj_pos[state.ref])
    return state.held != state.target and bool(dist <= PUSH_SUCCESS_DIST)
  raise ValueError(f"unknown task family {state.family!r}")


def _normalise_families(task_family: str | Sequence[str]) -> tuple[str, ...]:
  if isinstance(task_family, str):
    if task_family == "any":
      return tasks.FAMILIES
    tasks.check_choice("task_family", task_family, tasks.FAMILIES + ("any",))
    return (task_family,)
  families = tuple(task_family)
  if not families:
    raise ValueError(f"task_family is empty; expected 'any' or a subset of {list(tasks.FAMILIES)}")
  for f in families:
    tasks.check_choice("task_family", f, tasks.FAMILIES)
  return families


def sample_scene(rng: np.random.Generator, family: str, split: str, num_objects: int) -> SceneState:
  """Draws a scene and instruction for one family/split. Pure function of the rng state."""
  tasks.check_choice("split", split, tasks.SPLITS)
  target_pool = tasks.HELDOUT_COMBOS if split == "heldout_combo" else tasks.TRAIN_COMBOS
  target_combo = target_pool[rng.integers(len(target_pool))]
  others = [c for c in tasks.TRAIN_COMBOS if c != target_combo]
  head = [target_combo]
  if family == "push":  # The reference object: any other combo; it is not a distractor.
    head.append(others.pop(rng.integers(len(others))))
  same_colour = [c for c in others if c[0] == target_combo[0]]
  same_shape = [c for c in others if c[1] == target_combo[1]]
  # Two confusable distractors, one sharing the colour and one the shape; then fill at random.
  distractors = [same_colour[rng.integers(len(same_colour))], same_shape[rng.integers(len(same_shape))]]
  rest = [c for c in others if c not in distractors]
  extra = rng.choice(len(rest), size=num_objects - len(head) - 2, replace=False)
  distractors += [rest[i] for i in extra]
  combos = head + [distractors[i] for i in rng.permutation(len(distractors))]
  ref = 1 if family == "push" else -1
  region = ""
  if family == "place":
    region = list(tasks.REGIONS)[rng.integers(len(tasks.REGIONS))]

  for _ in range(1000):
    pos = rng.uniform(0.1, 0.9, size=(num_objects, 2))
    dists = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(num_objects)
    if dists.min() < MIN_OBJECT_SEPARATION:
      continue
    gripper = rng.uniform(0.1, 0.9, size=2)
    state = SceneState(
        obj_pos=pos,
        obj_colour=[c for c, _ in combos],
        obj_shape=[s for _, s in combos],
        gripper_pos=gripper,
        gripper_closed=False,
        held=-1,
        family=family,
        split=split,
        target=0,
        ref=ref,
        region=region,
        instruction="",
    )
    if _scene_is_valid(state):
      break
  else:  # pragma: no cover - 1000 rejections never happen with these densities.
    raise RuntimeError(f"could not place {num_objects} objects for family {family!r}")

  names = state.object_names()
  templates = tasks.templates_for(family, split)
  template = templates[rng.integers(len(templates))]
  state.instruction = template.format(obj=names[0], ref=names[ref] if ref >= 0 else "", region=region)
  return state


def check_typed_instruction(text: Any) -> str:
  """`text` without surrounding whitespace, if it fits the observation's instruction space; else ValueError."""
  if not isinstance(text, str):
    raise ValueError(f"instruction={text!r} is not valid; expected a str")
  text = text.strip()
  if not text:
    raise ValueError("instruction='' is not valid; expected some text, e.g. 'pick up the red square'")
  if len(text) > MAX_INSTRUCTION_CHARS:
    raise ValueError(f"instruction has {len(text)} characters; expected at most {MAX_INSTRUCTION_CHARS}")
  bad = sorted(set(text) - set(INSTRUCTION_CHARSET))
  if bad:
    raise ValueError(f"instruction {text!r} has characters {bad} outside the observation charset (printable ASCII)")
  return text


def with_instruction(scene: SceneState, text: str) -> SceneState:
  """A copy of `scene` whose task is what `text` asks for (`tasks.ground_instruction`).

  Judgeable: family, target, ref and region are replaced by the named ones, so success, referents
  and the scripted expert follow the text. Not judgeable: the drawn task stays (the expert and
  other readers need one) but the scene never succeeds and has no referents. Either way the
  instruction becomes `text` and `grounding_note` says how it was read. Objects and gripper are
  unchanged (copied: stepping the result leaves `scene` as it was).
  """
  grounding = tasks.ground_instruction(text, scene.object_names())
  out = dataclasses.replace(
      scene, obj_pos=scene.obj_pos.copy(), obj_colour=list(scene.obj_colour), obj_shape=list(scene.obj_shape),
      gripper_pos=scene.gripper_pos.copy(), instruction=text, judgeable=grounding.judgeable,
      grounding_note=grounding.note,
  )
  if grounding.judgeable:
    out.family, out.target, out.ref, out.region = grounding.family, grounding.target, grounding.ref, grounding.region
    if is_success(out):  # Say so: the episode will end with success on its first step.
      out.grounding_note += " (already done at the start)"
  return out


def _scene_is_valid(state: SceneState) -> bool:
  """Rejects scenes that are already solved or cannot be solved by a straight push."""
  if is_success(state):
    return False
  if state.family == "place":
    return not in_region(state.obj_pos[state.target], state.region)
  if state.family == "push":
    if np.linalg.norm(state.obj_pos[state.target] - state.obj_pos[state.ref]) < 0.35:
      return False
    p = push_approach_point(state)
    if not np.all((p > 0.03) & (p < 0.97)):
      return False
    d = np.linalg.norm(state.obj_pos - p, axis=-1)
    return bool(d.min() > GRASP_RADIUS + 0.03)
  return True


class TabletopEnv(gym.Env):
  """Language-conditioned tabletop with the gymnasium API.

  Observation (dict): `image` uint8 [S, S, 3], `state` float32 [5] (see module docstring),
  `instruction` str. Action: float32 [3] = [dx, dy, gripper]. Reward 1 on the success step, else 0;
  `terminated` on success, `truncated` after `max_episode_steps` (default 100 x `control_rate`).
  `control_rate` k: each step moves 1/k of the default step (see the module docstring).

  `reset(seed=..., options={"task_family": ..., "split": ..., "instruction": ...})` overrides the
  family/split for one episode and, with "instruction", replaces the drawn task by the one the typed
  text names in the drawn scene (see `with_instruction`; the scene itself is the one the seed gives
  without it). `info` has `judgeable` (False: the text names no task in this scene; the episode
  runs but never succeeds) and `grounding_note` ("" without a typed instruction). The complete
  state is `env.unwrapped.scene` (for scripted experts and tests).
  """

  metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

  def __init__(
      self,
      task_family: str | Sequence[str] = "any",
      split: str = "train",
      image_size: int = 64,
      max_episode_steps: int | None = None,
      num_objects: tuple[int, int] = (4, 5),
      render_mode: str | None = "rgb_array",
      control_rate: int = 1,
  ):
    self.families = _normalise_families(task_family)
    tasks.check_choice("split", split, tasks.SPLITS)
    render_lib.check_image_size(image_size)
    if not isinstance(control_rate, (int, np.integer)) or control_rate < 1:
      raise ValueError(f"control_rate={control_rate!r} is not valid; expected a positive int (steps per default step)")
    if max_episode_steps is None:
      max_episode_steps = DEFAULT_EPISODE_STEPS * int(control_rate)
    if not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1:
      raise ValueError(f"max_episode_steps={max_episode_steps!r} is not valid; expected a positive int")
    lo, hi = num_objects
    if not 4 <= lo <= hi <= MAX_OBJECTS:
      raise ValueError(
          f"num_objects={tuple(num_objects)!r} is not valid; expected (lo, hi) with 4 <= lo <= hi <= {MAX_OBJECTS} "
          "(target + reference + at least 2 distractors)"
      )
    if render_mode not in (None, "rgb_array"):
      raise ValueError(f"render_mode={render_mode!r} is not valid; expected 'rgb_array' or None")
    self.split = split
    self.image_size = int(image_size)
    self.max_episode_steps = int(max_episode_steps)
    self.control_rate = int(control_rate)
    self.num_objects = (int(lo), int(hi))
    self.render_mode = render_mode
    self.observation_space = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
        "state": gym.spaces.Box(
            np.array([0, 0, 0, 0, 0], np.float32), np.array([1, 1, 1, 1, 1], np.float32), dtype=np.float32
        ),
        "instruction": gym.spaces.Text(MAX_INSTRUCTION_CHARS, charset=INSTRUCTION_CHARSET),
    })
    self.action_space = gym.spaces.Box(
        np.array([-1, -1, 0], np.float32), np.array([1, 1, 1], np.float32), dtype=np.float32
    )
    self.scene: SceneState | None = None
    self._done = True
    self._frame = np.empty((self.image_size, self.image_size, 3), np.uint8)

  # -- gymnasium API -------------------------------------------------------------------------------
  def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
    super().reset(seed=seed)
    options = dict(options or {})
    family = options.pop("task_family", None)
    split = options.pop("split", self.split)
    typed = options.pop("instruction", None)
    if options:
      raise ValueError(
          f"reset options {sorted(options)} are unknown; expected some of 'task_family', 'split', 'instruction'"
      )
    if typed is not None:
      typed = check_typed_instruction(typed)
    if family is None:
      family = self.families[self.np_random.integers(len(self.families))]
    tasks.check_choice("task_family", family, tasks.FAMILIES)
    n = int(self.np_random.integers(self.num_objects[0], self.num_objects[1] + 1))
    self.scene = sample_scene(self.np_random, family, split, n)
    self.scene.step_size = MAX_STEP / self.control_rate
    if typed is not None:
      self.scene = with_instruction(self.scene, typed)
    self._done = False
    return self._observation(), self._info()

  def step(self, action):
    if self.scene is None or self._done:
      raise RuntimeError("TabletopEnv.step called before reset() or after the episode ended")
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (ACTION_DIM,):
      raise ValueError(f"action has shape {action.shape}; expected ({ACTION_DIM},) = {list(ACTION_NAMES)}")
    if not np.all(np.isfinite(action)):
      raise ValueError(f"action {action.tolist()} contains NaN or inf")
    s = self.scene
    self._apply(s, action)
    s.steps += 1
    success = is_success(s)
    truncated = not success and s.steps >= self.max_episode_steps
    self._done = success or truncated
    return self._observation(), float(success), success, truncated, self._info(success)

  def render(self) -> np.ndarray:
    if self.scene is None:
      raise RuntimeError("TabletopEnv.render called before reset()")
    s = self.scene
    return render_lib.render(
        self.image_size, s.obj_pos, s.obj_colour, s.obj_shape, OBJECT_RADIUS, GRIPPER_RADIUS,
        s.gripper_pos, s.gripper_closed, s.held,
    )

  # -- internals -----------------------------------------------------------------------------------
  @staticmethod
  def _apply(s: SceneState, action: np.ndarray) -> None:
    """Advances the kinematic state by one action (see the module docstring for the rules)."""
    close = action[2] > 0.5
    if close and not s.gripper_closed:
      s.gripper_closed = True
      d = np.linalg.norm(s.obj_pos - s.gripper_pos, axis=-1)
      nearest = int(np.argmin(d))
      s.held = nearest if d[nearest] <= GRASP_RADIUS else -1
    elif not close and s.gripper_closed:
      s.gripper_closed = False
      s.held = -1
    delta = np.clip(action[:2], -1.0, 1.0) * s.step_size
    s.gripper_pos = np.clip(s.gripper_pos + delta, 0.0, 1.0)
    s.push_force = 0.0
    if s.held >= 0:
      s.obj_pos[s.held] = np.clip(s.gripper_pos, OBJECT_RADIUS, 1 - OBJECT_RADIUS)
    elif s.gripper_closed:
      offset = s.obj_pos - s.gripper_pos
      dist = np.linalg.norm(offset, axis=-1)
      for i in np.nonzero(dist < CONTACT_DIST)[0]:
        if dist[i] > 1e-9:
          direction = offset[i] / dist[i]
        else:  # Exactly on top: push along the motion.
          direction = delta / max(np.linalg.norm(delta), 1e-9)
        s.obj_pos[i] = np.clip(
            s.gripper_pos + direction * CONTACT_DIST, OBJECT_RADIUS, 1 - OBJECT_RADIUS
        )
        s.push_force += CONTACT_DIST - dist[i]
      s.push_force = min(1.0, s.push_force / s.step_size)

  def _state_vector(self) -> np.ndarray:
    s = self.scene
    return np.array(
        [s.gripper_pos[0], s.gripper_pos[1], float(s.gripper_closed), float(s.held >= 0), s.push_force],
        np.float32,
    )

  def _observation(self) -> dict[str, Any]:
    s = self.scene
    render_lib.render(
        self.image_size, s.obj_pos, s.obj_colour, s.obj_shape, OBJECT_RADIUS, GRIPPER_RADIUS,
        s.gripper_pos, s.gripper_closed, s.held, out=self._frame,
    )
    return {"image": self._frame.copy(), "state": self._state_vector(), "instruction": s.instruction}

  def _info(self, success: bool = False) -> dict[str, Any]:
    s = self.scene
    return {
        "success": success,
        "task_family": s.family,
        "split": s.split,
        "instruction": s.instruction,
        "scene_objects": ",".join(s.object_names()),
        "judgeable": s.judgeable,
        "grounding_note": s.grounding_note,
    }
