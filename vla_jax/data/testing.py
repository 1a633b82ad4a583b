"""Writes small synthetic RLDS datasets (TFDS format) with known contents, for tests and benchmarks.

Why: pipeline tests need datasets whose every value is predictable (to check windows, chunks and
masks at episode boundaries) and with *different* builders, key names, image sizes and action
sizes (to check that a spec alone is enough), without network access or the simulator.

Contents of episode e (ids are global: train episodes first, then val), step t of T:
  observation/<camera>: uint8 [h, w, 3] PNG; channel 0 = t, channel 1 = e (mod 256), channel 2 =
                        40 x camera index; with `textured=True` a moving square over a gradient
                        instead (realistic PNG sizes for benchmarks; values then not predictable)
  observation/<state_key>: float32 [D]: [e, t, 0.5 t, ...]
  action: float32 [A]: [t, e, 0.1 t + 0.01 e, ..., gripper], gripper (last dim) = (t // 3) % 2
          (or RT-1's layout {world_vector [3], rotation_delta [3], gripper_closedness_action [1]}
          when `oxe_action_fields=True`, the gripper a relative command in {-1 open, +1 close}
          issued every step; A must then be 7)
  language: "task <e>" at step level (`steps/language_instruction`) or episode level
            (`episode_metadata/instruction`).
  referents (only with `num_referents` = K > 0): `steps/referents/position` float32 [K, 2] with
            row k = [0.01 t + 0.1 k, 0.01 e], `steps/referents/valid` bool [K] = (t + k) even.
  perturbation (only with `perturbations=True`): `episode_metadata/perturbation_step` int64 =
            `episode_perturbation_step(e, T)` (a demonstrator's recorded mistake; -1 = none).

`write_oxe_fixture` writes a registered Open X-Embodiment dataset's exact published structure
(`vla_jax/data/oxe/registry.py`) with contents of the same kind (documented there).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np


def episode_image(e: int, t: int, cam: int, size: tuple[int, int], textured: bool) -> np.ndarray:
  h, w = size
  if not textured:
    image = np.empty((h, w, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = t % 256, e % 256, (40 * cam) % 256
    return image
  yy, xx = np.mgrid[0:h, 0:w]
  image = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 90 + 30 * cam)], -1)
  side = max(h // 6, 2)
  y0, x0 = (3 * t + 7 * e) % (h - side), (5 * t + 3 * e) % (w - side)
  image[y0:y0 + side, x0:x0 + side] = (220, 40, 40)
  return image.astype(np.uint8)


def episode_action(e: int, t: int, action_dim: int) -> np.ndarray:
  a = np.zeros(action_dim, np.float32)
  base = [t, e] + [0.1 * t + 0.01 * e * (k + 1) for k in range(max(action_dim - 3, 0))]
  a[:action_dim - 1] = np.asarray(base, np.float32)[:action_dim - 1]
  a[-1] = (t // 3) % 2
  return a


def episode_state(e: int, t: int, state_dim: int) -> np.ndarray:
  s = np.asarray([e, t] + [0.5 * t * (k + 1) - e for k in range(max(state_dim - 2, 0))], np.float32)
  return s[:state_dim]


def episode_referents(e: int, t: int, num_referents: int) -> tuple[np.ndarray, np.ndarray]:
  """(position float32 [K, 2], valid bool [K]) of step t of episode e."""
  k = np.arange(num_referents)
  position = np.stack([0.01 * t + 0.1 * k, np.full(num_referents, 0.01 * e)], -1).astype(np.float32)
  return position, (t + k) % 2 == 0


def episode_perturbation_step(e: int, length: int) -> int:
  """The recorded mistake's step of episode e of length T: none (-1) in every third episode."""
  return -1 if e % 3 == 2 else (2 * e + 1) % length


