"""The RLDS step schema (Open X-Embodiment's layout) as TFDS features, defined once.

The built-in tabletop dataset, the robot-trial recordings and the synthetic test datasets all
write episodes of this shape — steps/{observation/{<cameras>, <state>}, action,
language_instruction, reward, discount, is_first, is_last, is_terminal, [referents]} — so they
are read by one input pipeline; only cameras, dimensions and documentation differ.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds


def step_features(*, images: Mapping[str, tfds.features.Image], state_key: str, state_dim: int,
                  action: tfds.features.FeatureConnector, language: bool = True, num_referents: int = 0,
                  docs: Mapping[str, str] | None = None) -> dict[str, Any]:
  """The `steps` feature dict (wrap it in `tfds.features.Dataset`).

  Args:
    images: camera name → Image feature (shape, encoding).
    state_key, state_dim: the proprio vector's observation key and size.
    action: the action feature (a Tensor, or OXE's FeaturesDict of named parts).
    language: a per-step `language_instruction` (False: the dataset keeps it elsewhere or has none).
    num_referents: K > 0 adds `referents/{position [K, 2], valid [K]}` (privileged labels for the
      auxiliary referent loss, never model inputs).
    docs: optional documentation per feature: "state", "referents", "referents/position",
      "referents/valid".
  """
  docs = docs or {}
  features: dict[str, Any] = {
      "observation": tfds.features.FeaturesDict({
          **images,
          state_key: tfds.features.Tensor(shape=(state_dim,), dtype=np.float32, doc=docs.get("state")),
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
    features["referents"] = tfds.features.FeaturesDict({
        "position": tfds.features.Tensor(shape=(num_referents, 2), dtype=np.float32,
                                         doc=docs.get("referents/position")),
        "valid": tfds.features.Tensor(shape=(num_referents,), dtype=np.bool_, doc=docs.get("referents/valid")),
    }, doc=docs.get("referents"))
  return features
