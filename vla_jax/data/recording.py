"""Records episodes run on the robot (the simulator driven through the policy server) as RLDS data.

Trials become data: every episode a trial runs (`experiments/robot_trial.py`) is written as an
RLDS episode that `tfds.builder_from_directory` reads and the training pipeline trains on
unchanged, next to or mixed with the built-in scripted-expert dataset:

    from vla_jax.data import pipeline, recording, spec
    trials = recording.trial_spec("runs/trials/x/tabletop_trials/1.0.0", name="trials_x")
    config = pipeline.pipeline_config([spec.tabletop_spec(), trials])   # a mixture, or alone

Layout on disk: `<data_dir>/<name>/1.0.0/` (name default "tabletop_trials"), one split `train`
holding every recorded episode in the order they ran (a trial has no held-out part; split by
episode with e.g. `train_split="train[:90%]"` if you need one).

Schema. `steps/` is exactly the built-in dataset's (`tabletop_builder.features`): image, state,
action, language_instruction, reward, discount, is_first / is_last / is_terminal, referents —
with the same RLDS step convention (T executed transitions + one final step holding the last
observation, a "hold still" action and `is_last`; `is_terminal` and discount 0 when the task was
solved). What differs is what the fields mean for a trial:

  steps/action                the action the robot executed: the float32 vector the runner passed
                              to `env.step` (the policy's chunk entry after chunk execution), not a
                              label; the simulator clips dx, dy to [-1, 1] and closes at gripper > 0.5
  steps/language_instruction  what the policy was told (a typed instruction as typed)
  steps/referents             the simulator's labels of the judged task, attributes included (all
                              invalid when a typed instruction named no task in the scene)

`episode_metadata/` holds the built-in fields (task_family, split, scene_objects, seed,
success, episode_index; expert_seed, perturbation_step, slip_step are -1: no expert was involved)
and one more group, `episode_metadata/trial/` (`TRIAL_FIELDS`): the trial's name, the policy
(model id, backend, artifact hash), how it ran (control rate, chunk execution mode), and the
outcome of the run beyond success (deadline misses, per-tick latency and miss flags, per-request
latency, stale replies, starved ticks, judgeable / grounding note of a typed instruction).

Why a separate builder with extended episode metadata rather than new fields in the built-in
schema: datasets already on disk were written with the built-in features, and TFDS reads a
dataset with the features stored beside it, so the built-in schema must stay as it is; the
pipeline reads only the `steps/` keys a spec names (`spec.required_paths`) and passes metadata
through untouched, so extra metadata costs training nothing (tested: `tabletop_spec`-style specs
read trial data, statistics included). The outcome stays beside the episode it describes rather
than in a side file that can drift from the data.

Dataset-level metadata (`metadata.json` beside the data) holds what is common to the whole trial:
the runner's config and the server's metadata.

Writing is atomic (`rlds_writer.write_atomically`, as for every generated dataset), and
an existing dataset is replaced only with `overwrite=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vla_jax.data import spec as spec_lib
from vla_jax.data import rlds, rlds_writer, tabletop_builder
from vla_jax.envs import tabletop
from vla_jax.envs.tabletop import ACTION_DIM, NUM_REFERENTS, STATE_DIM

VERSION = "1.0.0"
DEFAULT_NAME = "tabletop_trials"
SPLIT = "train"

# episode_metadata/trial/<field>: (kind, doc). Kinds: "text", "bool", "int" (int64), "float"
# (float32), and "float[]" / "bool[]" for one value per executed step or request (variable length).
TRIAL_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("text", "The trial's name (its output directory)."),
    "policy_id": ("text", "The server's model_id (checkpoint path and step, or export file)."),
    "policy_backend": ("text", "jax | onnxruntime."),
    "policy_sha256": ("text", "The server's artifact_sha256 (params or ONNX file)."),
    "control_hz": ("float", "The fixed control rate the robot ran at."),
    "chunk_mode": ("text", "Chunk execution: receding | ensemble | async."),
    "execute_steps": ("int", "Chunk entries executed per request (receding)."),
    "typed_instruction": ("bool", "The instruction was typed (not the scene's own template)."),
    "judgeable": ("bool", "False: a typed instruction named no task in the scene (never a success)."),
    "grounding_note": ("text", "How a typed instruction was read, or why it cannot be judged ('' otherwise)."),
    "deadline_misses": ("int", "Ticks whose action was not ready by the tick's deadline."),
    "tick_latency_ms": ("float[]", "Per executed step: observation -> action ready, ms."),
    "deadline_missed": ("bool[]", "Per executed step: the action was late."),
    "request_latency_ms": ("float[]", "Per inference request made in this episode: round trip, ms."),
    "stale_replies_dropped": ("int", "Replies that arrived too late to be used."),
    "starved_ticks": ("int", "Ticks on which no fresh chunk entry was available."),
    "start_time_unix_ms": ("int", "Wall-clock time the episode started, ms since the epoch (int64: TFDS "
                                  "stores floats as float32, which would round it to minutes)."),
    "wall_time_s": ("float", "Duration of the episode, s."),
}
_DEFAULTS = {"text": "", "bool": False, "int": -1, "float": 0.0}


def _feature(kind: str, doc: str) -> Any:
  if kind == "text":
    return tfds.features.Text(doc=doc)
  if kind in ("float[]", "bool[]"):
    return tfds.features.Tensor(shape=(None,), dtype=np.float32 if kind == "float[]" else np.bool_, doc=doc)
  dtype = {"bool": np.bool_, "int": np.int64, "float": np.float32}[kind]
  return tfds.features.Scalar(dtype=dtype, doc=doc)


def trial_features(image_size: int) -> tfds.features.FeaturesDict:
  """The built-in dataset's features (`tabletop_builder.features`) + `episode_metadata/trial/`."""
  base = tabletop_builder.features(image_size)
  trial = tfds.features.FeaturesDict({k: _feature(*v) for k, v in TRIAL_FIELDS.items()},
                                     doc="How the trial ran this episode (vla_jax.data.recording).")
  return tfds.features.FeaturesDict({
      "steps": base["steps"],
      "episode_metadata": tfds.features.FeaturesDict({**dict(base["episode_metadata"].items()), "trial": trial}),
  })


