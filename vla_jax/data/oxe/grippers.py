"""Gripper conventions of OXE datasets -> this project's: absolute, in [0, 1], 1 = close.

Why a module of its own: the gripper label is where silently wrong training data comes from. The
datasets disagree on almost everything — relative commands (RT-1: +1 close, -1 open, 0 keep),
absolute with 1 = close or with 1 = open, signed [-1, 1] or [0, 1], booleans, no gripper at all —
and a wrong mapping still produces plausible-looking numbers. Every conversion is here, named,
and unit-tested on hand-made sequences (tests/data/test_oxe_grippers.py).

All functions take a float tensor [T] and return float32 [T].
"""

from __future__ import annotations

import tensorflow as tf

from vla_jax.data.oxe.registry import GRIPPER_CONVENTIONS as CONVENTIONS


def relative_to_absolute(command: tf.Tensor, threshold: float = 0.1) -> tf.Tensor:
  """Relative commands (+1 close, -1 open, ~0 keep) -> absolute state after each step (1 = closed).

  "Keep" carries the last commanded state forward (the bug this replaces mapped it to 0.5). The
  state before the first command is the opposite of that command — a first "close" means the
  gripper was open — and an episode with no command at all is open throughout (RT-1's and Octo's
  reading of the data).
  """
  command = tf.cast(tf.reshape(command, [-1]), tf.float32)
  signed = tf.where(command > threshold, 1.0, tf.where(command < -threshold, -1.0, 0.0))
  issued = tf.boolean_mask(signed, tf.not_equal(signed, 0.0))
  start = tf.cond(tf.size(issued) > 0, lambda: -issued[0], lambda: tf.constant(-1.0))
  state = tf.scan(lambda carry, s: tf.where(tf.equal(s, 0.0), carry, s), signed, initializer=start)
  return (state + 1.0) / 2.0


def close_is_1(value: tf.Tensor) -> tf.Tensor:
  """Absolute with 1 = close, in [0, 1] or signed [-1 open, 1 close]: clip to [0, 1]."""
  return tf.clip_by_value(tf.cast(tf.reshape(value, [-1]), tf.float32), 0.0, 1.0)


def open_is_1(value: tf.Tensor) -> tf.Tensor:
  """Absolute with 1 = open (booleans too), in [0, 1] or signed [-1 close, 1 open]: 1 - clip."""
  return 1.0 - close_is_1(value)


def binarize(value: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
  """Continuous [0, 1] with 1 = close -> {0, 1}: the gripper command is open/close, and a policy
  trained on half-closed labels hesitates at exactly the moment it should grasp."""
  return tf.cast(tf.reshape(value, [-1]) > threshold, tf.float32)


def to_close_is_1(value: tf.Tensor | None, convention: str, length: tf.Tensor) -> tf.Tensor:
  """Applies a named convention (CONVENTIONS); `value` is None for the always_* ones."""
  if convention == "relative":
    return relative_to_absolute(value)
  if convention == "close_is_1":
    return close_is_1(value)
  if convention == "open_is_1":
    return open_is_1(value)
  if convention == "open_is_1_binarized":
    return binarize(open_is_1(value))
  if convention == "always_closed":
    return tf.ones([length], tf.float32)
  if convention == "always_open":
    return tf.zeros([length], tf.float32)
  raise ValueError(f"gripper convention {convention!r} not in {CONVENTIONS}")
