"""Batched closed-loop rollouts in the built-in simulator, with action-chunk execution under delay.

How the [H, A] chunks a policy predicts are executed is a strategy of
`vla_jax.inference.execution` (`strategy=`; the same code a robot client uses), under an inference
delay of d control steps — fixed (`delay=`) or drawn per inference (`delay_distribution=`):
  * "sync": ask, stand still d steps (the scene does not move; counted in `wait_steps`), execute
    the first k = `execute_steps` actions — at d = 0 receding-horizon execution (k = H open-loop
    chunking, k = 1 fully closed-loop; `execution="receding"` is its former name);
  * "naive_async", "hard", "rtc", "conditioned": ask every k steps and keep executing the current
    plan; switch to the new chunk when it arrives, d steps later (the last three: the request carries the plan's
    actions for the next H steps, frozen for the d that execute while the model thinks);
  * "ensemble": ask every step (as soon as the model is free when d > 0) and act with the weighted
    mean of all predictions for the current step (temporal ensembling, as in ACT), weights
    exp(-m * age) so older predictions count less when m > 0.
The policy is queried for all N envs at once, on one clock (one delay per inference for the
batch); finished envs are frozen by the vector env. Each episode reports its waits, inferences and
the action jumps ‖a_t - a_{t-1}‖ at chunk boundaries and elsewhere.

Instructions a person typed (`instruction_override=` a string or one per seed) are grounded in each
seeded scene by the env (`tabletop.with_instruction`); an episode whose text names no task in its
scene still runs, but reports `judgeable=False` (and never success) with the env's note on why.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

import numpy as np

from vla_jax.envs import SceneState, VectorTabletopEnv, tasks as task_lib
from vla_jax.evaluation.policies import ChunkPolicy
from vla_jax.inference import execution as execution_lib

STRATEGIES = execution_lib.STRATEGIES


@dataclasses.dataclass
class EpisodeResult:
  seed: int
  family: str
  split: str
  instruction: str  # What the policy was told (differs from the task in the language-blind ablation).
  task_instruction: str  # The task that success is measured on.
  success: bool
  length: int
  frames: list[np.ndarray] | None = None
  judgeable: bool = True  # False: a typed instruction named no task in the scene; success is then False.
  grounding_note: str = ""  # How a typed instruction was read, or why it cannot be judged ("" otherwise).
  wait_steps: int = 0  # Control steps the robot stood still waiting for a chunk (not in `length`).
  inferences: int = 0  # Chunks requested while the episode ran.
  boundary_jumps: list[float] = dataclasses.field(default_factory=list)  # ‖a_t - a_{t-1}‖ at chunk switches.
  interior_jump_sum: float = 0.0  # Sum of ‖a_t - a_{t-1}‖ over the other steps t ≥ 1 ...
  interior_jump_max: float = 0.0
  interior_steps: int = 0  # ... and their count.
  # The env's own end-of-episode diagnostics (its step infos' "episode_diagnostics", e.g. Meta-World's
  # closest_to_goal_m and hand_to_object_m); {} for envs without them.
  diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)


def gif_frame(obs: dict[str, Any], i: int) -> np.ndarray:
  """Env i's frame for a GIF: `image`, with every other camera (`image_<name>`) beside it."""
  views = [obs["image"][i]] + [obs[k][i] for k in sorted(obs) if k.startswith("image_")]
  return views[0] if len(views) == 1 else np.concatenate(views, axis=1)


