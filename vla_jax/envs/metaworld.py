"""Meta-World (v3, PyPI `metaworld` 3.1.1) behind the interface the built-in simulator offers evaluation.

`MetaWorldEnv` is one task; `VectorMetaWorldEnv` steps N of them (any mix of tasks) with the
frozen-when-done semantics of `VectorTabletopEnv`, so `vla_jax.evaluation.rollout` runs either.
Observations:
  image        uint8 [S, S, 3]   RGB from `camera` (default "corner4": the whole table, arm and
                                 objects), rendered upright (Meta-World's corner cameras are mounted
                                 upside down; see `UPSIDE_DOWN_CAMERAS`); `camera_fovy` (degrees) narrows the
                                 camera's field of view from the same pose (corner4: 60)
  image_<name> uint8 [S, S, 3]   one more view per `extra_cameras` entry, named by `CAMERA_NAMES`
                                 (e.g. "gripperPOV" -> image_wrist, a camera on the gripper)
  state        float32 [4]       end-effector x, y, z (m, world frame) and the gripper opening
                                 (0 closed .. 1 open, Meta-World's own normalisation)
  env_state    float32 [39]      Meta-World's full state observation, goal included (for state-based
                                 baselines and "perfect perception" diagnostics; pixel policies never
                                 read it)
  instruction  str               one of the task's phrasings (`metaworld_tasks`)
Actions float32 [4]: dx, dy, dz in [-1, 1] (x 1 cm of mocap motion per step) and grip effort in
[-1, 1] (+1 close). Success is Meta-World's `info["success"]`; an episode terminates on it (the
usual "success at any step" protocol) or is truncated after `max_episode_steps`.

Object and goal positions are drawn afresh each episode from the task's own random-reset space,
seeded by the episode seed (`seeded_rand_vec`) — the distribution the benchmark samples its 50
fixed MT goals from, not those 50 — so a seed reproduces a scene and train/eval seeds never share
one. The expert (`ENV_POLICY_MAP`) sees Meta-World's 39-d state with the goal (`raw_obs`); the
policy sees only pixels, proprio and language.

Rendering is headless: `MUJOCO_GL` (default "egl") must name a backend whose system library
loads, else `MissingGLBackendError` says what to install. Fast settings are applied to every
model: no multisampling, no shadows, no reflections (~7 ms instead of ~70 ms a frame here).
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import os
import sys
import warnings
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from vla_jax.envs import metaworld_tasks
from vla_jax.envs.vector import FrozenWhenDoneBatch, seed_list

ACTION_DIM = 4
STATE_DIM = 4
STATE_NAMES = ("ee_x", "ee_y", "ee_z", "gripper_open")
ACTION_NAMES = ("dx", "dy", "dz", "grip_effort")
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
# Cameras whose image y axis points down in the world (Meta-World's xyz_base.xml): rotated 180°.
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
# Observation / dataset key suffix of each camera (lower_snake_case, as dataset specs require).
CAMERA_NAMES = {"corner": "corner", "corner2": "corner2", "corner3": "corner3", "corner4": "corner4",
                "topview": "topview", "behindGripper": "behind_gripper", "gripperPOV": "wrist"}
ENV_STATE_DIM = 39
# Privileged labels for the auxiliary referent loss (`vla_jax.models.referents`), rows in this order:
# the task's object (state[4:7]: puck, handle, button, peg, ...) and the goal (state[36:39]).
REFERENT_NAMES = ("object", "goal")
MAX_PATH_LENGTH = 500  # Meta-World refuses to step past this.

# MUJOCO_GL value -> (shared libraries, any one of which provides it; what to install on Debian/Ubuntu).
GL_BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "egl": (("libEGL.so.1", "libEGL.so"), "apt-get install libegl1 libgl1 libegl-mesa0"),
    "osmesa": (("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"), "apt-get install libosmesa6"),
}


# mujoco reads MUJOCO_GL once, when first imported: set the headless default before anyone does.
os.environ.setdefault("MUJOCO_GL", "egl")

_LIVE: "weakref.WeakSet[MetaWorldEnv]" = weakref.WeakSet()


def _close_all() -> None:
  # An EGL context freed by the garbage collector after mujoco's exit hook has torn EGL down
  # prints tracebacks; this hook is (re-)registered after each renderer is made, so after
  # mujoco's (registered with the first context), and exit hooks run last-in first-out.
  for env in list(_LIVE):
    env.close()


class MissingGLBackendError(RuntimeError):
  """MuJoCo cannot render headless here: the one error a user sees, saying what to install."""


def gl_error(backend: str, reason: str) -> MissingGLBackendError:
  return MissingGLBackendError(
      f"MuJoCo cannot render headless with MUJOCO_GL={backend!r} ({reason}). Install a backend: "
      f"EGL (`{GL_BACKENDS['egl'][1]}`, then MUJOCO_GL=egl) or OSMesa (`{GL_BACKENDS['osmesa'][1]}`, then "
      f"MUJOCO_GL=osmesa); `make metaworld-deps` does it. Python packages: `make metaworld-deps` or "
      f"`pip install -r requirements-metaworld.txt`.")


def check_gl_backend(load: Callable[[str], Any] = ctypes.CDLL) -> str:
  """Sets MUJOCO_GL to "egl" when unset and checks its system library loads; returns the backend.

  Must run before mujoco is first imported (mujoco reads MUJOCO_GL once, at import). `load`
  opens a shared library by name (injectable so tests can simulate a machine without one).
  """
  backend = os.environ.setdefault("MUJOCO_GL", "egl").lower()
  if backend not in GL_BACKENDS:
    raise gl_error(backend, f"expected one of {sorted(GL_BACKENDS)} for headless rendering")
  names, _ = GL_BACKENDS[backend]
  errors = []
  for name in names:
    try:
      load(name)
      break
    except OSError as e:
      errors.append(str(e))
  else:
    raise gl_error(backend, f"none of {', '.join(names)} loads: {errors[-1]}")
  if backend == "egl":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
  return backend


def import_metaworld():
  """`metaworld` (and with it mujoco), after the GL check; a clear error when it is not installed."""
  check_gl_backend()
  try:
    import metaworld  # noqa: F401
    import metaworld.env_dict
    import metaworld.policies
    # The experts' gains exceed the action bounds by design (the env clips); the warning repeats per episode.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
  except ImportError as e:
    raise ImportError(f"Meta-World is not installed ({e}); it is an optional extra: `make metaworld-deps` "
                      "or `pip install -r requirements-metaworld.txt`") from e
  return metaworld


def make_fast(model: Any) -> None:
  """Turns off what costs render time and a 64-128 px policy cannot see: MSAA, shadows, reflections."""
  model.vis.quality.offsamples = 0
  model.light_castshadow[:] = 0
  model.mat_reflectance[:] = 0


def upright(image: np.ndarray, camera: str) -> np.ndarray:
  """A rendered frame [H, W, ...] as seen with world-up at the top (a copy, C-contiguous)."""
  return np.ascontiguousarray(image[::-1, ::-1] if camera in UPSIDE_DOWN_CAMERAS else image)


@dataclasses.dataclass
class MetaWorldScene:
  """What the evaluation harness hands privileged policies (the expert): the task and its raw state."""

  family: str  # The task name, e.g. "push-v3" (named `family` like the tabletop's scenes).
  raw_obs: np.ndarray  # float64 [39]: Meta-World's state observation, goal included.


def check_cameras(camera: str, extra_cameras: Sequence[str] | str = (), where: str = "") -> tuple[str, ...]:
  """Validates the primary camera and the extra views; returns the extras as a tuple. `where`
  prefixes the keys in the error (e.g. "config.env.")."""
  if camera not in CAMERAS:
    raise ValueError(f"{where}camera={camera!r} is not valid; expected one of {CAMERAS}")
  extras = (extra_cameras,) if isinstance(extra_cameras, str) else tuple(extra_cameras)
  if any(c not in CAMERAS or c == camera for c in extras) or len(set(extras)) != len(extras):
    raise ValueError(f"{where}extra_cameras={extras!r} is not valid; expected distinct cameras from "
                     f"{CAMERAS} other than {where}camera={camera!r}")
  return extras


class MetaWorldEnv:
  """One Meta-World task with pixel, proprio and language observations (see the module docstring)."""

  def __init__(self, task: str, *, image_size: int = 96, camera: str = "corner4", max_episode_steps: int = 200,
               split: str = "train", camera_fovy: float | None = None, extra_cameras: Sequence[str] = ()):
    metaworld_tasks.resolve_tasks([task])
    extra_cameras = check_cameras(camera, extra_cameras)
    if camera_fovy is not None and not (isinstance(camera_fovy, (int, float)) and 5 <= camera_fovy <= 120):
      raise ValueError(f"camera_fovy={camera_fovy!r} is not valid; expected None (the camera's own) or "
                       "degrees in [5, 120]")
    if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 480:
      raise ValueError(f"image_size={image_size!r} is not valid; expected an int in [16, 480] (pixels)")
    if not isinstance(max_episode_steps, (int, np.integer)) or not 1 <= max_episode_steps <= MAX_PATH_LENGTH:
      raise ValueError(f"max_episode_steps={max_episode_steps!r} is not valid; expected 1..{MAX_PATH_LENGTH}")
    metaworld_tasks.instructions(task, split)  # Checks the split.
    if "tensorflow" in sys.modules:
      raise RuntimeError(
          "MetaWorldEnv cannot render in a process that has imported TensorFlow (MuJoCo's EGL/OSMesa "
          "rendering through Mesa's llvmpipe segfaults there); step the envs in worker processes: "
          "VectorMetaWorldEnv(..., num_workers=1 or more)")
    metaworld = import_metaworld()
    import mujoco

    self.task, self.camera, self.split = task, camera, split
    self.extra_cameras = extra_cameras
    self.image_size, self.max_episode_steps = int(image_size), int(max_episode_steps)
    env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
    # What `_create_observable_goal_envs` does, minus its frozen goal: a fresh, seeded draw per reset.
    env._partially_observable = False
    del env.sawyer_observation_space  # Recomputed for the goal-observable layout.
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.max_path_length = MAX_PATH_LENGTH
    self.env = env
    self.expert = metaworld.policies.ENV_POLICY_MAP[task]()
    make_fast(env.model)
    if camera_fovy is not None:
      # A narrower field of view from the same pose: the workspace fills more of the frame.
      env.model.cam_fovy[env.model.camera(camera).id] = float(camera_fovy)
    try:
      self.renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
    except Exception as e:  # noqa: BLE001 — any GL failure here means the backend does not work.
      raise gl_error(os.environ.get("MUJOCO_GL", "?"), f"creating the renderer failed: {e}") from e
    self.raw_obs = np.zeros(39)
    self.instruction = ""
    self.steps = 0
    self._closed = False
    _LIVE.add(self)
    atexit.unregister(_close_all)
    atexit.register(_close_all)

  @property
  def scene(self) -> MetaWorldScene:
    return MetaWorldScene(self.task, self.raw_obs.copy())

  def render(self, segmentation: bool = False, camera: str | None = None) -> np.ndarray:
    """uint8 [S, S, 3] RGB, or with `segmentation` int32 [S, S, 2] (MuJoCo object id, type), upright,
    from `camera` (default: the env's primary camera)."""
    camera = camera or self.camera
    if segmentation:
      self.renderer.enable_segmentation_rendering()
    try:
      self.renderer.update_scene(self.env.data, camera=camera)
      return upright(self.renderer.render(), camera)
    finally:
      if segmentation:
        self.renderer.disable_segmentation_rendering()

  def project(self, points: np.ndarray, camera: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World points float [K, 3] → ((x, y) float32 [K, 2] in [0, 1] units of `camera`'s upright
    frame (x right, y down), in_view bool [K]): where `render` draws them (pinhole, the camera's
    current pose and field of view; default the primary camera)."""
    camera = camera or self.camera
    model, data = self.env.model, self.env.data
    cam = model.camera(camera).id
    # MuJoCo cameras look along their -z axis with +y up; cam_xmat's columns are the axes in world.
    local = (np.asarray(points, np.float64).reshape(-1, 3) - data.cam_xpos[cam]) @ data.cam_xmat[cam].reshape(3, 3)
    depth = -local[:, 2]
    focal = 0.5 / np.tan(np.radians(model.cam_fovy[cam]) / 2)  # Image-height units (square frames).
    with np.errstate(divide="ignore", invalid="ignore"):
      xy = 0.5 + focal * np.stack([local[:, 0], -local[:, 1]], -1) / depth[:, None]
    if camera in UPSIDE_DOWN_CAMERAS:
      xy = 1.0 - xy
    in_view = (depth > 0) & np.all((xy >= 0) & (xy <= 1), axis=-1)
    return np.where(in_view[:, None], xy, 0.0).astype(np.float32), in_view

  def referents(self, camera: str | None = None) -> dict[str, np.ndarray]:
    """Where the task's object and goal (`REFERENT_NAMES`) are in `camera`'s frame now (default:
    the primary camera): {position float32 [2, 2] ((x, y) in [0, 1], x right, y down), valid bool
    [2]}. Invalid: out of view, or reach's object (the reach tasks have no object to act on).
    Privileged labels for an auxiliary training loss, never policy inputs."""
    position, valid = self.project(np.stack([self.raw_obs[4:7], self.raw_obs[36:39]]), camera)
    valid[0] &= not self.task.startswith("reach")
    return {"position": np.where(valid[:, None], position, 0.0).astype(np.float32), "valid": valid}

  def observation(self) -> dict[str, Any]:
    obs = {"image": self.render(), "state": self.raw_obs[:STATE_DIM].astype(np.float32),
           "env_state": self.raw_obs.astype(np.float32), "instruction": self.instruction}
    for extra in self.extra_cameras:
      obs[f"image_{CAMERA_NAMES[extra]}"] = self.render(camera=extra)
    return obs

  def reset(self, seed: int, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new scene drawn from `seed`. options: {"instruction": text} tells the policy `text` instead
    of the task's phrasing (the task, and so success, is unchanged); {"phrasing": i} picks phrasing i."""
    options = dict(options or {})
    unknown = set(options) - {"instruction", "phrasing"}
    if unknown:
      raise ValueError(f"reset options {sorted(unknown)} are not valid; expected 'instruction' or 'phrasing'")
    self.env.seed(int(seed))
    raw, _ = self.env.reset()
    self.raw_obs = np.asarray(raw, np.float64)
    self.steps = 0
    self.diagnostics = {"closest_to_goal_m": float("inf"), "hand_to_object_m": float("inf")}
    task_instruction = metaworld_tasks.instruction(self.task, self.split, options.get("phrasing", seed))
    self.instruction = options.get("instruction", task_instruction)
    info = {"instruction": self.instruction, "task_instruction": task_instruction, "task": self.task,
            "judgeable": True, "grounding_note": ""}
    return self.observation(), info

  def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
    action = np.asarray(action, np.float32)
    if action.shape != (ACTION_DIM,):
      raise ValueError(f"action has shape {action.shape}; expected ({ACTION_DIM},) = {ACTION_NAMES}")
    raw, reward, _, _, info = self.env.step(np.clip(action, -1.0, 1.0))
    self.raw_obs = np.asarray(raw, np.float64)
    self.steps += 1
    success = bool(info["success"])
    # How close a failure came: Meta-World's per-task `obj_to_target` (the object's distance to the
    # goal; the hand's for reach), and the hand's closest approach to the task object (state[0:3]
    # vs state[4:7]) says whether it ever got there. (Meta-World's own
    # `grasp_success` is not used: it wants the object lifted, so a push or a successful low
    # pick-place never passes it.) Reach has no task object (as `referents`): no approach distance.
    self.diagnostics["closest_to_goal_m"] = min(self.diagnostics["closest_to_goal_m"], float(info["obj_to_target"]))
    if self.task.startswith("reach"):
      self.diagnostics["hand_to_object_m"] = None
    else:
      hand_to_object = float(np.linalg.norm(self.raw_obs[0:3] - self.raw_obs[4:7]))
      self.diagnostics["hand_to_object_m"] = min(self.diagnostics["hand_to_object_m"], hand_to_object)
    info = {**info, "episode_diagnostics": dict(self.diagnostics)}
    return self.observation(), float(reward), success, self.steps >= self.max_episode_steps and not success, info

  def expert_action(self) -> np.ndarray:
    """Meta-World's scripted expert's action for the current state: float32 [4]."""
    return np.asarray(self.expert.get_action(self.raw_obs), np.float32)

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self.renderer.close()
      self.env.close()


class _LocalShard:
  """Envs stepped in this process (no TensorFlow here: see `VectorMetaWorldEnv`)."""

  def __init__(self, env_kwargs: Sequence[dict[str, Any]]):
    self.envs = [MetaWorldEnv(**kw) for kw in env_kwargs]

  def reset(self, seeds, options, split):
    for env in self.envs[:len(seeds)]:
      env.split = split
    results = [e.reset(s, o) for e, s, o in zip(self.envs, seeds, options)]
    return results, [e.scene for e in self.envs[:len(seeds)]]

  def step(self, actions, active):
    results = [e.step(a) if on else None for e, a, on in zip(self.envs, actions, active)]
    return results, [e.scene for e in self.envs[:len(actions)]]

  def close(self):
    for env in self.envs:
      env.close()


def _serve(conn, env_kwargs: Sequence[dict[str, Any]]) -> None:
  """A worker process: builds its envs, then answers (command, args) until "close"."""
  try:
    shard = _LocalShard(env_kwargs)
    conn.send(("ok", None))
  except Exception as e:  # noqa: BLE001 — reported to the parent, which raises it.
    conn.send(("error", e))
    return
  while True:
    command, args = conn.recv()
    if command == "close":
      shard.close()
      conn.send(("ok", None))
      return
    try:
      conn.send(("ok", getattr(shard, command)(*args)))
    except Exception as e:  # noqa: BLE001
      conn.send(("error", e))


class _RemoteShard:
  """Envs in a spawned process; `send` and `receive` are split so several shards step in parallel."""

  def __init__(self, env_kwargs: Sequence[dict[str, Any]]):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # A fork would inherit this process's TF and GL state.
    self.conn, child = ctx.Pipe()
    self.process = ctx.Process(target=_serve, args=(child, list(env_kwargs)), daemon=True)
    self.process.start()
    child.close()

  def send(self, command: str, *args: Any) -> None:
    self.conn.send((command, args))

  def receive(self) -> Any:
    try:
      status, value = self.conn.recv()
    except EOFError as e:
      raise RuntimeError(f"a Meta-World env worker (pid {self.process.pid}) died "
                         f"(exit code {self.process.exitcode})") from e
    if status == "error":
      raise value
    return value

  def close(self) -> None:
    if self.process.is_alive():
      try:
        self.send("close")
        self.receive()
      except (OSError, RuntimeError, EOFError):
        pass
    self.process.join(timeout=10)
    if self.process.is_alive():
      self.process.kill()


class VectorMetaWorldEnv(FrozenWhenDoneBatch):
  """N `MetaWorldEnv`s stepped together, frozen once done (no auto-reset), like `VectorTabletopEnv`.

  Observations: those of `MetaWorldEnv` stacked to [N, ...] (image uint8 [N, S, S, 3], state float32
  [N, 4], env_state float32 [N, 39], image_<name> per extra camera), instruction a list of N str.
  `tasks`: one task name for all envs, or one per env.

  num_workers: 0 steps the envs in this process; W > 0 splits them over W spawned processes,
  stepped in parallel. Use workers in any process that has imported TensorFlow (training,
  `experiments.evaluate`): MuJoCo's EGL rendering through Mesa's llvmpipe segfaults there (an
  LLVM clash, measured; softpipe avoids it at ~170 ms a frame).
  `reset` may be given fewer seeds than envs: the first len(seeds) envs then form the batch, so
  one set of envs (built once, ~0.4 s each) serves batches of any size up to N.
  """

  def __init__(self, num_envs: int, tasks: str | Sequence[str], *, num_workers: int = 0, **env_kwargs: Any):
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
      raise ValueError(f"num_envs={num_envs!r} is not valid; expected a positive int")
    if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
      raise ValueError(f"num_workers={num_workers!r} is not valid; expected an int >= 0")
    tasks = [tasks] * num_envs if isinstance(tasks, str) else list(tasks)
    if len(tasks) != num_envs:
      raise ValueError(f"VectorMetaWorldEnv got {len(tasks)} tasks for {num_envs} envs; expected one or {num_envs}")
    kwargs = [dict(task=t, **env_kwargs) for t in tasks]
    if num_workers == 0:
      self.shards: list[Any] = [_LocalShard(kwargs)]
      self.remote = False
    else:
      parts = np.array_split(np.arange(num_envs), min(num_workers, num_envs))
      self.shards = [_RemoteShard([kwargs[i] for i in part]) for part in parts]
      self.remote = True
      for shard in self.shards:
        shard.receive()  # Raises a worker's construction error (e.g. MissingGLBackendError) here.
    self.shard_sizes = [len(p) for p in np.array_split(np.arange(num_envs), len(self.shards))]
    self.capacity = int(num_envs)
    self.split = env_kwargs.get("split", "train")
    self._no_episodes(num_envs)
    self._scenes: list[MetaWorldScene] = []

  @property
  def scenes(self) -> list[MetaWorldScene]:
    return list(self._scenes)

  def _call(self, command: str, per_env_args: Sequence[Sequence[Any]], *shared: Any) -> tuple[list, list]:
    """Runs `command` on every shard with its slice of each per-env list; concatenated results, scenes."""
    slices, begin = [], 0
    for size in self.shard_sizes:
      slices.append([arg[begin:begin + size] for arg in per_env_args])
      begin += size
    calls = [(shard, args) for shard, args in zip(self.shards, slices) if len(args[0])]
    if self.remote:
      for shard, args in calls:
        shard.send(command, *args, *shared)
      answers = [shard.receive() for shard, _ in calls]
    else:
      answers = [getattr(shard, command)(*args, *shared) for shard, args in calls]
    return [r for results, _ in answers for r in results], [sc for _, scenes in answers for sc in scenes]

  def reset(self, seeds: int | Sequence[int], options: dict[str, Any] | Sequence[dict] | None = None):
    """`seeds`: one int (env i gets seed + i), or up to N ints (a batch of the first envs);
    `options` one dict or one per seed (see `MetaWorldEnv.reset`)."""
    seeds = seed_list(seeds, self.capacity)
    if not 1 <= len(seeds) <= self.capacity:
      raise ValueError(f"reset got {len(seeds)} seeds for {self.capacity} envs; expected 1..{self.capacity}")
    n = len(seeds)
    opts = list(options) if isinstance(options, (list, tuple)) else [options] * n
    if len(opts) != n:
      raise ValueError(f"reset got {len(opts)} option dicts for {n} seeds")
    results, self._scenes = self._call("reset", [seeds, opts], self.split)
    return self._begin([obs for obs, _ in results]), [info for _, info in results]

  def step(self, actions: np.ndarray):
    """actions float32 [N, 4] -> (obs, reward [N], terminated [N], truncated [N], infos)."""
    actions = self._check_actions(actions, ACTION_DIM).astype(np.float32)
    results, self._scenes = self._call("step", [list(actions), list(~self.done)])
    return self._end_step(results)

  def close(self) -> None:
    for shard in self.shards:
      shard.close()
