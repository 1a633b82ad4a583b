"""The RLDS step schema (Open X-Embodiment's layout) as TFDS features, defined once.

The built-in tabletop dataset, the robot-trial recordings and the synthetic test datasets all
write episodes of this shape — steps/{observation/{<cameras>, <state>}, action,
language_instruction, reward, discount, is_first, is_last, is_terminal, [referents]} — so they
are read by one input pipeline; only cameras, dimensions and documentation differ.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def episode_steps(images: Sequence[np.ndarray], states: Sequence[np.ndarray], actions: Sequence[np.ndarray],
                  rewards: Sequence[float], hold: np.ndarray, instruction: str, success: bool,
                  extra_observations: Mapping[str, Sequence[np.ndarray]] | None = None) -> dict[str, Any]:
  """The `steps` of one episode (numpy) in this schema's step convention.

  images / states: the T + 1 observations o_0 … o_T; actions / rewards: the T transitions. Step t
  holds o_t, a_t and r_t; the last step holds o_T with the `hold` action ("keep still"), reward 0,
  `is_last`, and — when the task was solved — `is_terminal` with discount 0.
  extra_observations: more observation keys (other cameras, a full env state), T + 1 entries each.
  """
  n = len(images)
  if len(states) != n or len(actions) != n - 1 or len(rewards) != n - 1:
    raise ValueError(f"episode_steps: {n} images need {n} states and {n - 1} actions and rewards; got "
                     f"{len(states)}, {len(actions)}, {len(rewards)}")
  extra = dict(extra_observations or {})
  for key, values in extra.items():
    if len(values) != n:
      raise ValueError(f"episode_steps: observation {key!r} has {len(values)} entries; expected {n} (one per image)")
  is_last = np.arange(n) == n - 1
  is_terminal = is_last & bool(success)
  return {
      "observation": {"image": np.stack(images), "state": np.stack(states).astype(np.float32),
                      **{key: np.stack(values) for key, values in extra.items()}},
      "action": np.stack([*actions, hold]).astype(np.float32),
      "language_instruction": [instruction] * n,
      "reward": np.asarray([*rewards, 0.0], np.float32),
      "discount": np.where(is_terminal, 0.0, 1.0).astype(np.float32),
      "is_first": np.arange(n) == 0,
      "is_last": is_last,
      "is_terminal": is_terminal,
  }


def step_features(*, images: Mapping[str, Any], state_key: str, state_dim: int,
                  action: Any, language: bool = True, num_referents: int = 0,
                  num_attribute_objects: int = 0, docs: Mapping[str, str] | None = None,
                  extra_observations: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The `steps` feature dict (wrap it in `tfds.features.Dataset`).

  Args:
    images: camera name → Image feature (shape, encoding).
    state_key, state_dim: the proprio vector's observation key and size.
    action: the action feature (a Tensor, or OXE's FeaturesDict of named parts).
    language: a per-step `language_instruction` (False: the dataset keeps it elsewhere or has none).
    num_referents: K > 0 adds `referents/{position [K, 2], valid [K]}` (privileged labels for the
      auxiliary referent loss, never model inputs).
    num_attribute_objects: M > 0 (with num_referents) adds `referents/attributes/{position [2, M, 2],
      valid [2, M]}`: the objects sharing the target's colour (row 0) and shape (row 1).
    docs: optional documentation per feature: "state", "referents", "referents/position",
      "referents/valid", "referents/attributes".
    extra_observations: more observation features (e.g. a full env state vector), key → feature.
  """
  import tensorflow_datasets as tfds  # Local: writing episodes (above) needs no TFDS.

  docs = docs or {}
  features: dict[str, Any] = {
      "observation": tfds.features.FeaturesDict({
          **images,
          state_key: tfds.features.Tensor(shape=(state_dim,), dtype=np.float32, doc=docs.get("state")),
          **(extra_observations or {}),
      }),
      "action": action,
  }
  if language:
    features["language_instruction"] = tfds.features.Text()
  features.update({
      "reward": tfds.features.Scalar(dtype=np.float32),
      "discount": tfds.features.Scalar(dtype=np.float32),
      "is_first": tfds.features.Scalar(dtype=np.bool_),
      "is_last": tfds.features.Scalar(dtype=np.bool_),
      "is_terminal": tfds.features.Scalar(dtype=np.bool_),
  })
  if num_referents:
    referents = {
        "position": tfds.features.Tensor(shape=(num_referents, 2), dtype=np.float32,
                                         doc=docs.get("referents/position")),
        "valid": tfds.features.Tensor(shape=(num_referents,), dtype=np.bool_, doc=docs.get("referents/valid")),
    }
    if num_attribute_objects:
      referents["attributes"] = tfds.features.FeaturesDict({
          "position": tfds.features.Tensor(shape=(2, num_attribute_objects, 2), dtype=np.float32),
          "valid": tfds.features.Tensor(shape=(2, num_attribute_objects), dtype=np.bool_),
      }, doc=docs.get("referents/attributes"))
    features["referents"] = tfds.features.FeaturesDict(referents, doc=docs.get("referents"))
  return features
