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
  steps/referents/attributes/position  float32 [2, 6, 2]  every object sharing the target's colour
                                                  (row 0) / shape (row 1), target included
  steps/referents/attributes/valid     bool [2, 6]  False for padding slots
  episode_metadata/{task_family, split, scene_objects: string; seed, expert_seed, episode_index,
                    perturbation_step, slip_step: int64; success: bool}

RLDS step convention: step t holds observation o_t and the action a_t taken from it, and r_t the
reward of that transition. After the last transition one more step holds the final observation
o_T with a "hold still" action (zero motion, gripper unchanged), reward 0, `is_last` and — when the
task was solved — `is_terminal` with discount 0. Episodes therefore have T + 1 steps.
`referents` are privileged simulator labels (`tabletop.referents`) of the scene that step's image
shows, for auxiliary training losses only — never model inputs.

Episodes themselves (expert rollouts, seeds, family shares, the generation config's checks) come
from `tabletop_episodes.py`, which is numpy only; this module is the TFDS writer and reader. The
rollouts run in `config.num_workers` spawned processes while this one encodes and writes; the
dataset is the same for any number of workers (`num_workers` is not stored in its metadata).

Writing is atomic (`rlds_writer.write_atomically`): TFDS builds into a temporary directory that
is renamed only once complete, so a crash never leaves a dataset that looks finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vla_jax.data import rlds, rlds_writer, tabletop_episodes
from vla_jax.data.tabletop_episodes import SPLIT_INDEX, generate_episodes, validate_config
from vla_jax.envs import tabletop
from vla_jax.envs.tabletop import ACTION_DIM, MAX_OBJECTS, NUM_REFERENTS, STATE_DIM

VERSION = "1.0.0"
# The features' layout, stored in the metadata: a finished dataset with another (or none: 1) is
# stale. 2: steps/referents/attributes.
SCHEMA = 2
def features(image_size: int) -> tfds.features.FeaturesDict:
  steps = rlds.step_features(
      images={"image": tfds.features.Image(shape=(image_size, image_size, 3), dtype=np.uint8, encoding_format="png",
                                           doc="Top-down RGB camera.")},
      state_key="state", state_dim=STATE_DIM,
      action=tfds.features.Tensor(shape=(ACTION_DIM,), dtype=np.float32,
                                  doc="dx, dy in [-1, 1] (x MAX_STEP table units); gripper 1 = close, 0 = open."),
      num_referents=NUM_REFERENTS, num_attribute_objects=MAX_OBJECTS,
      docs={
          "state": ", ".join(tabletop.STATE_NAMES),
          "referents/position": (
              "(x, y) table coordinates in [0, 1] (x right, y down; pixel = u * image size) of "
              "the instruction's referents in this step's image: 0 = target object, 1 = goal "
              "(push: reference object, place: region centre). Privileged simulator labels for "
              "auxiliary losses only, never model inputs."),
          "referents/valid": "False where a referent does not exist (the goal of 'pick'); its position is 0.",
          "referents/attributes": (
              "position [2, MAX_OBJECTS, 2] / valid [2, MAX_OBJECTS]: every object sharing the "
              "target's colour (row 0) / shape (row 1), the target included, padded with invalid "
              "slots (tabletop.attribute_referents)."),
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


class Tabletop(rlds_writer.GeneratedBuilder):
  """RLDS episodes of the scripted expert in the built-in tabletop simulator."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, gen_config: ml_collections.ConfigDict, progress: bool = True,
               rollouts: tabletop_episodes.Rollouts | None = None, **kwargs):
    self.gen_config = gen_config
    self.progress = progress
    self.rollouts = rollouts  # `tabletop_episodes.rollout_workers`, shared by the splits.
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=features(self.gen_config.env.image_size),
        disable_shuffling=True,  # Keep episodes in seed order: reproducible and easy to audit.
        metadata=tfds.core.MetadataDict(generation_config=stored_generation_config(self.gen_config),
                                        schema=SCHEMA),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(split) for split in SPLIT_INDEX}

  def _generate_examples(self, split: str):
    yield from generate_episodes(self.gen_config, split, progress=self.progress, rollouts=self.rollouts)


def dataset_dir(config: ml_collections.ConfigDict) -> Path:
  return Path(config.data_dir) / config.name / VERSION


# Keys that say where and how a dataset is written, not what it holds.
NOT_GENERATION_KEYS = ("data_dir", "num_workers")


def stored_generation_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The generation config as stored in a dataset's metadata: without `num_workers`, so datasets
  written with different worker counts are identical."""
  return {k: v for k, v in config.to_dict().items() if k != "num_workers"}


def config_differences(path: Path, config: ml_collections.ConfigDict) -> list[str]:
  """Generation-config keys (dotted) whose value in the finished dataset at `path` differs from
  `config`, e.g. ["expert.mistake_prob", "num_train_episodes"]; `NOT_GENERATION_KEYS` (`data_dir`,
  `num_workers`) are ignored. "schema" when the dataset was written with another feature layout
  (`SCHEMA`, e.g. before the attribute labels existed).

  A dataset is a pure function of its generation config and the writer's schema, so any
  difference means it is stale (e.g. written by an older version of the default config).
  """
  metadata = json.loads((Path(path) / "metadata.json").read_text())
  stored = metadata.get("generation_config", {})

  def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out

  a, b = flat(stored), flat(json.loads(json.dumps(config.to_dict(), default=list)))
  stale = sorted(k for k in set(a) | set(b) if k not in NOT_GENERATION_KEYS and a.get(k) != b.get(k))
  return stale + (["schema"] if metadata.get("schema", 1) != SCHEMA else [])


def write_dataset(config: ml_collections.ConfigDict, overwrite: bool = False, progress: bool = True) -> Path:
  """Generates the dataset described by `config` and returns its directory.

  Raises FileExistsError if a finished dataset is there and `overwrite` is False. The new dataset
  is built in a temporary directory and swapped in only when complete (`rlds_writer`).
  """
  validate_config(config)
  builder = rlds_writer.named(Tabletop, config.name)
  # Workers start here, so they boot while TFDS sets up (and imports TensorFlow) in this process.
  with tabletop_episodes.rollout_workers(config) as rollouts:
    return rlds_writer.write_atomically(
        lambda tmp_dir: builder(gen_config=config, progress=progress, rollouts=rollouts, data_dir=tmp_dir),
        config.data_dir, config.name, VERSION, overwrite)


def load_summary(path: str | Path) -> dict[str, Any]:
  """Reads a finished dataset back (images not decoded) and summarises it for people and tests."""
  path = Path(path)
  if not rlds_writer.is_complete(path):
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

