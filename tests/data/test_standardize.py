"""Standardisation: key mapping to the internal layout and the registered functions."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vla_jax.data import spec as spec_lib, standardize


def _episode() -> dict:
  return {
      "steps": {
          "observation": {"rgb": tf.constant(["a", "b"]), "joints": tf.ones([2, 4]),
                          "natural_language_instruction": tf.constant(["pick it", "pick it"])},
          "action": {"world_vector": tf.ones([2, 3]), "rotation_delta": tf.zeros([2, 3]),
                     "gripper_closedness_action": tf.constant([[-1.0], [1.0]])},
      },
      "episode_metadata": {"goal": tf.constant("stack")},
  }


def _spec(**overrides):
  kwargs = dict(name="rt", builder_dir="unused", cameras={"primary": "rgb"}, proprio_key="joints", proprio_dim=4,
                action_dim=7, action_dim_kinds=("relative",) * 6 + ("gripper",),
                language_key="observation/natural_language_instruction", standardize_fn="oxe_eef_pos_gripper")
  kwargs.update(overrides)
  return spec_lib.dataset_spec(**kwargs)


def test_oxe_action_fields_are_concatenated_and_gripper_mapped_to_unit_interval():
  episode = standardize.get_standardize_fn("oxe_eef_pos_gripper")(_episode())
  traj = standardize.to_internal(episode, _spec())
  np.testing.assert_array_equal(traj["action"].numpy(), [[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 1]])


def test_nested_language_key_and_episode_level_language():
  episode = standardize.get_standardize_fn("oxe_eef_pos_gripper")(_episode())
  traj = standardize.to_internal(episode, _spec())
  assert traj["task"]["language_instruction"].numpy().tolist() == [b"pick it", b"pick it"]
  traj = standardize.to_internal(episode, _spec(language_key="goal", language_level="episode"))
  assert traj["task"]["language_instruction"].numpy().tolist() == [b"stack", b"stack"]


def test_bridge_gripper_is_inverted_and_binarised():
  episode = {"steps": {"action": tf.constant([[0.1] * 6 + [1.0], [0.2] * 6 + [0.0], [0.0] * 6 + [0.7]])}}
  out = standardize.standardize_bridge(episode)["steps"]["action"].numpy()
  np.testing.assert_array_equal(out[:, 6], [0.0, 1.0, 0.0])
  np.testing.assert_allclose(out[:, :6], [[0.1] * 6, [0.2] * 6, [0.0] * 6])


def test_invert_gripper_and_broadcast_helpers():
  np.testing.assert_array_equal(standardize.invert_gripper(tf.constant([[0.5, 1.0]])).numpy(), [[0.5, 0.0]])
  episode = standardize.broadcast_episode_field(
      {"steps": {"action": tf.zeros([3, 2])}, "episode_metadata": {"goal": tf.constant("x")}}, "goal")
  assert episode["steps"]["goal"].numpy().tolist() == [b"x"] * 3


def test_oxe_relative_gripper_keep_carries_the_last_state_instead_of_half_closed():
  """RT-1's gripper_closedness_action is relative: 0 means keep, not 0.5 (the old bug)."""
  episode = {"steps": {"action": {"world_vector": tf.zeros([5, 3]), "rotation_delta": tf.zeros([5, 3]),
                                  "gripper_closedness_action": tf.constant([[1.0], [0.0], [0.0], [-1.0], [0.0]])}}}
  out = standardize.get_standardize_fn("oxe_eef_pos_gripper")(episode)["steps"]["action"].numpy()
  np.testing.assert_array_equal(out[:, 6], [1, 1, 1, 0, 0])