def write_synthetic_rlds(
    data_dir: str,
    *,
    name: str = "synthetic_rlds",
    episode_lengths: dict[str, Sequence[int]] | None = None,
    image_size: tuple[int, int] = (64, 64),
    cameras: Sequence[str] = ("image",),
    state_key: str = "state",
    state_dim: int = 5,
    action_dim: int = 3,
    language_level: str = "step",
    oxe_action_fields: bool = False,
    textured: bool = False,
    num_referents: int = 0,
    perturbations: bool = False,
) -> str:
  """Writes the dataset with TFDS and returns its builder dir (`<data_dir>/<name>/1.0.0`).

  Args:
    episode_lengths: {split: [T per episode]}; default {"train": [5, 1, 8, 3], "val": [4, 6]}.
    num_referents: K > 0 adds `steps/referents` (see the module docstring); 0 = none.
    perturbations: adds `episode_metadata/perturbation_step` (see the module docstring).
  """
  import tensorflow_datasets as tfds

  from vla_jax.data import rlds  # Local, like tfds: the numpy helpers above need neither.

  lengths = episode_lengths or {"train": [5, 1, 8, 3], "val": [4, 6]}
  if oxe_action_fields and action_dim != 7:
    raise ValueError("oxe_action_fields needs action_dim=7")
  first_id, next_id = {}, 0
  for split, ls in lengths.items():
    first_id[split] = next_id
    next_id += len(ls)

  if oxe_action_fields:
    action_feature = tfds.features.FeaturesDict({
        "world_vector": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        "rotation_delta": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        "gripper_closedness_action": tfds.features.Tensor(shape=(1,), dtype=np.float32),
    })
  else:
    action_feature = tfds.features.Tensor(shape=(action_dim,), dtype=np.float32)
  step_features = rlds.step_features(
      images={cam: tfds.features.Image(shape=(*image_size, 3), encoding_format="png") for cam in cameras},
      state_key=state_key, state_dim=state_dim, action=action_feature, language=language_level == "step",
      num_referents=num_referents)
  metadata = {"episode_id": tfds.features.Scalar(dtype=np.int64)}
  if language_level == "episode":
    metadata["instruction"] = tfds.features.Text()
  if perturbations:
    metadata["perturbation_step"] = tfds.features.Scalar(dtype=np.int64)
  features = tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset(step_features),
      "episode_metadata": tfds.features.FeaturesDict(metadata),
  })

  def make_episode(e: int, length: int) -> dict:
    steps = []
    for t in range(length):
      action = episode_action(e, t, action_dim)
      if oxe_action_fields:
        action = {"world_vector": action[:3], "rotation_delta": action[3:6],
                  "gripper_closedness_action": action[6:7] * 2.0 - 1.0}
      step = {
          "observation": {**{cam: episode_image(e, t, i, image_size, textured) for i, cam in enumerate(cameras)},
                          state_key: episode_state(e, t, state_dim)},
          "action": action,
          "reward": float(t == length - 1),
          "discount": 1.0,
          "is_first": t == 0,
          "is_last": t == length - 1,
          "is_terminal": t == length - 1,
      }
      if language_level == "step":
        step["language_instruction"] = f"task {e}"
      if num_referents:
        position, valid = episode_referents(e, t, num_referents)
        step["referents"] = {"position": position, "valid": valid}
      steps.append(step)
    meta = {"episode_id": e}
    if language_level == "episode":
      meta["instruction"] = f"task {e}"
    if perturbations:
      meta["perturbation_step"] = episode_perturbation_step(e, length)
    return {"steps": steps, "episode_metadata": meta}

  def examples(split):
    for i, length in enumerate(lengths[split]):
      e = first_id[split] + i
      yield e, make_episode(e, length)

  return _write_fixture(name, "1.0.0", features, tuple(lengths), examples, data_dir)


