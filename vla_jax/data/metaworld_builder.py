"""Writes Meta-World scripted-expert episodes as an RLDS dataset, in the built-in dataset's schema.

Same layout, step convention and tools as `tabletop_builder` (read it first): `<data_dir>/<name>/1.0.0`,
splits `train` / `val` from disjoint seeds, T + 1 steps per episode (the last holds the final
observation and a "hold still" action), atomic writes, `tabletop_builder.load_summary` and
`config_differences` work on it. Each episode:

  steps/observation/image        uint8 [S, S, 3]  PNG, the upright `camera` view (`envs.metaworld`)
  steps/observation/image_<name> uint8 [S, S, 3]  PNG, one per `env.extra_cameras` (e.g. image_wrist)
  steps/observation/state        float32 [4]      end-effector x, y, z (m) and gripper opening (0..1)
  steps/observation/env_state    float32 [39]     Meta-World's full state with the goal (state-based
                                                  policies, perfect-perception diagnostics)
  steps/referents/{position [2C, 2], valid [2C]}  the task's object and goal in each of the C views'
                                                  frames (`MetaWorldEnv.referents`; camera-major, the
                                                  primary first): labels for the auxiliary referent
                                                  loss, never policy inputs
  steps/action                   float32 [4]      the expert's dx, dy, dz, grip effort, clipped to [-1, 1]
  steps/language_instruction     string           a training phrasing of the task (`metaworld_tasks`)
  steps/reward, discount, is_first, is_last, is_terminal
  episode_metadata/{task_family (the task, e.g. "push-v3"), difficulty, split: string;
                    seed, episode_index: int64; success: bool}

Coverage: the executed motion is the expert's plus Gaussian noise (`expert.noise_std`, on dx, dy,
dz), while the recorded action is the clean expert action — the demos show recovering from the
small errors a cloned policy makes. Only successful demos are kept (some experts fail now and then,
more so under noise); each task gets exactly `episodes_per_task` of them.

Episodes are rolled out by `worker_pool.ordered_map` in `num_workers` spawned processes (MuJoCo and
TensorFlow in one forked process do not mix; 1 = in this process) and written in job order, so a
config always writes the same dataset.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vla_jax.data import rlds, rlds_writer, worker_pool
from vla_jax.envs import metaworld_tasks
# Constants only: the module imports MuJoCo when an env is made, which happens in the workers.
from vla_jax.envs.metaworld import ACTION_DIM, CAMERA_NAMES, ENV_STATE_DIM, REFERENT_NAMES, STATE_DIM

VERSION = "1.0.0"
SPLIT_INDEX = {"train": 0, "val": 1}


def episode_seed(seed: int, split: str, task: str, index: int) -> int:
  """The env seed of attempt `index` at `task` in `split`: disjoint streams per split, task and attempt."""
  task_index = metaworld_tasks.MT50.index(task)
  return int(np.random.SeedSequence([seed, SPLIT_INDEX[split], task_index, index]).generate_state(1, np.uint32)[0])


def rollout_episode(env: Any, seed: int, noise_std: float, index: int, split: str) -> dict[str, Any]:
  """Runs the expert for one episode in a `MetaWorldEnv`; returns it in the RLDS layout (numpy)."""
  rng = np.random.default_rng(seed)
  obs, info = env.reset(seed, {"phrasing": index})
  images, states, actions, rewards = [obs["image"]], [obs["state"]], [], []
  extra_keys = [k for k in obs if k.startswith("image_")] + ["env_state"]
  extra = {k: [obs[k]] for k in extra_keys}
  referents = [referent_labels(env)]  # Labels of the state each frame was rendered from.
  success = False
  while True:
    label = np.clip(env.expert_action(), -1.0, 1.0)
    executed = label.copy()
    executed[:3] += rng.normal(0.0, noise_std, 3).astype(np.float32)
    obs, reward, terminated, truncated, _ = env.step(np.clip(executed, -1.0, 1.0))
    actions.append(label)
    rewards.append(float(terminated))  # Sparse: 1 on the transition that succeeds (Meta-World's is shaped).
    images.append(obs["image"])
    states.append(obs["state"])
    for k in extra_keys:
      extra[k].append(obs[k])
    referents.append(referent_labels(env))
    if terminated or truncated:
      success = bool(terminated)
      break
  steps = rlds.episode_steps(images, states, actions, rewards, np.array([0.0, 0.0, 0.0, actions[-1][3]], np.float32),
                             info["instruction"], success, extra_observations=extra)
  steps["referents"] = {k: np.stack([r[k] for r in referents]) for k in ("position", "valid")}
  metadata = {"task_family": env.task, "difficulty": metaworld_tasks.difficulty(env.task), "split": split,
              "seed": seed, "episode_index": index, "success": success}
  return {"steps": steps, "episode_metadata": metadata}


def referent_labels(env: Any) -> dict[str, np.ndarray]:
  """The object and goal in every view the env renders, camera-major: {position float32 [2C, 2],
  valid bool [2C]}, rows 2c, 2c + 1 camera c's (the primary first, then `env.extra_cameras`)."""
  views = [env.referents(c) for c in (env.camera, *env.extra_cameras)]
  return {k: np.concatenate([v[k] for v in views]) for k in ("position", "valid")}


