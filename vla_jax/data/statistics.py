"""Normalisation statistics of actions and proprio: compute once, cache as JSON, (un)normalise.

Why here and why JSON: a deployed policy must un-normalise its actions with exactly the numbers it
was trained with, without TensorFlow and without trusting pickles. So statistics are a plain
JSON-serialisable dict, saved beside the dataset (a cache keyed by a hash of the dataset files and
the spec) and saved again with every checkpoint (`save_statistics` / `load_statistics`), and the
`normalize` / `unnormalize` below are numpy-only. `normalize_tf` is the identical formula used
inside tf.data.

Layout of one dataset's statistics (all lists are per dimension):

  {"format": "vla_jax.statistics/1", "dataset": "bridge", "hash": "<sha256 prefix>",
   "num_transitions": int, "num_trajectories": int,
   "action":  {"mean", "std", "min", "max", "q01", "q99": [A], "mask": [A] bool, "kinds": [A] str},
   "proprio": {"mean", "std", "min", "max", "q01", "q99": [D], "mask": [D] bool}}

`mask` says which dims are normalised: all proprio dims; all action dims except `gripper` dims,
which standardisation has already put in [0, 1] (1 = close) and which stay as they are, so a
binary gripper command keeps its meaning and needs no threshold after un-normalising.

Methods (`normalization` in the pipeline config):
  gaussian: y = (x - mean) / std                          (std < 1e-6 is treated as 1)
  bounds:   y = clip(2 (x - q01) / (q99 - q01) - 1, -1, 1)   (a zero range maps to 0)
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

from vla_jax.io import write_json_atomic

FORMAT = "vla_jax.statistics/1"
NORMALIZATION_METHODS = ("gaussian", "bounds")
_EPS = 1e-6
_STATS_VERSION = 1  # Bump when the computation changes so stale caches are not reused.


# ---- Computation. -------------------------------------------------------------------------------


def compute_statistics(trajectories: Iterable[Mapping[str, np.ndarray]], *, action_mask: list[bool],
                       action_kinds: list[str], dataset: str = "", dataset_hash: str = "") -> dict[str, Any]:
  """One pass over trajectories of {"action": float [T, A], "proprio": float [T, D]}.

  Quantiles are exact (all transitions are kept in memory: 4 bytes x (A + D) per step, ~0.5 GB for
  10 M steps of a 7-d action and 7-d proprio).
  """
  actions, proprios, num_traj = [], [], 0
  for traj in trajectories:
    actions.append(np.asarray(traj["action"], np.float32))
    proprios.append(np.asarray(traj["proprio"], np.float32))
    num_traj += 1
  if not num_traj:
    raise ValueError(f"dataset '{dataset}': no trajectories to compute statistics from")
  action = np.concatenate(actions, 0)
  proprio = np.concatenate(proprios, 0)
  stats = {
      "format": FORMAT,
      "dataset": dataset,
      "hash": dataset_hash,
      "num_transitions": int(action.shape[0]),
      "num_trajectories": num_traj,
      "action": {**_summary(action), "mask": [bool(m) for m in action_mask], "kinds": list(action_kinds)},
      "proprio": {**_summary(proprio), "mask": [True] * proprio.shape[1]},
  }
  return stats


def _summary(x: np.ndarray) -> dict[str, list[float]]:
  x64 = x.astype(np.float64)
  if x.shape[1] == 0:
    return {k: [] for k in ("mean", "std", "min", "max", "q01", "q99")}
  return {
      "mean": x64.mean(0).tolist(),
      "std": x64.std(0).tolist(),
      "min": x64.min(0).tolist(),
      "max": x64.max(0).tolist(),
      "q01": np.quantile(x64, 0.01, axis=0).tolist(),
      "q99": np.quantile(x64, 0.99, axis=0).tolist(),
  }


def statistics_hash(fingerprint: Mapping[str, Any]) -> str:
  """Stable short hash of a JSON-able fingerprint (dataset files + spec fields that affect stats)."""
  blob = json.dumps({"v": _STATS_VERSION, **fingerprint}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_fingerprint(builder_dir: str) -> dict[str, Any]:
  """Identity of a TFDS directory without reading its data: dataset_info.json + file names/sizes."""
  files = sorted(os.listdir(builder_dir))
  info_path = os.path.join(builder_dir, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  return {
      "name": info.get("name"),
      "version": info.get("version"),
      "splits": info.get("splits"),
      "files": [(name, os.path.getsize(os.path.join(builder_dir, name))) for name in files
                if ".tfrecord" in name or ".array_record" in name],
  }


# ---- JSON I/O. ----------------------------------------------------------------------------------


def save_statistics(path: str, stats: Mapping[str, Any]) -> None:
  """Writes statistics (one dataset's dict, or {name: dict}) as JSON, atomically."""
  write_json_atomic(path, stats, indent=1, sort_keys=True)


def load_statistics(path: str) -> dict[str, Any]:
  """The JSON written by `save_statistics`; ValueError naming the file if it is not such a JSON map."""
  try:
    with open(path) as f:
      stats = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"statistics file {path} is not valid JSON ({e})") from None
  if not isinstance(stats, dict):
    raise ValueError(f"statistics file {path} holds a {type(stats).__name__}, expected a JSON object")
  return stats