def _write_fixture(name: str, version: str, features, splits: Sequence[str],
                   examples: Callable[[str], object], data_dir: str) -> str:
  """Writes a TFDS dataset `<data_dir>/<name>/<version>` of `examples(split)` (key, episode) pairs."""
  import tensorflow_datasets as tfds

  from vla_jax.data import rlds_writer

  def info(self):
    return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

  def split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in splits}

  def generate_examples(self, split):
    yield from examples(split)

  with tfds.core.registered.skip_registration():
    builder_cls = type("".join(part.capitalize() for part in name.split("_")), (rlds_writer.GeneratedBuilder,),
                       {"VERSION": tfds.core.Version(version), "_info": info, "name": name,
                        "_split_generators": split_generators, "_generate_examples": generate_examples})
  builder_cls(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.path.join(data_dir, name, version)


# ---- Open X-Embodiment fixtures: a registered dataset's exact published structure, tiny. -----------

OXE_EPISODE_LENGTHS = (6, 4)
OXE_UNKNOWN_IMAGE_SIDE = 64  # For image sizes a registration leaves open ("?").


def oxe_gripper_closed(e: int, t: int) -> int:
  """The gripper state (1 = closed) a fixture's episode e encodes at step t: episode 0 closes at
  t = 1 and opens at t = 4 (so RT-1-style "keep" steps sit in between), episode 1 starts closed."""
  return int(1 <= t < 4) if e % 2 == 0 else int(t < 2)


def oxe_camera_colour(key: str) -> int:
  """Channel 2 of every frame of observation key `key` (so a test can tell cameras apart)."""
  import zlib

  return 20 + zlib.crc32(key.encode()) % 200


def oxe_value(e: int, t: int, shape: tuple[int, ...]) -> np.ndarray:
  """Contents of every numeric field: element k of step t of episode e is 0.01 (k + 1) + 0.1 t + e."""
  size = int(np.prod(shape)) if shape else 1
  return (0.01 * (np.arange(size) + 1) + 0.1 * t + e).reshape(shape)


def _gripper_raw(convention: str, closed: Sequence[int], t: int, dtype: str) -> float | bool:
  """The dataset-convention value that encodes `closed[t]` (conventions: `oxe.grippers`)."""
  c = closed[t]
  if convention == "relative":
    was = closed[t - 1] if t > 0 else 0
    return 1.0 if c and not was else (-1.0 if was and not c else 0.0)
  if convention == "close_is_1":
    return c if dtype.startswith("int") else 2.0 * c - 1.0   # Signed floats: the clip is exercised.
  if convention == "open_is_1":
    return (not c) if dtype == "bool" else 1.0 - 2.0 * c
  if convention == "open_is_1_binarized":
    return 0.2 if c else 0.8  # Continuous, 1 = open.
  raise ValueError(f"no gripper field for convention {convention!r}")


def write_oxe_fixture(data_dir: str, name: str, episode_lengths: Sequence[int] = OXE_EPISODE_LENGTHS) -> str:
  """Writes a tiny dataset with exactly the published feature structure of registered OXE dataset
  `name` (every key, dtype and shape; images as PNG) and returns its builder dir
  (`<data_dir>/<tfds_name>/0.1.0`).

  Contents: frames are flat colours (channel 0 = t, 1 = e, 2 = `oxe_camera_colour(key)`); numeric
  fields hold `oxe_value`; the gripper field encodes `oxe_gripper_closed` in the dataset's own
  convention; the instruction is "task <e>" (as UTF-8 codes for language_table); is_first/is_last
  mark the episode ends. Splits: "train" with `episode_lengths`, plus a one-episode split for any
  other split the registration names (e.g. "test").
  """
  import tensorflow_datasets as tfds

  from vla_jax.data.oxe import features as features_lib, registry

  entry = registry.get(name)
  flat = entry.flat_features()
  gripper_path = ("steps",) + entry.gripper.path if entry.gripper else None
  language_path = None
  if entry.language_path is not None:
    language_path = (("episode_metadata",) if entry.language_level == "episode" else ("steps",)) + entry.language_path
  splits = {"train": list(episode_lengths)}
  for split in (entry.train_split, entry.val_split):
    splits.setdefault(split.split("[")[0], [3])

  def feature(leaf: features_lib.Leaf):
    if leaf.kind == "text" or leaf.dtype == "string":
      return tfds.features.Text()
    if leaf.kind == "image":
      shape = tuple(OXE_UNKNOWN_IMAGE_SIDE if d is None else d for d in leaf.shape)
      return tfds.features.Image(shape=shape, dtype=np.dtype(leaf.dtype), encoding_format="png")
    encoding = tfds.features.Encoding.ZLIB if leaf.zlib else tfds.features.Encoding.NONE
    return tfds.features.Tensor(shape=leaf.shape, dtype=np.dtype(leaf.dtype), encoding=encoding)

  def build(tree: dict, prefix: tuple[str, ...]) -> tfds.features.FeaturesDict:
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        sub = build(value, prefix + (key,))
        out[key] = tfds.features.Dataset(sub) if prefix + (key,) == ("steps",) else sub
      else:
        out[key] = feature(flat[prefix + (key,)])
    return tfds.features.FeaturesDict(out)

  features = build(dict(entry.features), ())

  def value(path: tuple[str, ...], leaf: features_lib.Leaf, e: int, t: int, length: int):
    closed = [oxe_gripper_closed(e, s) for s in range(length)]
    key = path[-1]
    if path == language_path:
      text = f"task {e}"
      if leaf.kind == "tensor" and leaf.dtype != "string":  # UTF-8 codes, 0-padded.
        codes = np.zeros(leaf.shape, leaf.dtype)
        codes[:len(text)] = list(text.encode())
        return codes
      return text
    if leaf.kind == "text" or leaf.dtype == "string":
      return f"{key} {e}"
    if leaf.kind == "image":
      shape = tuple(OXE_UNKNOWN_IMAGE_SIDE if d is None else d for d in leaf.shape)
      if leaf.dtype != "uint8":
        return np.zeros(shape, leaf.dtype)
      image = np.empty(shape, np.uint8)
      image[..., 0], image[..., 1], image[..., 2] = t % 256, e % 256, oxe_camera_colour(key)
      return image
    if key in ("is_first", "is_last", "is_terminal"):
      return t == 0 if key == "is_first" else t == length - 1
    if key == "reward":
      return float(t == length - 1)
    if key == "discount":
      return 1.0
    if leaf.dtype == "bool":
      out = np.zeros(leaf.shape, bool)
    else:
      out = oxe_value(e, t, leaf.shape).astype(leaf.dtype)
    if path == gripper_path:
      raw = _gripper_raw(entry.gripper_convention, closed, t, leaf.dtype)
      if not leaf.shape:
        return np.asarray(raw, leaf.dtype)
      out[..., entry.gripper.start:entry.gripper.start + 1] = raw
    return out

  def fill(tree: dict, prefix: tuple[str, ...], e: int, t: int, length: int) -> dict:
    return {key: fill(sub, prefix + (key,), e, t, length) if isinstance(sub, dict)
            else value(prefix + (key,), flat[prefix + (key,)], e, t, length)
            for key, sub in tree.items()}

  def make_episode(e: int, length: int) -> dict:
    top = {k: v for k, v in entry.features.items() if k != "steps"}
    episode = fill(top, (), e, 0, length)
    episode["steps"] = [fill(entry.features["steps"], ("steps",), e, t, length) for t in range(length)]
    return episode

  first_id, next_id = {}, 0
  for split, lengths in splits.items():
    first_id[split], next_id = next_id, next_id + len(lengths)

  def examples(split):
    for i, length in enumerate(splits[split]):
      yield first_id[split] + i, make_episode(first_id[split] + i, length)

  return _write_fixture(entry.tfds_name, "0.1.0", features, tuple(splits), examples, data_dir)
