"""Closed-loop evaluation on Meta-World: success per task and difficulty group, per condition.

The same harness as the built-in suite (`rollout.run_episodes`, its chunk execution and delays,
Wilson intervals, GIFs, summary.json / results.md), with Meta-World's vector env. Conditions, all
on the same scene seeds per task (paired comparisons):
  seen                a training phrasing of the task, new scenes (seeds disjoint from the data's);
  heldout_paraphrase  the task's held-out phrasing (`envs.metaworld_tasks`), never in training;
  language_blind      the instruction of another task of the suite — the gap to "seen" is how much
                      success comes from reading the instruction rather than recognising the scene.
Groups are Seo et al.'s difficulty groups, over the tasks evaluated (MT10 has no "very_hard").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict
import numpy as np

from vla_jax.envs import metaworld_tasks
from vla_jax.evaluation import metrics, rollout

CONDITIONS: dict[str, str] = {"seen": "train", "heldout_paraphrase": "heldout_paraphrase", "language_blind": "train"}


def eval_config(episodes_per_task: int = 50, tasks: str | Sequence[str] = "MT10") -> ml_collections.ConfigDict:
  """Evaluation settings (the `eval` section of experiments/configs/metaworld.py)."""
  c = ml_collections.ConfigDict()
  c.env = "metaworld"  # `evaluate.evaluate` dispatches on it (absent = the built-in tabletop).
  c.tasks = tuple(metaworld_tasks.resolve_tasks(tasks))
  c.episodes_per_task = episodes_per_task
  c.conditions = tuple(CONDITIONS)
  c.num_envs = 25  # Episodes of one task stepped together (one policy call for all).
  # Processes stepping them, in parallel; > 0 is required where TensorFlow is loaded (training,
  # experiments.evaluate): see envs.metaworld.VectorMetaWorldEnv.
  c.num_workers = 2
  c.max_episode_steps = 200  # Experts succeed within ~130 steps; failures cost the full 200.
  c.image_size = 96
  c.camera = "corner4"
  # Degrees; None = the camera's own. Must match the data's (metaworld_data.py: env.camera_fovy).
  c.camera_fovy = config_dict.placeholder(float)
  c.extra_cameras = ()  # More views (e.g. ("gripperPOV",)); must match the data's env.extra_cameras.
  c.strategy = "sync"  # Chunk execution, as `evaluate.eval_config` documents.
  c.execute_steps = 2
  c.ensemble_decay = 0.0
  c.delay = 0
  c.delay_distribution = ()
  c.seed = 2_000_000  # Scene seeds: seed + task_index (in MT50) * 100_000 + episode.
  c.videos_per_family = 1  # GIFs of the first episodes of each task per condition in `videos_for`.
  c.videos_for = ("seen",)
  return c


# Eval keys that must equal the data's `env` keys.
VIEW_KEYS = ("image_size", "camera", "camera_fovy", "extra_cameras")


def _view_value(key: str, value: Any) -> Any:
  """Comparable form: camera lists as tuples (JSON stores lists), absent extra cameras as none."""
  return tuple(value or ()) if key == "extra_cameras" else value


def check_view_matches_data(config: ml_collections.ConfigDict, run_config_path: str | Path) -> None:
  """Refuses to evaluate a run on another camera view than its Meta-World training data's.

  run_config_path: the run's config.json (training saves it); its datasets' generation configs
  (`<builder_dir>/metadata.json`) say what the policy saw. Datasets that are missing, or not
  Meta-World's (no `env.camera`), are not checked; nor are the views of a policy that reads none, or
  the extra views of a one-camera policy. An older dataset without `camera_fovy` had the camera's own
  field of view (None), one without `extra_cameras` no more views.
  """
  path = Path(run_config_path)
  if not path.exists():
    return
  run = json.loads(path.read_text())
  cameras = (run.get("model") or {}).get("cameras", ["primary"])
  if not cameras:
    return  # A state-only policy reads no view.
  # Extra views matter to a policy that reads them (a one-camera policy may come from data with more).
  keys = VIEW_KEYS if len(cameras) > 1 else tuple(k for k in VIEW_KEYS if k != "extra_cameras")
  for spec in run["data"]["datasets"].values():
    metadata = Path(spec["builder_dir"]) / "metadata.json"
    if not metadata.exists():
      continue
    env = json.loads(metadata.read_text()).get("generation_config", {}).get("env", {})
    if "camera" not in env:
      continue
    for key in keys:
      if _view_value(key, env.get(key)) != _view_value(key, config.get(key)):
        raise ValueError(f"eval.{key}={config.get(key)!r}, but the policy was trained on {metadata.parent} "
                         f"rendered with env.{key}={env.get(key)!r} ({metadata}); evaluate with "
                         f"--config.eval.{key}=\"{_view_value(key, env.get(key))!r}\" or regenerate the data")


class ExpertPolicy:
  """Meta-World's scripted experts through the harness (privileged: they read each scene's raw state)."""

  action_horizon = 1

  def __init__(self) -> None:
    from vla_jax.envs.metaworld import import_metaworld

    self.policy_map = import_metaworld().policies.ENV_POLICY_MAP
    self.experts: list[Any] = []

  def reset(self, instructions, scenes):
    self.experts = [self.policy_map[s.family]() for s in scenes]

  def observe(self, obs):
    pass

  def __call__(self, obs, scenes):
    actions = [np.clip(e.get_action(s.raw_obs), -1, 1) for e, s in zip(self.experts, scenes)]
    return np.stack(actions).astype(np.float32)[:, None, :]


class _EnvPool:
  """The current task's vector env, kept across its batches and conditions (building an env costs
  ~0.4 s) and closed when the next task starts: each keeps `num_workers` processes holding a
  renderer per env (~2 GB per worker at 25 envs), so keeping every task's would grow with the suite
  (MT10 filled 24 GB)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.envs: dict[str, Any] = {}

  def vector(self, task: str, split: str, n: int):
    from vla_jax.envs.metaworld import VectorMetaWorldEnv

    if task not in self.envs:
      self.close()
      size = min(self.config.num_envs, self.config.episodes_per_task)
      self.envs[task] = VectorMetaWorldEnv(
          size, task, num_workers=self.config.num_workers, image_size=self.config.image_size,
          camera=self.config.camera, camera_fovy=self.config.get("camera_fovy"),
          extra_cameras=tuple(self.config.get("extra_cameras", ())), max_episode_steps=self.config.max_episode_steps)
    venv = self.envs[task]
    if n > venv.capacity:
      raise ValueError(f"a batch of {n} episodes for a vector env of {venv.capacity}")
    venv.split = split
    return venv

  def close(self) -> None:
    for venv in self.envs.values():
      venv.close()
    self.envs.clear()