def _episode_worker(env_kwargs: dict[str, Any], noise_std: float):
  """Builds a worker process's episode function (`worker_pool.ordered_map`'s make_worker): one
  env per task, made on the task's first episode and kept."""
  from vla_jax.envs.metaworld import MetaWorldEnv  # Here: with worker processes, MuJoCo loads only in them.

  envs: dict[str, Any] = {}

  def run(job: tuple[str, str, int, int]) -> dict[str, Any]:
    task, split, index, seed = job
    if task not in envs:
      envs[task] = MetaWorldEnv(task, split="train", **env_kwargs)
    # Val episodes are told training phrasings too (held-out phrasings are for closed-loop evaluation).
    return rollout_episode(envs[task], seed, noise_std, index, split)

  return run


def generate_episodes(config: ml_collections.ConfigDict, split: str, progress: bool = True) -> Iterator[tuple[str, dict]]:
  """Yields (key, episode): the first `<split>_episodes_per_task` successful demos of each task.

  Attempts run in rounds: each round asks, for every task still short, for its missing count plus
  a margin; results arrive in submission order, so which attempts are kept does not depend on
  process timing.
  """
  tasks = metaworld_tasks.resolve_tasks(config.tasks)
  wanted = int(config[f"{split}_episodes_per_task"])
  kept = {t: 0 for t in tasks}
  attempts = {t: 0 for t in tasks}
  make_worker = functools.partial(_episode_worker, config.env.to_dict(), float(config.expert.noise_std))
  with tqdm.tqdm(total=wanted * len(tasks), desc=f"{config.name}/{split}", unit="ep", disable=not progress) as bar, \
      worker_pool.ordered_map(make_worker, int(config.num_workers)) as run_jobs:
    while any(kept[t] < wanted for t in tasks):
      jobs = []
      for t in tasks:
        missing = wanted - kept[t]
        if missing <= 0:
          continue
        if attempts[t] >= 3 * wanted + 20:
          raise RuntimeError(f"the {t} expert failed too often: {kept[t]} successes in {attempts[t]} episodes "
                             f"(config.expert.noise_std={config.expert.noise_std}, "
                             f"config.env.max_episode_steps={config.env.max_episode_steps})")
        extra = missing + max(1, missing // 5)
        jobs += [(t, split, attempts[t] + i, episode_seed(config.seed, split, t, attempts[t] + i)) for i in range(extra)]
        attempts[t] += extra
      for (t, _, index, _), episode in zip(jobs, run_jobs(jobs)):
        if kept[t] < wanted and (episode["episode_metadata"]["success"] or config.keep_failures):
          kept[t] += 1
          bar.update(1)
          yield f"{t}_{index}", episode
      bar.set_postfix(attempts=sum(attempts.values()))


def features(image_size: int, extra_cameras: tuple[str, ...] = ()) -> tfds.features.FeaturesDict:
  image = lambda doc: tfds.features.Image(shape=(image_size, image_size, 3), dtype=np.uint8, encoding_format="png",
                                          doc=doc)
  steps = rlds.step_features(
      images={"image": image("RGB of the primary camera (vla_jax.envs.metaworld), upright."),
              **{f"image_{CAMERA_NAMES[c]}": image(f"RGB of Meta-World's {c!r} camera, upright.") for c in extra_cameras}},
      state_key="state", state_dim=STATE_DIM,
      extra_observations={"env_state": tfds.features.Tensor(
          shape=(ENV_STATE_DIM,), dtype=np.float32,
          doc="Meta-World's 39-d state observation, goal included (never a pixel policy's input).")},
      num_referents=len(REFERENT_NAMES) * (1 + len(extra_cameras)),
      action=tfds.features.Tensor(shape=(ACTION_DIM,), dtype=np.float32,
                                  doc="dx, dy, dz in [-1, 1] (x 1 cm mocap motion); grip effort in [-1, 1], +1 = close."),
      docs={"state": "end-effector x, y, z (m, world frame), gripper opening (0 closed .. 1 open)",
            "referents": "The task's object and goal in each camera's upright frame "
                         "(MetaWorldEnv.referents), camera-major: rows 2c, 2c+1 are camera c's "
                         "(the primary first, then env.extra_cameras); auxiliary training labels only.",
            "referents/position": "(x, y) in [0, 1] image units, x right, y down; 0 where invalid.",
            "referents/valid": "False out of view, and for the reach tasks' object (they have none)."})
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset(steps),
      "episode_metadata": tfds.features.FeaturesDict({
          "task_family": tfds.features.Text(doc="The Meta-World task, e.g. push-v3."),
          "difficulty": tfds.features.Text(doc="easy | medium | hard | very_hard (Seo et al. 2022)."),
          "split": tfds.features.Text(),
          "seed": tfds.features.Scalar(dtype=np.int64),
          "episode_index": tfds.features.Scalar(dtype=np.int64, doc="The attempt's index within its task."),
          "success": tfds.features.Scalar(dtype=np.bool_),
      }),
  })