# ---- Normalisation (numpy, TF-free for evaluation / export / serving). ---------------------------


def affine_params(key_stats: Mapping[str, Any], method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(offset, scale, mask) such that normalised = (x - offset) / scale on masked dims (pre-clip)."""
  mask = np.asarray(key_stats["mask"], bool)
  if method == "gaussian":
    offset = np.asarray(key_stats["mean"], np.float64)
    scale = np.asarray(key_stats["std"], np.float64)
    scale = np.where(scale < _EPS, 1.0, scale)
  elif method == "bounds":
    low = np.asarray(key_stats["q01"], np.float64)
    high = np.asarray(key_stats["q99"], np.float64)
    offset = (high + low) / 2
    scale = (high - low) / 2
    scale = np.where(scale < _EPS, np.inf, scale)  # Zero range -> 0 after normalising.
  else:
    raise ValueError(f"normalization {method!r} not in {NORMALIZATION_METHODS}")
  return offset, scale, mask


def normalize(x: np.ndarray, key_stats: Mapping[str, Any], method: str) -> np.ndarray:
  """float [..., D] -> normalised float32 [..., D]; dims with mask False pass through."""
  offset, scale, mask = affine_params(key_stats, method)
  x = np.asarray(x, np.float32)
  y = (x - offset) / scale
  if method == "bounds":
    y = np.clip(y, -1.0, 1.0)
  return np.where(mask, y, x).astype(np.float32)


def unnormalize(y: np.ndarray, key_stats: Mapping[str, Any], method: str) -> np.ndarray:
  """Inverse of `normalize` (exact for gaussian; for bounds exact inside [q01, q99])."""
  offset, scale, mask = affine_params(key_stats, method)
  y = np.asarray(y, np.float32)
  finite_scale = np.where(np.isinf(scale), 0.0, scale)
  x = y * finite_scale + offset
  return np.where(mask, x, y).astype(np.float32)


def normalize_tf(x, key_stats: Mapping[str, Any], method: str):
  """TensorFlow twin of `normalize` for use inside tf.data: float [..., D] -> float32 [..., D]."""
  import tensorflow as tf  # Local: numpy users need not load TF.

  offset, scale, mask = affine_params(key_stats, method)
  x = tf.cast(x, tf.float32)
  if x.shape[-1] == 0:
    return x
  y = (x - tf.constant(offset, tf.float32)) / tf.constant(scale, tf.float32)
  if method == "bounds":
    y = tf.clip_by_value(y, -1.0, 1.0)
  return tf.where(tf.constant(mask), y, x)
