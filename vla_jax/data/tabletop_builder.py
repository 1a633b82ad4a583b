"""Writes scripted-expert tabletop episodes as an RLDS dataset (Open X-Embodiment schema) with TFDS.

Layout on disk: `<data_dir>/<name>/<version>/` (name defaults to "tabletop", version 1.0.0), readable
from any process with `tfds.builder_from_directory(...)`, no network. Splits `train` and `val`
hold episodes from disjoint seeds. Each episode:

  steps/observation/image        uint8 [S, S, 3]  PNG-encoded (lossless; flat colours compress well)
  steps/observation/state        float32 [5]      gripper x, y, closed, grasp contact, push force
  steps/action                   float32 [3]      dx, dy in [-1, 1] (relative); gripper 0/1 (absolute, 1 = close)
  steps/language_instruction     string           the same instruction at every step (as in Bridge)
  steps/reward, discount         float32          reward 1 on the transition that succeeds
  steps/is_first, is_last, is_terminal  bool
  steps/referents/position       float32 [2, 2]   (x, y) table coordinates in [0, 1], x right, y down
                                                  (pixel column, row = x S, y S) of what the instruction
                                                  names: 0 the target object, 1 the goal (push: the
                                                  reference object; place: the region centre)
  steps/referents/valid          bool [2]         False where there is none (the goal of "pick",
                                                  whose position is then 0)
  episode_metadata/{task_family, split, scene_objects: string; seed, expert_seed, episode_index,
                    perturbation_step, slip_step: int64; success: bool}

RLDS step convention: step t holds observation o_t and the action a_t taken from it, and r_t the
reward of that transition. After the last transition one more step holds the final observation
o_T with a "hold still" action (zero motion, gripper unchanged), reward 0, `is_last` and — when the
task was solved — `is_terminal` with discount 0. Episodes therefore have T + 1 steps.
`referents` are privileged simulator labels (`tabletop.referents`) of the scene that step's image
shows, for auxiliary training losses only — never model inputs.

Writing is atomic: TFDS builds into a temporary directory that is renamed only once complete, so
a crash never leaves a dataset that looks finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vla_jax.data import rlds
from vla_jax.envs import tabletop
from vla_jax.envs.expert import TIGHT_PUSH, PushTolerances, ScriptedExpert
from vla_jax.envs.tabletop import ACTION_DIM, NUM_REFERENTS, STATE_DIM, TabletopEnv

VERSION = "1.0.0"
SPLIT_INDEX = {"train": 0, "val": 1}


def episode_seeds(seed: int, split: str, index: int) -> tuple[int, int]:
  """(env seed, expert seed) of episode `index` of a split: disjoint streams per split and index."""
  words = np.random.SeedSequence([seed, SPLIT_INDEX[split], index]).generate_state(2, np.uint32)
  return int(words[0]), int(words[1])


def rollout_episode(
    env: TabletopEnv, expert: ScriptedExpert, env_seed: int, expert_seed: int, family: str
) -> dict[str, Any]:
  """Runs the expert for one episode and returns it in the RLDS layout (numpy, T + 1 steps)."""
  obs, info = env.reset(seed=env_seed, options={"task_family": family})
  expert.reset(env.scene, seed=expert_seed)
  images, states, actions, rewards = [obs["image"]], [obs["state"]], [], []
  # Labels of the scene each image was rendered from (taken right after reset / step, like obs).
  referents = [tabletop.referents(env.scene)]
  success = False
  perturbation_step = slip_step = -1
  while True:
    action = expert.act(env.scene)  # The label: what the expert means to do here.
    executed = expert.perturb(env.scene, action)
    if expert.last_perturbation == "close":
      perturbation_step = len(actions)
    elif expert.last_perturbation == "slip" and slip_step < 0:
      slip_step = len(actions)
    obs, reward, terminated, truncated, _ = env.step(executed)
    actions.append(action)
    rewards.append(reward)
    images.append(obs["image"])
    states.append(obs["state"])
    referents.append(tabletop.referents(env.scene))
    if terminated or truncated:
      success = bool(terminated)
      break
  hold = np.array([0.0, 0.0, actions[-1][2]], np.float32)
  actions.append(hold)
  rewards.append(0.0)
  n = len(images)
  is_last = np.zeros(n, bool)
  is_last[-1] = True
  is_terminal = is_last & success
  steps = {
      "observation": {"image": np.stack(images), "state": np.stack(states).astype(np.float32)},
      "action": np.stack(actions).astype(np.float32),
      "language_instruction": [info["instruction"]] * n,
      "reward": np.asarray(rewards, np.float32),
      "discount": np.where(is_terminal, 0.0, 1.0).astype(np.float32),
      "is_first": np.arange(n) == 0,
      "is_last": is_last,
      "is_terminal": is_terminal,
      "referents": {
          "position": np.stack([p for p, _ in referents]).astype(np.float32),
          "valid": np.stack([v for _, v in referents]),
      },
  }
  metadata = {
      "task_family": family,
      "split": env.split,
      "scene_objects": info["scene_objects"],
      "seed": env_seed,
      "expert_seed": expert_seed,
      "perturbation_step": perturbation_step,
      "slip_step": slip_step,
      "success": success,
  }
  return {"steps": steps, "episode_metadata": metadata}


SLIP_KEYS = ("slip_prob", "slip_steps", "slip_angle", "slip_after")  # Absent in older configs: no slips.


def make_expert(config: ml_collections.ConfigDict) -> ScriptedExpert:
  """The generation config's expert. Configs of older datasets lack `mistake_*` (no recovery demos)
  and `push` (the tight push strategy, `TIGHT_PUSH`): they get the expert that wrote them."""
  e = config.expert
  push = TIGHT_PUSH
  if "push" in e:
    known = {f.name for f in dataclasses.fields(PushTolerances)}
    if set(e.push) != known:
      raise ValueError(f"config.expert.push has keys {sorted(e.push)}; expected {sorted(known)}")
    push = PushTolerances(**e.push.to_dict())
  return ScriptedExpert(noise_std=e.noise_std, speed_range=tuple(e.speed_range),
                        mistake_prob=e.get("mistake_prob", 0.0),
                        mistake_distance=tuple(e.get("mistake_distance", (0.06, 0.3))), push=push,
                        **{k: e[k] for k in SLIP_KEYS if k in e})


def generate_episodes(config: ml_collections.ConfigDict, split: str, progress: bool = True) -> Iterator[tuple[int, dict]]:
  """Yields (key, episode) for a split: `num_<split>_episodes` successful expert demos.

  Families follow `family_schedule` (equal shares by cycling through them, unless the config's
  `family_weights` say otherwise). Failed demos (rare) are skipped unless `keep_failures`, so the
  dataset holds exactly the requested number of episodes.
  """
  count = config[f"num_{split}_episodes"]
  env = TabletopEnv(**config.env.to_dict())
  expert = make_expert(config)
  schedule = family_schedule(env.families, config.get("family_weights"), count)
  written, index = 0, 0
  with tqdm.tqdm(total=count, desc=f"{config.name}/{split}", unit="ep", disable=not progress) as bar:
    while written < count:
      if index >= 10 * count + 100:
        raise RuntimeError(f"the expert failed too often: {written} successes in {index} episodes")
      env_seed, expert_seed = episode_seeds(config.seed, split, index)
      family = schedule[written]
      episode = rollout_episode(env, expert, env_seed, expert_seed, family)
      episode["episode_metadata"]["episode_index"] = index
      index += 1
      if episode["episode_metadata"]["success"] or config.keep_failures:
        yield index - 1, episode
        written += 1
        bar.update(1)


def family_schedule(families: Sequence[str], weights: Mapping[str, float] | None, count: int) -> list[str]:
  """The task family of each of `count` episodes: shares proportional to `weights` (None = equal).

  Deterministic and interleaved (each next episode goes to the family furthest below its share),
  so any prefix of a dataset has the intended mix, and equal weights give the plain cycle
  place, push, pick, place, … of datasets written before the weights existed.
  """
  if weights is None:
    weights = {f: 1.0 for f in families}
  weights = dict(weights.to_dict() if hasattr(weights, "to_dict") else weights)
  unknown = sorted(set(weights) - set(families))
  if unknown:
    raise ValueError(f"config.family_weights names {unknown}, which config.env.task_family does not "
                     f"generate; expected keys among {list(families)}")
  for f, w in weights.items():
    if not isinstance(w, (int, float)) or not w >= 0:
      raise ValueError(f"config.family_weights.{f}={w!r} is not valid; expected a number >= 0")
  active = [f for f in families if weights.get(f, 0) > 0]
  if not active:
    raise ValueError(f"config.family_weights={weights} gives no family a positive weight")
  done = {f: 0 for f in active}
  schedule = []
  for _ in range(count):
    family = min(active, key=lambda f: (done[f] + 1) / weights[f])  # Ties: the env's family order.
    done[family] += 1
    schedule.append(family)
  return schedule


def features(image_size: int) -> tfds.features.FeaturesDict:
  steps = rlds.step_features(
      images={"image": tfds.features.Image(shape=(image_size, image_size, 3), dtype=np.uint8, encoding_format="png",
                                           doc="Top-down RGB camera.")},
      state_key="state", state_dim=STATE_DIM,
      action=tfds.features.Tensor(shape=(ACTION_DIM,), dtype=np.float32,
                                  doc="dx, dy in [-1, 1] (x MAX_STEP table units); gripper 1 = close, 0 = open."),
      num_referents=NUM_REFERENTS,
      docs={
          "state": ", ".join(tabletop.STATE_NAMES),
          "referents/position": (
              "(x, y) table coordinates in [0, 1] (x right, y down; pixel = u * image size) of "
              "the instruction's referents in this step's image: 0 = target object, 1 = goal "
              "(push: reference object, place: region centre). Privileged simulator labels for "
              "auxiliary losses only, never model inputs."),
          "referents/valid": "False where a referent does not exist (the goal of 'pick'); its position is 0.",
          "referents": "Privileged simulator labels for auxiliary losses only, never model inputs.",
      })
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset(steps),
      "episode_metadata": tfds.features.FeaturesDict({
          "task_family": tfds.features.Text(),
          "split": tfds.features.Text(),
          "scene_objects": tfds.features.Text(),
          "seed": tfds.features.Scalar(dtype=np.int64),
          "expert_seed": tfds.features.Scalar(dtype=np.int64),
          "episode_index": tfds.features.Scalar(dtype=np.int64),
          "perturbation_step": tfds.features.Scalar(
              dtype=np.int64, doc="Step whose executed action was the expert's deliberate premature "
                                  "gripper close (its recorded action is the intended one); -1: none."),
          "slip_step": tfds.features.Scalar(
              dtype=np.int64, doc="First of the push-slip steps, whose executed motion was turned off "
                                  "the push line (recorded actions are the intended ones); -1: none."),
          "success": tfds.features.Scalar(dtype=np.bool_),
      }),
  })


class Tabletop(tfds.core.GeneratorBasedBuilder):
  """RLDS episodes of the scripted expert in the built-in tabletop simulator."""

  VERSION = tfds.core.Version(VERSION)

  @tfds.core.utils.classproperty
  @classmethod
  def _checksums_path(cls):
    # Nothing is downloaded. TFDS would otherwise look for a checksums file beside this module,
    # which needs `importlib_resources` and is meaningless for a generated dataset.
    return None

  def __init__(self, *, gen_config: ml_collections.ConfigDict, progress: bool = True, **kwargs):
    self.gen_config = gen_config
    self.progress = progress
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=features(self.gen_config.env.image_size),
        disable_shuffling=True,  # Keep episodes in seed order: reproducible and easy to audit.
        metadata=tfds.core.MetadataDict(generation_config=self.gen_config.to_dict()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(split) for split in SPLIT_INDEX}

  def _generate_examples(self, split: str):
    yield from generate_episodes(self.gen_config, split, progress=self.progress)


def builder_class(name: str) -> type[Tabletop]:
  """The builder class for a dataset name (TFDS takes the on-disk name from the class)."""
  if name == Tabletop.name:
    return Tabletop
  with tfds.core.registered.skip_registration():
    return type(f"Tabletop_{name}", (Tabletop,), {"name": name})


def dataset_dir(config: ml_collections.ConfigDict) -> Path:
  return Path(config.data_dir) / config.name / VERSION


def is_complete(path: Path) -> bool:
  """A finished TFDS dataset directory has its dataset_info.json (written last, then renamed in)."""
  return (Path(path) / "dataset_info.json").is_file()


def remove_stale_temp_dirs(root: Path, name: str) -> None:
  for tmp in root.glob(f".tmp-{name}-*"):
    pid = int(tmp.name.rsplit("-", 2)[-2]) if tmp.name.rsplit("-", 2)[-2].isdigit() else -1
    try:
      os.kill(pid, 0)  # Still running: another writer's temp dir, leave it.
    except (OSError, ValueError):
      shutil.rmtree(tmp, ignore_errors=True)


def config_differences(path: Path, config: ml_collections.ConfigDict) -> list[str]:
  """Generation-config keys (dotted) whose value in the finished dataset at `path` differs from
  `config`, e.g. ["expert.mistake_prob", "num_train_episodes"]; `data_dir` is ignored.

  A dataset is a pure function of its generation config, so any difference means it is stale
  (e.g. written by an older version of the default config).
  """
  stored = json.loads((Path(path) / "metadata.json").read_text()).get("generation_config", {})

  def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out

  a, b = flat(stored), flat(json.loads(json.dumps(config.to_dict(), default=list)))
  return sorted(k for k in set(a) | set(b) if k != "data_dir" and a.get(k) != b.get(k))


def write_dataset(config: ml_collections.ConfigDict, overwrite: bool = False, progress: bool = True) -> Path:
  """Generates the dataset described by `config` and returns its directory.

  Raises FileExistsError if a finished dataset is there and `overwrite` is False. The new dataset
  is built in a temporary directory and swapped in only when complete.
  """
  validate_config(config)
  final = dataset_dir(config)
  if is_complete(final) and not overwrite:
    raise FileExistsError(f"{final} already holds a finished dataset; pass overwrite=True (--overwrite) to replace it")
  root = Path(config.data_dir)
  root.mkdir(parents=True, exist_ok=True)
  remove_stale_temp_dirs(root, config.name)
  tmp_root = root / f".tmp-{config.name}-{os.getpid()}-{int(time.time())}"
  try:
    builder = builder_class(config.name)(gen_config=config, progress=progress, data_dir=str(tmp_root))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    built = tmp_root / config.name / VERSION
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if final.exists():
      trash = final.with_name(f".trash-{VERSION}-{os.getpid()}")
      final.rename(trash)
    built.rename(final)
    if trash is not None:
      shutil.rmtree(trash, ignore_errors=True)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return final


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a generation config before any work, with errors that name the key."""
  for key in ("num_train_episodes", "num_val_episodes"):
    if not isinstance(config[key], int) or config[key] < 0:
      raise ValueError(f"config.{key}={config[key]!r} is not valid; expected an int >= 0")
  if not config.name or "/" in config.name or config.name.startswith("."):
    raise ValueError(f"config.name={config.name!r} is not valid; expected a plain directory name")
  # Building the env and expert validates their arguments (and names the bad one).
  env = TabletopEnv(**config.env.to_dict())
  make_expert(config)
  family_schedule(env.families, config.get("family_weights"), 0)
  if config.env.max_episode_steps > 100:
    raise ValueError(f"config.env.max_episode_steps={config.env.max_episode_steps} is not valid; episodes are <= 100 steps")