def trial_spec(builder_dir: str | Path, name: str = DEFAULT_NAME, **overrides: Any) -> ml_collections.ConfigDict:
  """The pipeline spec of a trial dataset: the built-in `tabletop_spec` (same keys), one split, and
  any image size (a trial records frames at the size the served policy reads)."""
  return spec_lib.tabletop_spec(str(builder_dir), **{"name": name, "val_split": None, "image_size_px": None,
                                                     **overrides})


# ---- Recording one episode. ------------------------------------------------------------------------


class EpisodeRecorder:
  """Collects one episode as the robot runs it, in the RLDS layout of the built-in dataset.

      recorder = EpisodeRecorder(obs, env.scene)            # o_0, right after reset
      recorder.add(action, obs, reward, env.scene)          # a_t executed from o_t, r_t, then o_{t+1}
      episode = recorder.finish(success=..., metadata={...}, trial={...})

  `scene` is the simulator state the observation was rendered from (for the referent labels).
  """

  def __init__(self, obs: Mapping[str, Any], scene: tabletop.SceneState):
    self.instruction = str(obs["instruction"])
    self.images, self.states, self.referents = [], [], []
    self.actions: list[np.ndarray] = []
    self.rewards: list[float] = []
    self._observe(obs, scene)

  def _observe(self, obs: Mapping[str, Any], scene: tabletop.SceneState) -> None:
    self.images.append(np.array(obs["image"], np.uint8))
    self.states.append(np.array(obs["state"], np.float32))
    self.referents.append(tabletop.step_referents(scene))

  @property
  def num_transitions(self) -> int:
    return len(self.actions)

  def add(self, action: np.ndarray, obs: Mapping[str, Any], reward: float, scene: tabletop.SceneState) -> None:
    """Action float32 [A] executed from the last observation, its reward, and the next observation."""
    self.actions.append(np.array(action, np.float32))
    self.rewards.append(float(reward))
    self._observe(obs, scene)

  def finish(self, *, success: bool, metadata: Mapping[str, Any], trial: Mapping[str, Any]) -> dict[str, Any]:
    """The episode {"steps", "episode_metadata"} (numpy, T + 1 steps).

    metadata: the built-in fields (task_family, split, scene_objects, seed, episode_index; the
      expert's fields default to -1); trial: `TRIAL_FIELDS` (missing ones get neutral defaults).
    """
    if not self.actions:
      raise ValueError("an episode needs at least one executed action")
    steps = rlds.episode_steps(self.images, self.states, self.actions, self.rewards,
                               np.array([0.0, 0.0, self.actions[-1][2]], np.float32),  # As the built-in dataset's.
                               self.instruction, bool(success))
    steps["referents"] = tabletop.stack_referents(self.referents)
    meta = {"expert_seed": -1, "perturbation_step": -1, "slip_step": -1, **metadata, "success": bool(success)}
    return {"steps": steps, "episode_metadata": {**meta, "trial": complete_trial_fields(trial)}}


def complete_trial_fields(trial: Mapping[str, Any]) -> dict[str, Any]:
  """`trial` with every `TRIAL_FIELDS` entry (neutral defaults for missing ones); unknown keys raise."""
  unknown = sorted(set(trial) - set(TRIAL_FIELDS))
  if unknown:
    raise ValueError(f"trial metadata has unknown fields {unknown}; known: {sorted(TRIAL_FIELDS)}")
  out = {}
  for key, (kind, _) in TRIAL_FIELDS.items():
    if kind.endswith("[]"):
      out[key] = np.asarray(trial.get(key, []), np.float32 if kind == "float[]" else np.bool_).reshape(-1)
    else:
      out[key] = trial.get(key, _DEFAULTS[kind])
  return out


