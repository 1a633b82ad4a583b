"""Standardisation: raw RLDS episode -> one internal trajectory layout, whatever the dataset.

Two steps, both inside tf.data on whole episodes (step-level tensors have a leading [T] dim):

1. An optional per-dataset *standardisation function* (chosen by name in the spec) for what a key
   mapping cannot express. Open X-Embodiment needs these: actions stored as several named fields to
   concatenate, a gripper convention to invert, an instruction stored per episode. A function takes
   and returns the raw nested episode `{"steps": {...}, "episode_metadata": {...}}`; register your
   own with `@register_standardize_fn("my_dataset")` in any module imported before the pipeline is
   built (see `vla_jax/data/README.md`).
2. `to_internal` applies the spec's key mapping and returns

     observation/image_<camera>   tf.string [T] (encoded) or uint8 [T, h, w, 3] (raw)
     observation/proprio          float32 [T, D]            (D = 0 when the spec has no proprio)
     task/language_instruction    tf.string [T]             (episode-level text broadcast to steps)
     task/language_embedding      float32 [T, E]            (only if the spec names one)
     action                       float32 [T, A]
     aux/referent_xy              float32 [T, K, 2]         (only if num_referents = K > 0: the
     aux/referent_valid           bool [T, K]                spec's referents_key, padded with
                                                             invalid rows; all invalid without one)
     aux/attribute_xy             float32 [T, 2, M, 2]      (only if also attribute_objects = M > 0:
     aux/attribute_valid          bool [T, 2, M]             objects sharing the target's colour /
                                                             shape, padded with invalid slots)
     aux/state_target             float32 [T, N]            (only if state_targets = N > 0: the spec's
     aux/state_target_valid       bool [T]                   state_target_dims of state_target_key,
                                                             mapped to [-1, 1] by its bounds; all
                                                             invalid (zeros) without a key)

   Decoding, normalisation and windowing happen later (`obs_transforms.py`, `traj_transforms.py`).

Internal conventions (every standardisation function must produce them):
  * gripper action dims are in [0, 1] with 1 = close (our built-in `tabletop` convention);
  * one action per step, `action[t]` taken after observing `observation[t]`.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections
import tensorflow as tf

from vla_jax.data import spec as spec_lib
from vla_jax.data.oxe import grippers as oxe_grippers
from vla_jax.data.oxe import registry as oxe_registry
from vla_jax.data.oxe import transforms as oxe_transforms

Episode = dict[str, Any]
StandardizeFn = Callable[[Episode], Episode]

_REGISTRY: dict[str, StandardizeFn] = {}


def register_standardize_fn(name: str) -> Callable[[StandardizeFn], StandardizeFn]:
  """Decorator: makes `fn` available to specs as `standardize_fn=name`."""

  def wrap(fn: StandardizeFn) -> StandardizeFn:
    _REGISTRY[name] = fn
    return fn

  return wrap


def get_standardize_fn(name: str | None) -> StandardizeFn | None:
  if not name:
    return None
  if name not in _REGISTRY:
    raise ValueError(f"standardize_fn {name!r} is not registered; known: {sorted(_REGISTRY)}. "
                     "Register one with @vla_jax.data.standardize.register_standardize_fn(name).")
  return _REGISTRY[name]


# ---- Helpers that standardisation functions compose. -------------------------------------------


def invert_gripper(actions: tf.Tensor, dim: int = -1) -> tf.Tensor:
  """float [T, A] -> same with action[:, dim] -> 1 - action[:, dim] (1 = open  <->  1 = close)."""
  actions = tf.convert_to_tensor(actions, tf.float32)
  index = dim % actions.shape[-1]
  return tf.concat([actions[:, :index], 1.0 - actions[:, index:index + 1], actions[:, index + 1:]], axis=-1)


def concat_fields(fields: dict[str, tf.Tensor], names: list[str]) -> tf.Tensor:
  """Concatenates named per-step fields ([T] or [T, k]) into float32 [T, sum k]."""
  parts = []
  for name in names:
    x = tf.cast(fields[name], tf.float32)
    parts.append(x[:, None] if x.shape.rank == 1 else x)
  return tf.concat(parts, axis=-1)


def broadcast_episode_field(episode: Episode, key: str, steps_key: str | None = None) -> Episode:
  """Copies scalar `episode_metadata/key` to every step as `steps/<steps_key or key>` [T]."""
  steps = dict(episode["steps"])
  length = tf.shape(steps["is_first"] if "is_first" in steps else steps["action"])[0]
  steps[steps_key or key] = tf.fill([length], episode["episode_metadata"][key])
  return {**episode, "steps": steps}


# ---- Registered functions for datasets we know. ------------------------------------------------


@register_standardize_fn("bridge")
def standardize_bridge(episode: Episode) -> Episode:
  """Bridge stores gripper as 1 = open (continuous); we use 1 = close, binarised at 0.5."""
  steps = dict(episode["steps"])
  action = tf.cast(steps["action"], tf.float32)
  gripper_close = tf.cast(action[:, -1:] < 0.5, tf.float32)
  steps["action"] = tf.concat([action[:, :-1], gripper_close], axis=-1)
  return {**episode, "steps": steps}


@register_standardize_fn("oxe_eef_pos_gripper")
def standardize_oxe_eef(episode: Episode) -> Episode:
  """RT-1's layout: action = {world_vector [3], rotation_delta [3], gripper_closedness_action [1]}.

  Concatenates to a 7-d `steps/action`. The gripper field is a *relative* command (+1 close,
  -1 open, 0 keep); it becomes the absolute state in [0, 1] (1 = close), "keep" carrying the last
  state (it used to become 0.5, a half-closed label on every step without a command). For a
  named OXE dataset prefer `spec.oxe_spec`, which knows each dataset's own convention.
  """
  steps = dict(episode["steps"])
  fields = steps["action"]
  gripper = oxe_grippers.relative_to_absolute(fields["gripper_closedness_action"])
  steps["action"] = tf.concat([concat_fields(fields, ["world_vector", "rotation_delta"]),
                               tf.reshape(gripper, [-1, 1])], axis=-1)
  return {**episode, "steps": steps}


# Open X-Embodiment datasets by name: every entry of `vla_jax/data/oxe/registry.py`, as
# "oxe/<name>@<entry digest>" (what `spec.oxe_spec` names) and "oxe/<name>".
for _entry in oxe_registry.REGISTRY.values():
  _fn = oxe_transforms.standardize_fn(_entry)
  register_standardize_fn(oxe_registry.standardize_fn_name(_entry))(_fn)
  register_standardize_fn(f"oxe/{_entry.name}")(_fn)


# ---- Key mapping. -------------------------------------------------------------------------------


def lookup(tree: Any, path: str) -> Any:
  """tree["a"]["b"] for path "a/b": spec keys may name nested fields (e.g. OXE's
  `language_key="observation/natural_language_instruction"` under `steps/`)."""
  for part in path.split("/"):
    tree = tree[part]
  return tree


def to_internal(episode: Episode, spec: ml_collections.ConfigDict, num_referents: int = 0,
                attribute_objects: int = 0, state_targets: int = 0) -> dict[str, Any]:
  """Raw (standardised) episode -> internal layout documented in the module docstring.

  `num_referents` = K > 0 adds `aux` (referent labels, for auxiliary losses; with
  `attribute_objects` = M > 0 also the attribute labels), so every dataset of a mixture has the
  same structure whether or not it has labels; `state_targets` = N > 0 adds the state labels.
  """
  steps = episode["steps"]
  obs = steps["observation"]
  action = tf.cast(lookup(steps, spec.action_key), tf.float32)
  length = tf.shape(action)[0]
  out_obs = {f"image_{cam}": lookup(obs, key) for cam, key in spec.cameras.items()}
  if spec.proprio_key:
    out_obs["proprio"] = tf.cast(lookup(obs, spec.proprio_key), tf.float32)
  else:
    out_obs["proprio"] = tf.zeros([length, 0], tf.float32)
  task: dict[str, tf.Tensor] = {}
  if spec.language_key:
    if spec.language_level == "step":
      task["language_instruction"] = lookup(steps, spec.language_key)
    else:
      task["language_instruction"] = tf.fill([length], lookup(episode["episode_metadata"], spec.language_key))
  else:
    task["language_instruction"] = tf.fill([length], tf.constant("", tf.string))
  if spec.language_embedding_key:
    task["language_embedding"] = tf.cast(lookup(steps, spec.language_embedding_key), tf.float32)
  out = {"observation": out_obs, "task": task, "action": action}
  if num_referents > 0:
    out["aux"] = referent_labels(steps, spec, length, num_referents)
    if attribute_objects > 0:
      out["aux"].update(attribute_labels(steps, spec, length, attribute_objects))
  if state_targets > 0:
    out.setdefault("aux", {}).update(state_target_labels(steps, spec, length, state_targets))
  return out


def state_target_labels(steps: dict[str, Any], spec: ml_collections.ConfigDict, length: tf.Tensor,
                        state_targets: int) -> dict[str, tf.Tensor]:
  """{"state_target": float32 [T, N], "state_target_valid": bool [T]} for N = state_targets.

  The spec's `state_target_dims` of `steps/observation/<state_target_key>`, each mapped from its
  (low, high) bound to [-1, 1] (not clipped: a value outside says the bounds are wrong, and the
  loss should see it). A dataset without a key is all invalid, with zeros.
  """
  key = spec.get("state_target_key")
  if not key:
    return {"state_target": tf.zeros([length, state_targets], tf.float32),
            "state_target_valid": tf.zeros([length], tf.bool)}
  dims = tuple(spec.state_target_dims)
  if len(dims) != state_targets:  # validate_spec says so first; this guards direct callers.
    raise ValueError(f"dataset '{spec.name}': config.state_targets={state_targets} but the spec's "
                     f"state_target_dims name {len(dims)} dims {dims}")
  low, high = (tf.constant(row, tf.float32) for row in spec.state_target_bounds)
  state = tf.gather(tf.cast(lookup(steps["observation"], key), tf.float32), list(dims), axis=-1)
  return {"state_target": tf.ensure_shape(2.0 * (state - low) / (high - low) - 1.0, [None, state_targets]),
          "state_target_valid": tf.ones([length], tf.bool)}


def attribute_labels(steps: dict[str, Any], spec: ml_collections.ConfigDict, length: tf.Tensor,
                     attribute_objects: int) -> dict[str, tf.Tensor]:
  """{"attribute_xy": float32 [T, 2, M, 2], "attribute_valid": bool [T, 2, M]} for M = attribute_objects
  (the spec's `<referents_key>/attributes`, padded with invalid slots; all invalid without a key)."""
  key = spec.get("referents_key")
  if not key:
    return {"attribute_xy": tf.zeros([length, 2, attribute_objects, 2], tf.float32),
            "attribute_valid": tf.zeros([length, 2, attribute_objects], tf.bool)}
  labels = lookup(steps, key)["attributes"]
  position = tf.cast(labels["position"], tf.float32)
  valid = tf.cast(labels["valid"], tf.bool)
  spec_lib.check_attribute_shapes(spec, position.shape, valid.shape, attribute_objects)
  missing = attribute_objects - tf.shape(position)[2]
  position = tf.pad(position, [[0, 0], [0, 0], [0, missing], [0, 0]])
  valid = tf.pad(valid, [[0, 0], [0, 0], [0, missing]], constant_values=False)
  return {"attribute_xy": tf.ensure_shape(position, [None, 2, attribute_objects, 2]),
          "attribute_valid": tf.ensure_shape(valid, [None, 2, attribute_objects])}


def referent_labels(steps: dict[str, Any], spec: ml_collections.ConfigDict, length: tf.Tensor,
                    num_referents: int) -> dict[str, tf.Tensor]:
  """{"referent_xy": float32 [T, K, 2], "referent_valid": bool [T, K]} for K = num_referents.

  A dataset with fewer referents is padded with invalid rows (position 0); one without a
  `referents_key` is all invalid. More than K is an error naming the dataset, key and shape.
  """
  key = spec.get("referents_key")
  if not key:
    return {"referent_xy": tf.zeros([length, num_referents, 2], tf.float32),
            "referent_valid": tf.zeros([length, num_referents], tf.bool)}
  labels = lookup(steps, key)
  position = tf.cast(labels["position"], tf.float32)
  valid = tf.cast(labels["valid"], tf.bool)
  spec_lib.check_referent_shapes(spec, position.shape, valid.shape, num_referents)
  missing = num_referents - tf.shape(position)[1]
  position = tf.pad(position, [[0, 0], [0, missing], [0, 0]])
  valid = tf.pad(valid, [[0, 0], [0, missing]], constant_values=False)
  return {"referent_xy": tf.ensure_shape(position, [None, num_referents, 2]),
          "referent_valid": tf.ensure_shape(valid, [None, num_referents])}
