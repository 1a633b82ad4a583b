"""A second robot for multi-embodiment experiments, made from the built-in tabletop data.

"arm7": the same table and camera, seen by an arm whose base is turned 90° and which speaks a
7-D end-effector action (x, y, z, roll, pitch, yaw, gripper) and a 6-D state (x, y, z, gripper
closed, contact, push force). Reading the tabletop RLDS through the `tabletop_rotated_arm7`
standardisation gives its episodes: in the arm's frame x' = y, y' = -x, the unused dims are 0.

Why this robot: for the same image and instruction its actions differ from the tabletop's (the
frame is rotated), so a mixture policy must read *which* robot it drives — a model without an
embodiment input averages the two and moves neither correctly — and its padded dims are not the
tabletop's, so the action-dim masks matter. It needs no extra data on disk.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from vla_jax.data import spec as spec_lib
from vla_jax.data.standardize import Episode, register_standardize_fn

ARM7_ACTION_DIM = 7
ARM7_STATE_DIM = 6


def rotate_actions(action: tf.Tensor) -> tf.Tensor:
  """Tabletop [T, 3] (dx, dy, gripper) → arm7 [T, 7] (dy, -dx, 0, 0, 0, 0, gripper)."""
  action = tf.cast(action, tf.float32)
  zeros = tf.zeros_like(action[:, :1])
  return tf.concat([action[:, 1:2], -action[:, 0:1], zeros, zeros, zeros, zeros, action[:, 2:3]], axis=-1)


def rotate_state(state: tf.Tensor) -> tf.Tensor:
  """Tabletop [T, 5] (x, y, closed, contact, force) → arm7 [T, 6] (y, -x, 0, closed, contact, force)."""
  state = tf.cast(state, tf.float32)
  return tf.concat([state[:, 1:2], -state[:, 0:1], tf.zeros_like(state[:, :1]), state[:, 2:5]], axis=-1)


@register_standardize_fn("tabletop_rotated_arm7")
def standardize_rotated_arm7(episode: Episode) -> Episode:
  steps = dict(episode["steps"])
  steps["action"] = rotate_actions(steps["action"])
  steps["observation"] = {**steps["observation"], "state": rotate_state(steps["observation"]["state"])}
  return {**episode, "steps": steps}


def arm7_spec(builder_dir: str = "data/tabletop/1.0.0", **overrides) -> ml_collections.ConfigDict:
  """The arm7 robot's dataset spec over a built-in tabletop dataset directory."""
  kwargs = dict(
      name="arm7", builder_dir=builder_dir, cameras={"primary": "image"}, image_size_px=(64, 64),
      proprio_key="state", proprio_dim=ARM7_STATE_DIM, action_key="action", action_dim=ARM7_ACTION_DIM,
      action_dim_kinds=("relative",) * 6 + ("gripper",), language_key="language_instruction",
      referents_key="referents", train_split="train", val_split="val", standardize_fn="tabletop_rotated_arm7")
  kwargs.update(overrides)
  return spec_lib.dataset_spec(**kwargs)