def check_episode(episode: Mapping[str, Any], image_size: int, index: int = 0) -> None:
  """Checks one episode against the schema before TFDS encodes it (its errors name no episode)."""
  where = f"episode {index}"
  try:
    steps, meta = episode["steps"], episode["episode_metadata"]
    images, states, actions = steps["observation"]["image"], steps["observation"]["state"], steps["action"]
  except (KeyError, TypeError) as e:
    raise ValueError(f"{where}: expected {{'steps': {{'observation': {{'image', 'state'}}, 'action', ...}}, "
                     f"'episode_metadata': {{...}}}}; missing {e}") from None
  n = len(actions)
  expected = {"steps/observation/image": (images, (n, image_size, image_size, 3), np.uint8),
              "steps/observation/state": (states, (n, STATE_DIM), np.float32),
              "steps/action": (actions, (n, ACTION_DIM), np.float32),
              "steps/referents/position": (steps["referents"]["position"], (n, NUM_REFERENTS, 2), np.float32)}
  for key, (value, shape, dtype) in expected.items():
    value = np.asarray(value)
    if value.shape != shape or value.dtype != dtype:
      raise ValueError(f"{where}: {key} is {value.dtype} {list(value.shape)}; expected {np.dtype(dtype)} {list(shape)}")
  if n < 2:
    raise ValueError(f"{where}: has {n} steps; expected at least 2 (one transition and the final observation)")
  if not np.isfinite(actions).all() or not np.isfinite(states).all():
    raise ValueError(f"{where}: actions or states contain NaN or inf")
  for key in ("is_first", "is_last"):
    flags = np.asarray(steps[key], bool)
    want = np.arange(n) == (0 if key == "is_first" else n - 1)
    if flags.shape != (n,) or not np.array_equal(flags, want):
      raise ValueError(f"{where}: steps/{key} must be True exactly at step {0 if key == 'is_first' else n - 1}")
  missing = sorted(set(tabletop_builder.features(image_size)["episode_metadata"].keys()) - set(meta))
  if missing or "trial" not in meta:
    raise ValueError(f"{where}: episode_metadata lacks {missing + ([] if 'trial' in meta else ['trial'])}")
  for key in ("tick_latency_ms", "deadline_missed"):  # Per executed step (or absent).
    count = len(np.asarray(meta["trial"].get(key, [])).reshape(-1))
    if count not in (0, n - 1):
      raise ValueError(f"{where}: episode_metadata/trial/{key} has {count} entries; expected one per "
                       f"executed step ({n - 1})")


# ---- Writing a dataset. ----------------------------------------------------------------------------


class TabletopTrials(rlds_writer.GeneratedBuilder):
  """Recorded trial episodes of a policy on the built-in tabletop (see the module docstring)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, episodes: Sequence[Mapping[str, Any]], image_size: int,
               metadata: Mapping[str, Any] | None = None, **kwargs):
    self.episodes, self.image_size = episodes, int(image_size)
    self.trial_metadata = dict(metadata or {})
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n\n")[0], features=trial_features(self.image_size),
        disable_shuffling=True,  # Episodes in the order they ran.
        metadata=tfds.core.MetadataDict(self.trial_metadata),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {SPLIT: self._generate_examples()}

  def _generate_examples(self):
    for index, episode in enumerate(self.episodes):
      yield index, episode


def dataset_dir(data_dir: str | Path, name: str = DEFAULT_NAME) -> Path:
  """Where `write_episodes(..., data_dir, name=name)` puts the dataset (`builder_from_directory` it)."""
  return Path(data_dir) / name / VERSION


def write_episodes(episodes: Sequence[Mapping[str, Any]], data_dir: str | Path, *, name: str = DEFAULT_NAME,
                   metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
  """Writes recorded episodes (`EpisodeRecorder.finish`) as an RLDS dataset; returns its directory.

  Args:
    episodes: one or more episodes, all with the same image size.
    data_dir: the dataset goes to `<data_dir>/<name>/1.0.0/`.
    metadata: JSON-able dataset-level metadata (e.g. {"trial_config": ..., "server": ...}).
    overwrite: replace a finished dataset there; otherwise that is a FileExistsError.
  """
  if not name or not name.replace("_", "").isalnum() or not name[0].isalpha() or name != name.lower():
    raise ValueError(f"name={name!r} is not valid; expected a lower_snake_case identifier (a TFDS dataset name)")
  if not episodes:
    raise ValueError("no episodes to write; a dataset needs at least one")
  image_size = int(np.asarray(episodes[0]["steps"]["observation"]["image"]).shape[1])
  for index, episode in enumerate(episodes):
    check_episode(episode, image_size, index)
  builder = rlds_writer.named(TabletopTrials, name)
  return rlds_writer.write_atomically(
      lambda tmp_dir: builder(episodes=episodes, image_size=image_size, metadata=metadata, data_dir=tmp_dir),
      data_dir, name, VERSION, overwrite)
