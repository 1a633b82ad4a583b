"""One standardisation function per registered OXE dataset, built from its registry entry.

The function (registered in `standardize.py` as "oxe/<name>@<entry digest>" and "oxe/<name>")
takes the raw RLDS episode the pipeline reads (step tensors [T, ...], images still encoded) and
returns the layout every OXE spec (`spec.oxe_spec`) names:

  steps/observation/<camera keys>   the registered cameras, untouched (decoded later, once)
  steps/observation/proprio         float32 [T, D]   the entry's proprio parts concatenated
  steps/action                      float32 [T, 7]   6 end-effector dims + gripper in [0, 1], 1 = close
  steps/language_instruction        string [T]       wherever the dataset keeps it ("" if blanked)
  steps/is_first, steps/is_last     bool [T]
  episode_metadata                  as stored (when the dataset has it)

Everything else (depth maps, embeddings, metadata tensors) is dropped here, so it never travels
through the rest of tf.data. Before reading, the episode's structure is compared with the entry's
published one, so a dataset that does not match fails at pipeline start naming the first key.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from vla_jax.data.oxe import features as features_lib
from vla_jax.data.oxe import grippers
from vla_jax.data.oxe.registry import OxeDataset, Slice, Zeros

Episode = dict[str, Any]
Flat = dict[tuple[str, ...], features_lib.Leaf]

# Byte b -> the 1-byte string b (0 -> "", the padding of language_table's instruction codes).
_BYTE_STRINGS = [b""] + [bytes([i]) for i in range(1, 256)]


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _flatten_episode(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], tf.TypeSpec]:
  if isinstance(tree, dict):
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
      out.update(_flatten_episode(value, prefix + (key,)))
    return out
  return {prefix: tree}


def episode_structure(episode: Episode) -> dict[tuple[str, ...], features_lib.Leaf]:
  """Leaves of an episode inside tf.data as Leafs (step-level leaves without their [T] dim)."""
  out = {}
  for path, tensor in _flatten_episode(episode).items():
    shape = tuple(tensor.shape.as_list())
    if path[0] == "steps":
      shape = shape[1:]
    out[path] = features_lib.Leaf("tensor", tensor.dtype.name, shape)
  return out


def check_episode(entry: OxeDataset, episode: Episode, flat: Flat | None = None) -> None:
  """Raises ValueError naming the first registered key the episode lacks or stores differently."""
  flat = flat if flat is not None else entry.flat_features()
  expected = {path: features_lib.as_read(leaf, path[0] == "steps") for path, leaf in flat.items()}
  problem = features_lib.first_mismatch(expected, episode_structure(episode))
  if problem:
    raise ValueError(f"dataset '{entry.name}' ({entry.tfds_name}) does not match its registered OXE structure: "
                     f"{problem} (registered from {entry.source})")


def read_step_field(flat: Flat, steps: dict[str, Any], path: tuple[str, ...]) -> tf.Tensor:
  """steps/<path> as stored, zlib-compressed tensors decoded to their registered dtype and shape."""
  leaf = flat[("steps",) + path]
  value = _lookup(steps, path)
  if leaf.zlib:
    raw = tf.io.decode_raw(tf.io.decode_compressed(value, compression_type="ZLIB"), tf.dtypes.as_dtype(leaf.dtype))
    value = tf.reshape(raw, [-1, *leaf.shape])
  return value


def _part(flat: Flat, steps: dict[str, Any], part: Slice | Zeros, length: tf.Tensor) -> tf.Tensor:
  """float32 [T, k] for one Slice (or k zeros)."""
  if isinstance(part, Zeros):
    return tf.zeros([length, part.size], tf.float32)
  value = tf.cast(read_step_field(flat, steps, part.path), tf.float32)
  if value.shape.rank == 1:
    return value[:, None]
  return value[:, part.start:part.stop]


def _instruction(entry: OxeDataset, episode: Episode, length: tf.Tensor) -> tf.Tensor:
  steps = episode["steps"]
  if entry.language_level == "none" or not entry.keep_language:
    return tf.fill([length], tf.constant("", tf.string))
  if entry.language_level == "step":
    return tf.reshape(_lookup(steps, entry.language_path), [-1])
  if entry.language_level == "episode":
    return tf.fill([length], _lookup(episode["episode_metadata"], entry.language_path))
  # utf8_codes: int [T, L], one UTF-8 byte per entry, 0-padded.
  codes = tf.cast(_lookup(steps, entry.language_path), tf.int32)
  return tf.strings.reduce_join(tf.gather(tf.constant(_BYTE_STRINGS), codes), axis=-1)


def standardize_episode(entry: OxeDataset, episode: Episode, flat: Flat | None = None) -> Episode:
  """Raw OXE episode -> the layout in the module docstring (see `registry.py` for the entry).

  `flat` is `entry.flat_features()`, passed in when already parsed.
  """
  flat = flat if flat is not None else entry.flat_features()
  check_episode(entry, episode, flat)
  steps = episode["steps"]
  length = tf.shape(steps["is_first"])[0]
  eef = tf.concat([_part(flat, steps, p, length) for p in entry.eef], axis=-1)
  gripper_value = None
  if entry.gripper is not None:
    gripper_value = tf.reshape(_part(flat, steps, entry.gripper, length), [-1])
  gripper = grippers.to_close_is_1(gripper_value, entry.gripper_convention, length)
  observation = {key: steps["observation"][key] for key in entry.cameras.values()}
  if entry.proprio:
    observation["proprio"] = tf.concat([_part(flat, steps, p, length) for p in entry.proprio], axis=-1)
  out_steps = {
      "observation": observation,
      "action": tf.ensure_shape(tf.concat([eef, gripper[:, None]], axis=-1), [None, 7]),
      "language_instruction": _instruction(entry, episode, length),
      "is_first": steps["is_first"],
      "is_last": steps["is_last"],
  }
  out: Episode = {"steps": out_steps}
  if "episode_metadata" in episode:
    out["episode_metadata"] = episode["episode_metadata"]
  return out


def standardize_fn(entry: OxeDataset) -> Callable[[Episode], Episode]:
  """The entry's standardisation function (a named closure, for readable tf.data traces)."""

  # Plain TF ops, no Python control flow on tensors: AutoGraph conversion would only cost time
  # (it was ~0.2 s per trace, and tf.data traces each dataset's function several times).
  flat = entry.flat_features()

  @tf.autograph.experimental.do_not_convert
  def standardize(episode: Episode) -> Episode:
    return standardize_episode(entry, episode, flat)

  standardize.__name__ = f"standardize_oxe_{entry.name}"
  return standardize