def blind_instructions(task: str, tasks: Sequence[str], count: int) -> list[str]:
  """`count` training phrasings of the suite's other tasks, cycling through them (language-blind)."""
  others = [t for t in tasks if t != task] or [t for t in metaworld_tasks.MT50 if t != task]
  return [metaworld_tasks.instruction(others[i % len(others)], "train", i // len(others)) for i in range(count)]


def evaluate(policy: Any, config: ml_collections.ConfigDict, execution: dict[str, Any],
             progress: bool = False) -> dict[str, Any]:
  """Runs every (condition, task); returns the summary `evaluate.write_artifacts` writes.

  execution: `rollout.run_episodes` chunk-execution arguments (`evaluate.execution_kwargs`).
  """
  for name in config.conditions:
    if name not in CONDITIONS:
      raise ValueError(f"eval condition {name!r} is not valid for Meta-World; expected some of {list(CONDITIONS)}")
  tasks = metaworld_tasks.resolve_tasks(config.tasks)
  summary = metrics.new_summary(suite="metaworld")
  jobs = [(c, t) for t in tasks for c in config.conditions]  # Task-major: one task's envs alive at a time.
  pool = _EnvPool(config)
  bar = None
  if progress:
    import tqdm

    bar = tqdm.tqdm(total=len(jobs) * config.episodes_per_task, desc="Meta-World eval", unit="ep")
  try:
    for condition, task in jobs:
      split = CONDITIONS[condition]
      seeds = [config.seed + metaworld_tasks.MT50.index(task) * 100_000 + i for i in range(config.episodes_per_task)]
      override = blind_instructions(task, tasks, len(seeds)) if condition == "language_blind" else None
      record = config.videos_per_family if condition in config.videos_for else 0
      results = rollout.run_episodes(
          policy, seeds, family=task, split=split, num_envs=config.num_envs, image_size=config.image_size,
          max_episode_steps=config.max_episode_steps, record_frames=record, instruction_override=override,
          make_env=lambda n, task=task, split=split: pool.vector(task, split, n), **execution)
      metrics.add_results(summary, condition, task, results)
      if bar is not None:
        bar.update(len(results))
  finally:
    pool.close()
    if bar is not None:
      bar.close()
  for name, results in metrics.close_conditions(summary).items():
    cond = summary["conditions"][name]
    cond["groups"] = {}
    for group in metaworld_tasks.DIFFICULTY:
      members = [r for r in results if metaworld_tasks.difficulty(r.family) == group]
      if members:
        cond["groups"][group] = metrics.summarise(members)
    # SmolVLA's MT50 headline: the mean of the groups' success rates (not of the episodes).
    cond["group_mean_success_rate"] = float(np.mean([g["success_rate"] for g in cond["groups"].values()]))
    for task, row in cond["families"].items():
      row["failures"] = failure_summary([r for r in results if r.family == task])
  return summary


def failure_summary(results: Sequence[Any]) -> dict[str, Any]:
  """How close one task's failed episodes came (`MetaWorldEnv` diagnostics): {"episodes", and for
  "closest_to_goal_m" (object, or reach's hand, to the goal) and "hand_to_object_m" (the hand's
  closest approach to the task object; reach has none) the median and quartiles over the failures,
  as "<key>_q25" / "<key>_median" / "<key>_q75" (None without failures or values)}."""
  failed = [r.diagnostics for r in results if not r.success and r.diagnostics]
  out: dict[str, Any] = {"episodes": len(failed)}
  for key in ("closest_to_goal_m", "hand_to_object_m"):
    values = [d[key] for d in failed if d.get(key) is not None]
    for name, q in (("q25", 25), ("median", 50), ("q75", 75)):
      out[f"{key}_{name}"] = float(np.percentile(values, q)) if values else None
  return out


def markdown_table(summary: dict[str, Any]) -> str:
  """Tasks and difficulty groups (rows) x conditions (columns): success % [95 % Wilson CI]."""
  conditions = list(summary["conditions"])
  first = summary["conditions"][conditions[0]]
  cell = lambda s: f"{100 * s['success_rate']:.0f} % [{100 * s['ci95_low']:.0f}, {100 * s['ci95_high']:.0f}]"  # noqa: E731
  lines = ["| task | group | " + " | ".join(conditions) + " |", "|---|---|" + "---|" * len(conditions)]
  for task in first["families"]:
    row = [cell(summary["conditions"][c]["families"][task]) for c in conditions]
    lines.append(f"| {task} | {metaworld_tasks.difficulty(task)} | " + " | ".join(row) + " |")
  for group in first["groups"]:
    row = [cell(summary["conditions"][c]["groups"][group]) for c in conditions]
    lines.append(f"| **{group}** | | " + " | ".join(row) + " |")
  lines.append("| **all episodes** | | " + " | ".join(cell(summary["conditions"][c]["overall"]) for c in conditions) + " |")
  lines.append("| **mean of groups** | | " + " | ".join(
      f"{100 * summary['conditions'][c]['group_mean_success_rate']:.1f} %" for c in conditions) + " |")
  n = first["families"][next(iter(first["families"]))]["episodes"]
  lines.append(f"\n{n} episodes per task and condition; success % with a 95 % Wilson interval. "
               "Meta-World v3 (metaworld 3.1.1); published numbers are on v2.")
  lines += ["", f"Failed episodes of `{conditions[0]}`, median [quartiles]: the closest each came to the goal "
            "(Meta-World's per-task `obj_to_target`: the object's distance to the goal, the hand's for reach) and the "
            "closest the hand came to the task object (its reference point is ~3.5 cm from a held puck).", "",
            "| task | failed | closest to goal, cm | hand to object, cm |", "|---|---|---|---|"]
  for task, row in first["families"].items():
    f = row.get("failures") or {"episodes": 0}
    quartiles = lambda key: "" if f.get(key + "_median") is None else (  # noqa: E731
        f"{100 * f[key + '_median']:.1f} [{100 * f[key + '_q25']:.1f}, {100 * f[key + '_q75']:.1f}]")
    cells = [quartiles("closest_to_goal_m"), quartiles("hand_to_object_m")]
    lines.append(f"| {task} | {f['episodes']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