def run_episodes(
    policy: ChunkPolicy,
    seeds: Sequence[int],
    *,
    family: str,
    split: str,
    num_envs: int = 32,
    image_size: int = 64,
    max_episode_steps: int | None = None,
    control_rate: int = 1,
    strategy: str | None = None,
    execution: str | None = None,
    execute_steps: int | None = None,
    ensemble_decay: float = 0.0,
    delay: int = 0,
    delay_distribution: Sequence[Sequence[float]] = (),
    delay_seed: int = 0,
    instruction_override: str | Sequence[str] | None = None,
    record_frames: int = 0,
    make_env: Callable[[int], Any] | None = None,
) -> list[EpisodeResult]:
  """Runs one episode per seed (in batches of `num_envs`) and returns their results.

  max_episode_steps, control_rate: of the built-in tabletop (`TabletopEnv`; default limit 100 x
    control_rate steps).
  strategy: one of `STRATEGIES` (default "sync"); `execution` is its former name ("receding" =
    "sync", "ensemble") — pass one of the two.
  execute_steps: k, actions executed per inference (sync) or steps between requests (naive_async,
    hard, rtc, conditioned); default H, clipped to H. Unused by "ensemble".
  delay, delay_distribution: the inference delay in control steps — fixed, or ((d, p), ...) drawn
    per inference (one draw for the batch) from a generator seeded by (delay_seed, first seed of
    the batch).
  instruction_override: None (the scene's own instruction); "shuffled" — each env is told the
    instruction of another env in its batch that asks, in its own scene, for another task (the
    language-blind ablation); any other string — an instruction typed by a person, given to every
    episode; or a sequence of one such string per seed. Typed text replaces the task it names in
    each scene (`EpisodeResult.family` and `task_instruction` are then the typed task); see
    `judgeable` and `grounding_note`.
  record_frames: keep the rendered frames of the first this-many episodes (for videos).
  make_env: `make_env(n)` -> a vector env of n envs for one batch (another simulator, e.g.
    `envs.metaworld.VectorMetaWorldEnv`, with the same reset/step/done/success/lengths/scenes and
    reset infos holding "instruction", "judgeable", "grounding_note" and optionally
    "task_instruction", what success is judged on when the policy is told another text);
    None = the built-in tabletop of `family` and `split`.
  """
  if strategy is not None and execution is not None:
    raise ValueError(f"strategy={strategy!r} and execution={execution!r} are both given; "
                     "pass strategy (execution is its former name)")
  key, name = ("execution", execution) if execution is not None else ("strategy", strategy or "sync")
  if execution_lib.LEGACY_NAMES.get(name, name) not in STRATEGIES:
    raise ValueError(f"{key}={name!r} is not valid; expected one of {list(STRATEGIES)}")
  name = execution_lib.check_strategy(name)
  horizon = policy.action_horizon
  if execute_steps is not None and int(execute_steps) < 1:
    raise ValueError(f"execute_steps={execute_steps} is not valid; expected >= 1")
  if name in execution_lib.GUIDED and "guidance" not in inspect.signature(policy.__call__).parameters:
    raise ValueError(f"strategy={name!r} needs a policy whose __call__ takes guidance=, prefix=, weights= "
                     f"(JaxPolicy, OnnxPolicy); {type(policy).__name__} does not")
  DelaySampler = execution_lib.DelaySampler  # noqa: N806
  DelaySampler(delay, delay_distribution)  # Check the settings before any episode runs.
  typed = _typed_instructions(instruction_override, len(seeds))
  results: list[EpisodeResult] = []
  for begin in range(0, len(seeds), num_envs):
    batch_seeds = list(seeds[begin : begin + num_envs])
    n = len(batch_seeds)
    venv = make_env(n) if make_env is not None else VectorTabletopEnv(
        n, task_family=family, split=split, image_size=image_size, max_episode_steps=max_episode_steps,
        control_rate=control_rate)
    options = None if typed is None else [{"instruction": text} for text in typed[begin : begin + num_envs]]
    obs, infos = venv.reset(batch_seeds, options)
    tasks = [info.get("task_instruction", info["instruction"]) for info in infos]
    if instruction_override == "shuffled":
      told = _derange(tasks, _same_task_in_scene(tasks, venv.scenes))
    else:
      told = [info["instruction"] for info in infos]
    policy.reset(told, venv.scenes)
    keep = max(0, min(record_frames - begin, n))
    frames = [[gif_frame(obs, i)] for i in range(keep)]
    delays = DelaySampler(delay, delay_distribution, seed=[int(delay_seed), int(batch_seeds[0])])
    chunks = execution_lib.ChunkExecution(name, horizon, execute_steps, ensemble_decay)
    waits, inferences = np.zeros(n, np.int64), np.zeros(n, np.int64)
    jumps = _Jumps(n)
    diagnostics: list[dict[str, Any]] = [{} for _ in range(n)]
    fresh = True  # The observation is new (an env step since the last tick), not yet in the window.
    while not venv.done.all():
      chunks.receive()
      if chunks.wants_chunk():
        request = chunks.request(delays())
        # The policy pushes `obs` into its window. A request on a tick after a wait (only when the
        # plan ran out: d > k, or d >= H for the ensemble) pushes a frame the window already holds,
        # as a robot standing still would see it again.
        chunks.submit(policy(obs, venv.scenes, **request.policy_kwargs()))
        inferences += ~venv.done
      elif fresh:
        policy.observe(obs)  # Keep the observation window current between queries.
      action = chunks.act()
      if action is None:
        waits += ~venv.done
        fresh = False
        continue
      was_done = venv.done.copy()
      jumps.add(action, chunks.switched, ~was_done)
      obs, _, _, _, step_infos = venv.step(np.asarray(action, np.float32))
      for i, info in enumerate(step_infos):
        if not was_done[i] and "episode_diagnostics" in info:
          diagnostics[i] = info["episode_diagnostics"]
      fresh = True
      for i in range(keep):
        if not was_done[i]:
          frames[i].append(gif_frame(obs, i))
    for i, seed in enumerate(batch_seeds):
      results.append(EpisodeResult(
          seed=int(seed), family=venv.scenes[i].family, split=split, instruction=told[i], task_instruction=tasks[i],
          success=bool(venv.success[i]), length=int(venv.lengths[i]), frames=frames[i] if i < keep else None,
          judgeable=bool(infos[i]["judgeable"]), grounding_note=infos[i]["grounding_note"],
          wait_steps=int(waits[i]), inferences=int(inferences[i]), **jumps.summary(i), diagnostics=diagnostics[i],
      ))
  return results