class MetaWorld(rlds_writer.GeneratedBuilder):
  """RLDS episodes of Meta-World's scripted experts, from pixels, with language."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, gen_config: ml_collections.ConfigDict, progress: bool = True, **kwargs):
    self.gen_config = gen_config
    self.progress = progress
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0],
        features=features(self.gen_config.env.image_size, tuple(self.gen_config.env.extra_cameras)),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(generation_config=self.gen_config.to_dict()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLIT_INDEX}

  def _generate_examples(self, split: str):
    yield from generate_episodes(self.gen_config, split, progress=self.progress)


def dataset_dir(config: ml_collections.ConfigDict) -> Path:
  return Path(config.data_dir) / config.name / VERSION


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a generation config before any process starts, with errors that name the key."""
  for key in ("train_episodes_per_task", "val_episodes_per_task", "num_workers"):
    if not isinstance(config[key], int) or config[key] < 0:
      raise ValueError(f"config.{key}={config[key]!r} is not valid; expected an int >= 0")
  if not config.name or "/" in config.name or config.name.startswith("."):
    raise ValueError(f"config.name={config.name!r} is not valid; expected a plain directory name")
  metaworld_tasks.resolve_tasks(config.tasks)
  if not config.expert.noise_std >= 0:
    raise ValueError(f"config.expert.noise_std={config.expert.noise_std!r} is not valid; expected >= 0")
  from vla_jax.envs import metaworld

  metaworld.import_metaworld()  # Fails here, once, if Meta-World or a GL backend is missing.
  metaworld.check_cameras(config.env.camera, config.env.extra_cameras, where="config.env.")


def write_dataset(config: ml_collections.ConfigDict, overwrite: bool = False, progress: bool = True) -> Path:
  """Generates the dataset `config` describes (built in a temporary directory, then swapped in)."""
  validate_config(config)
  builder = rlds_writer.named(MetaWorld, config.name)
  return rlds_writer.write_atomically(
      lambda tmp_dir: builder(gen_config=config, progress=progress, data_dir=tmp_dir),
      config.data_dir, config.name, VERSION, overwrite)