def load_summary(path: str | Path) -> dict[str, Any]:
  """Reads a finished dataset back (images not decoded) and summarises it for people and tests."""
  path = Path(path)
  if not is_complete(path):
    raise FileNotFoundError(f"{path} is not a finished TFDS dataset (no dataset_info.json)")
  builder = tfds.builder_from_directory(str(path))
  decoders = {"steps": {"observation": {"image": tfds.decode.SkipDecoding()}}}
  summary: dict[str, Any] = {
      "path": str(path),
      "name": builder.name,
      "version": str(builder.version),
      "image_shape": list(builder.info.features["steps"]["observation"]["image"].shape),
      "splits": {},
  }
  for split in builder.info.splits:
    ds = builder.as_dataset(split=split, decoders=decoders)
    # Whole episodes as batched tensors, in the tf.data graph (iterating nested step datasets
    # from Python is ~20x slower).
    ds = ds.map(
        lambda ep: {
            "meta": ep["episode_metadata"],
            "instruction": ep["steps"].take(1).get_single_element()["language_instruction"],
            "num_steps": ep["steps"].cardinality(),
        }
    )
    lengths, families, instructions, successes = [], {}, [], 0
    for episode in ds.as_numpy_iterator():
      meta = episode["meta"]
      lengths.append(int(episode["num_steps"]))
      fam = meta["task_family"].decode()
      families[fam] = families.get(fam, 0) + 1
      successes += int(meta["success"])
      if len(instructions) < 3:
        instructions.append(episode["instruction"].decode())
    summary["splits"][split] = {
        "episodes": len(lengths),
        "steps": int(np.sum(lengths)),
        "episode_length_mean": float(np.mean(lengths)) if lengths else 0.0,
        "episode_length_max": int(np.max(lengths)) if lengths else 0,
        "families": families,
        "success_rate": successes / max(1, len(lengths)),
        "example_instructions": instructions,
    }
  return summary

