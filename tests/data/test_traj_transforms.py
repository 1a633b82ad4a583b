"""Windows, action chunks and their masks on hand-made episodes (pure TF, no dataset)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from vla_jax.data import traj_transforms


def _episode(length: int, episode_id: int) -> dict:
  t = np.arange(length, dtype=np.float32)
  return {
      "observation": {"image_primary": tf.constant(np.repeat(t[:, None, None, None], 2, 1).repeat(2, 2).repeat(3, 3)
                                                   .astype(np.uint8)),
                      "proprio": tf.constant(np.stack([t, np.full_like(t, episode_id)], -1))},
      "task": {"language_tokens": tf.zeros([length, 4], tf.int32)},
      "action": tf.constant(np.stack([t, np.full_like(t, episode_id)], -1)),
  }


def test_window_pads_before_episode_start_with_first_frame():
  out = traj_transforms.window_and_chunk(_episode(4, 0), window=3, horizon=1)
  proprio_t = out["observation"]["proprio"].numpy()[..., 0]      # [T, W]
  np.testing.assert_array_equal(proprio_t, [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]])
  np.testing.assert_array_equal(out["observation"]["timestep_pad_mask"].numpy(),
                                [[False, False, True], [False, True, True], [True, True, True], [True, True, True]])
  images = out["observation"]["image_primary"].numpy()[:, :, 0, 0, 0]
  np.testing.assert_array_equal(images, proprio_t)


def test_action_chunk_never_crosses_episode_end():
  out = traj_transforms.window_and_chunk(_episode(3, 7), window=1, horizon=4)
  action = out["action"].numpy()                                  # [T, H, 2]
  np.testing.assert_array_equal(action[..., 0], [[0, 1, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2]])
  assert (action[..., 1] == 7).all()  # Padded entries repeat this episode's last action.
  np.testing.assert_array_equal(out["action_pad_mask"].numpy(),
                                [[True, True, True, False], [True, True, False, False], [True, False, False, False]])


def test_single_step_episode_is_all_padding_but_the_current_step():
  out = traj_transforms.window_and_chunk(_episode(1, 3), window=2, horizon=3)
  np.testing.assert_array_equal(out["observation"]["timestep_pad_mask"].numpy(), [[False, True]])
  np.testing.assert_array_equal(out["action_pad_mask"].numpy(), [[True, False, False]])
  assert out["action"].shape == (1, 3, 2)


def test_chunk_entries_after_a_perturbation_are_masked_and_the_leaf_is_consumed():
  episode = _episode(7, 0)
  episode["perturbed"] = tf.constant([False, False, True, False, False, True, False])  # Mistakes at steps 2, 5.
  out = traj_transforms.window_and_chunk(episode, window=1, horizon=4)
  assert "perturbed" not in out
  # Step t, entry h (step t + h): masked once a mistake p with t <= p < t + h lies before it, or past the end.
  np.testing.assert_array_equal(out["action_pad_mask"].numpy(), [
      [True, True, True, False],    # t = 0: 0, 1, 2 (the mistake's own label stays); 3 follows the mistake at 2.
      [True, True, False, False],   # t = 1: 1, 2; not 3, 4.
      [True, False, False, False],  # t = 2: the mistake's step only.
      [True, True, True, False],    # t = 3: 3, 4, 5; 6 follows the mistake at 5.
      [True, True, False, False],   # t = 4.
      [True, False, False, False],  # t = 5.
      [True, False, False, False],  # t = 6: the episode's end.
  ])
  np.testing.assert_array_equal(out["action"].numpy()[..., 0], traj_transforms.window_and_chunk(
      _episode(7, 0), window=1, horizon=4)["action"].numpy()[..., 0])  # Labels unchanged.


def test_task_leaves_stay_per_step():
  out = traj_transforms.window_and_chunk(_episode(5, 0), window=2, horizon=2)
  assert out["task"]["language_tokens"].shape == (5, 4)


def test_goal_is_a_future_frame_of_the_same_episode():
  episode = _episode(6, 0)
  out = traj_transforms.relabel_goal_uniform(episode, "primary", tf.constant([1, 2], tf.int32))
  goal_t = out["task"]["image_goal"].numpy()[:, 0, 0, 0]
  assert (goal_t >= np.arange(6)).all() and (goal_t <= 5).all()