class _Jumps:
  """Per env: ‖a_t - a_{t-1}‖ of consecutive executed actions, split into chunk boundaries and the rest."""

  def __init__(self, n: int):
    self.previous: np.ndarray | None = None
    self.started = np.zeros(n, bool)
    self.boundary: list[list[float]] = [[] for _ in range(n)]
    self.interior_sum, self.interior_max = np.zeros(n), np.zeros(n)
    self.interior_steps = np.zeros(n, np.int64)

  def add(self, action: np.ndarray, switched: bool, active: np.ndarray) -> None:
    """action float32 [N, A], executed by the envs where `active` [N] (not yet done)."""
    if self.previous is not None:
      jump = np.linalg.norm(action - self.previous, axis=-1).astype(np.float64)
      measured = active & self.started
      if switched:
        for i in np.flatnonzero(measured):
          self.boundary[i].append(float(jump[i]))
      else:
        self.interior_sum += np.where(measured, jump, 0.0)
        self.interior_max = np.maximum(self.interior_max, np.where(measured, jump, 0.0))
        self.interior_steps += measured
    self.previous = np.array(action, np.float64)
    self.started |= active

  def summary(self, i: int) -> dict[str, Any]:
    return dict(boundary_jumps=self.boundary[i], interior_jump_sum=float(self.interior_sum[i]),
                interior_jump_max=float(self.interior_max[i]), interior_steps=int(self.interior_steps[i]))


def _typed_instructions(override: str | Sequence[str] | None, num_episodes: int) -> list[str] | None:
  """One typed instruction per episode from `instruction_override`, or None (none typed)."""
  if override is None or override == "shuffled":
    return None
  if isinstance(override, str):
    return [override] * num_episodes
  if isinstance(override, (list, tuple)) and all(isinstance(t, str) for t in override):
    if len(override) != num_episodes:
      raise ValueError(f"instruction_override has {len(override)} instructions for {num_episodes} seeds; "
                       "expected one per seed (or one string for all)")
    return list(override)
  raise ValueError(f"instruction_override={override!r} is not valid; expected None, 'shuffled', "
                   "an instruction string or a list of one per seed")


def _derange(items: list[str], same_task: Callable[[int, str], bool] | None = None) -> list[str]:
  """Each item replaced by the next one (cyclically) that asks for a different task.

  same_task(i, text): whether `text` asks for item i's task (in its scene); None = identical texts
  only. Without it, another wording of the same task ("grab" for "lift the red square") would be
  told, and success on it counted as success without the instruction. An item with no different
  one in the list (a batch of one) is kept.
  """
  same = same_task or (lambda i, text: text == items[i])
  out = []
  for i in range(len(items)):
    others = (items[(i + shift) % len(items)] for shift in range(1, len(items)))
    out.append(next((text for text in others if not same(i, text)), items[i]))
  return out


def _same_task_in_scene(tasks: list[str], scenes: Sequence[Any]) -> Callable[[int, str], bool] | None:
  """`_derange`'s same_task for built-in tabletop scenes (grounded among each scene's objects); None
  for other simulators, whose instructions are compared as texts."""
  if not all(isinstance(scene, SceneState) for scene in scenes):
    return None
  return lambda i, text: task_lib.same_task(tasks[i], text, scenes[i].object_names())
