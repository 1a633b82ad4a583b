"""The observation window: which observation key feeds which policy input, and training's padding."""

import numpy as np
import pytest

from vla_jax.inference.window import ObservationWindow, observation_keys, policy_observation, robot_image_keys


def _run_config(cameras: dict, proprio_key: str = "state") -> dict:
  return {"data": {"datasets": {"mw": {"cameras": cameras, "proprio_key": proprio_key}}}}


def test_keys_come_from_the_acting_datasets_spec_else_the_simulators_convention():
  model = {"cameras": ["primary", "wrist"]}
  run = _run_config({"primary": "image", "wrist": "image_wrist"})
  assert observation_keys(model, run, "mw") == {"image_primary": "image", "image_wrist": "image_wrist", "proprio": "state"}
  # No spec of that dataset (a random bundle, an old export): image -> first camera, image_<c> -> the others.
  assert observation_keys(model, None, None) == {"image_primary": "image", "image_wrist": "image_wrist",
                                                 "proprio": "state"}
  assert observation_keys({"cameras": []}, _run_config({"primary": "image"}, "env_state"), "mw") == {"proprio": "env_state"}
  # A camera the dataset lacks is fed zeros (as the pipeline fed it); none of them is an error.
  assert observation_keys(model, _run_config({"primary": "image_0"}), "mw")["image_wrist"] is None
  with pytest.raises(ValueError, match="names none of the model's cameras"):
    observation_keys(model, _run_config({"top": "image"}), "mw")


def test_every_camera_is_windowed_and_padded_like_training():
  window = ObservationWindow(3, {"image_primary": "image", "image_wrist": "image_wrist", "image_side": None,
                                 "proprio": "state"})
  frame = lambda v: {"image": np.full((2, 8, 8, 3), v, np.uint8), "image_wrist": np.full((2, 8, 8, 3), 10 + v, np.uint8),
                     "state": np.full((2, 4), v, np.float32), "instruction": ["a", "b"]}
  window.push(frame(1))
  window.push(frame(2))
  inputs = window.inputs()
  assert set(inputs) == {"image_primary", "image_wrist", "image_side", "proprio", "timestep_pad_mask"}
  assert inputs["image_wrist"].shape == (2, 3, 8, 8, 3) and inputs["proprio"].shape == (2, 3, 4)
  # Oldest first; the episode's first frame repeated as padding (mask False), as traj_transforms pads.
  np.testing.assert_array_equal(inputs["image_wrist"][0, :, 0, 0, 0], [11, 11, 12])
  np.testing.assert_array_equal(inputs["proprio"][1, :, 0], [1, 1, 2])
  np.testing.assert_array_equal(inputs["timestep_pad_mask"][0], [False, True, True])
  assert not inputs["image_side"].any() and inputs["image_side"].shape == (2, 3, 8, 8, 3)


def test_bad_observations_are_named():
  window = ObservationWindow(2, {"image_primary": "image", "image_wrist": "image_wrist", "proprio": "state"})
  with pytest.raises(KeyError, match=r"lacks \['image_wrist'\]"):
    window.push({"image": np.zeros((1, 8, 8, 3), np.uint8), "state": np.zeros((1, 4))})
  with pytest.raises(ValueError, match="'image_wrist' uint8 \\[N, S, S, 3\\] for 1 robots"):
    window.push({"image": np.zeros((1, 8, 8, 3), np.uint8), "image_wrist": np.zeros((2, 8, 8, 3), np.uint8),
                 "state": np.zeros((1, 4))})
  with pytest.raises(RuntimeError, match="push"):
    window.inputs()


def test_a_robot_observation_feeds_a_policy_under_its_own_keys():
  class Policy:
    observation_keys = {"image_primary": "image_0", "proprio": "state"}

  frame = np.zeros((8, 8, 3), np.uint8)
  obs = policy_observation(Policy(), {"image": frame, "state": np.zeros(7)})
  assert set(obs) == {"image_0", "state"} and obs["image_0"].shape == (1, 8, 8, 3) and obs["state"].dtype == np.float32
  # Two cameras: "image" feeds the first, image_<camera> the second (whatever the dataset called it).
  Policy.observation_keys = {"image_primary": "image", "image_corner": "image_corner_cam", "proprio": "state"}
  assert robot_image_keys(Policy.observation_keys) == {"image": "image_primary", "image_corner": "image_corner"}
  obs = policy_observation(Policy(), {"image": frame, "image_corner": frame + 1, "state": np.zeros(4)})
  assert set(obs) == {"image", "image_corner_cam", "state"} and obs["image_corner_cam"].max() == 1
  with pytest.raises(ValueError, match=r"the observation lacks \['image_corner'\]: this policy reads the frames "
                                       r"\['image', 'image_corner'\] and 'state'"):
    policy_observation(Policy(), {"image": frame, "state": np.zeros(4)})
  # A camera the acting dataset lacks is fed zeros by the window: the robot is not asked for it.
  Policy.observation_keys = {"image_primary": "image", "image_wrist": None, "proprio": "state"}
  assert set(policy_observation(Policy(), {"image": frame, "state": np.zeros(4)})) == {"image", "state"}
