"""Whole-trajectory transforms: observation history windows, action chunks, padding masks, goals.

Why on whole trajectories: every index is computed inside one episode (a `tf.gather` with indices
clipped to [0, T-1]), so a window can never reach into the previous episode and an action chunk can
never wrap into the next one — episode boundaries are the tensor boundaries. After these transforms
a trajectory of T steps holds T samples (one per step) and is `unbatch`ed into them.

For step t of an episode of length T, with window W and horizon H:

  observation/*[t, k]          = observation[max(t - W + 1 + k, 0)]         k = 0..W-1
  observation/timestep_pad_mask[t, k] = (t - W + 1 + k >= 0)   (False: padding before the episode
                                  start; the padded frames repeat the first frame)
  action[t, h]                 = action[min(t + h, T - 1)]                  h = 0..H-1
  action_pad_mask[t, h]        = (t + h < T)   (False past the episode end; the padded entries
                                  repeat the episode's last action, never the next episode's)

With a per-step `perturbed` [T] bool leaf (a scripted demonstrator's executed action at that step
was deliberately not its recorded label: a recovery demonstration), chunk entries after such a
step are unpredictable from earlier frames and are masked too:

  action_pad_mask[t, h]       &= no p with perturbed[p] and t <= p < t + h

The label at p itself stays (it is the demonstrator's intended action); what follows answers an
event the frames up to t cannot show. Without the mask a long chunk learns to sample recoveries
from mistakes that never happened. The leaf is consumed (absent from the output).

The action chunk starts at the *current* (last) observation of the window: the model sees frames
t-W+1..t and predicts actions t..t+H-1. Every other leaf (`task/*`, `aux/*` referent labels,
`dataset_index`) stays per step, so sample t carries the labels of its current frame t.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def window_and_chunk(traj: dict[str, Any], window: int, horizon: int) -> dict[str, Any]:
  """Trajectory (leaves [T, ...]) -> per-step samples (observation [T, W, ...], action [T, H, A]).

  Args:
    traj: {"observation": {name: [T, ...]}, "task": {name: [T, ...]}, "action": float [T, A], ...}
      (e.g. "aux": {"referent_xy": [T, K, 2], "referent_valid": [T, K]}; optional "perturbed" bool
      [T], see the module docstring).
    window: observation history length W >= 1.
    horizon: action chunk length H >= 1.

  Returns:
    The same dict with observation leaves [T, W, ...] plus `observation/timestep_pad_mask` bool
    [T, W], `action` [T, H, A] and `action_pad_mask` bool [T, H]; `task`, `aux` and other leaves
    unchanged ([T, ...]: after unbatching, sample t holds step t's values).
  """
  if window < 1 or horizon < 1:
    raise ValueError(f"window and horizon must be >= 1, got window={window}, horizon={horizon}")
  length = tf.shape(traj["action"])[0]
  t = tf.range(length)[:, None]
  obs_index = t + tf.range(-window + 1, 1)[None, :]          # [T, W]
  timestep_pad_mask = obs_index >= 0
  obs_index = tf.maximum(obs_index, 0)
  act_index = t + tf.range(horizon)[None, :]                 # [T, H]
  action_pad_mask = act_index < length
  traj = dict(traj)
  perturbed = traj.pop("perturbed", None)
  if perturbed is not None:
    # before[k] = perturbations at steps < k, so before[t + h] - before[t] counts those in [t, t + h).
    before = tf.concat([[0], tf.cumsum(tf.cast(perturbed, tf.int32))], axis=0)
    between = tf.gather(before, tf.minimum(act_index, length)) - tf.gather(before, t)
    action_pad_mask &= between == 0
  act_index = tf.minimum(act_index, length - 1)

  observation = {k: tf.gather(v, obs_index) for k, v in traj["observation"].items()}
  observation["timestep_pad_mask"] = timestep_pad_mask
  return {
      **traj,
      "observation": observation,
      "action": tf.gather(traj["action"], act_index),
      "action_pad_mask": action_pad_mask,
  }


def relabel_goal_uniform(traj: dict[str, Any], camera: str, seed: tf.Tensor) -> dict[str, Any]:
  """Adds `task/image_goal` uint8 [T, H, W, 3]: for step t, a frame drawn uniformly from t..T-1.

  Uses the decoded, not windowed, `observation/image_<camera>` [T, H, W, 3]; call before
  `window_and_chunk`. `seed` is an int32 [2] stateless seed (one per trajectory and epoch).
  """
  images = traj["observation"][f"image_{camera}"]
  length = tf.shape(images)[0]
  u = tf.random.stateless_uniform([length], seed)
  t = tf.range(length)
  offset = tf.cast(u * tf.cast(length - t, tf.float32), tf.int32)   # 0 .. T-1-t
  goal_index = tf.minimum(t + offset, length - 1)
  return {**traj, "task": {**traj["task"], "image_goal": tf.gather(images, goal_index)}}
