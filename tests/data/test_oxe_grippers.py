"""Gripper conventions -> absolute in [0, 1], 1 = close, on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from vla_jax.data.oxe import grippers


def _run(fn, values, dtype=tf.float32) -> list[float]:
  return fn(tf.constant(values, dtype)).numpy().tolist()


def test_relative_keep_carries_the_last_commanded_state():
  # close, keep, keep, open, keep (RT-1: +1 close, -1 open, 0 keep)
  assert _run(grippers.relative_to_absolute, [0, 1, 0, 0, -1, 0]) == [0, 1, 1, 1, 0, 0]


def test_relative_state_before_the_first_command_is_its_opposite():
  # The first command is "open", so the gripper was closed until then.
  assert _run(grippers.relative_to_absolute, [0, 0, -1, 0, 1]) == [1, 1, 0, 0, 1]


def test_relative_without_any_command_is_open_throughout():
  assert _run(grippers.relative_to_absolute, [0, 0, 0]) == [0, 0, 0]
  assert _run(grippers.relative_to_absolute, np.zeros([0], np.float32)) == []


def test_relative_small_values_are_keep_and_shapes_t_by_1_are_accepted():
  assert _run(grippers.relative_to_absolute, [[0.05], [0.9], [-0.05], [-0.7]]) == [0, 1, 1, 0]


def test_relative_conversion_runs_inside_tf_data():
  ds = tf.data.Dataset.from_tensors(tf.constant([1.0, 0.0, -1.0])).map(grippers.relative_to_absolute)
  assert ds.get_single_element().numpy().tolist() == [1, 1, 0]


def test_close_is_1_clips_signed_and_unit_values():
  assert _run(grippers.close_is_1, [-1, 1, 0.25, 2]) == [0, 1, 0.25, 1]


def test_open_is_1_inverts_floats_and_booleans():
  assert _run(grippers.open_is_1, [1, -1, 0.25]) == [0, 1, 0.75]
  assert _run(grippers.open_is_1, [True, False], tf.bool) == [0, 1]


def test_continuous_open_is_1_becomes_binary_close():
  out = grippers.to_close_is_1(tf.constant([1.0, 0.0, 0.7, 0.3, 0.5]), "open_is_1_binarized", 5).numpy()
  assert out.tolist() == [0, 1, 0, 1, 0]  # Exactly half-open stays open.


def test_datasets_without_a_gripper_get_a_constant():
  assert grippers.to_close_is_1(None, "always_closed", tf.constant(3)).numpy().tolist() == [1, 1, 1]
  assert grippers.to_close_is_1(None, "always_open", tf.constant(2)).numpy().tolist() == [0, 0]


def test_unknown_convention_is_refused():
  with pytest.raises(ValueError, match="gripper convention 'inverted' not in"):
    grippers.to_close_is_1(tf.zeros([2]), "inverted", 2)
