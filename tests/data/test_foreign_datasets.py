"""Datasets this project did not write load through a spec alone: Bridge and other builders."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vla_jax.data import language, pipeline, spec as spec_lib, statistics, testing
from tests.data.conftest import BRIDGE_DIR


def _config(specs, stats_dir, **overrides):
  config = pipeline.pipeline_config(list(specs), statistics_dir=stats_dir, **overrides)
  config.augmentation.enabled = False
  return config


def _bridge_episodes(split: str) -> list[dict]:
  builder = tfds.builder_from_directory(BRIDGE_DIR)
  return list(tfds.as_numpy(builder.as_dataset(split)))


def test_bridge_four_cameras_load_through_a_spec(bridge_available, stats_dir):
  cameras = {"primary": "image_0", "wrist": "image_1", "left": "image_2", "right": "image_3"}
  config = _config([spec_lib.bridge_spec(cameras=cameras)], stats_dir, batch_size=16, language="both")
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  for cam in cameras:
    assert batch["observation"][f"image_{cam}"].shape == (16, 2, 64, 64, 3)
  assert batch["observation"]["proprio"].shape == (16, 2, 7)
  assert batch["action"].shape == (16, 4, 7)
  assert batch["task"]["language_embedding"].shape == (16, 512)
  assert set(np.unique(batch["action"][..., 6])) <= {0.0, 1.0}  # Gripper: binarised, 1 = close.
  texts = set(language.detokenize(batch["task"]["language_tokens"]))
  instructions = {s["language_instruction"].decode() for ep in _bridge_episodes("train") for s in ep["steps"]}
  assert texts <= {t[:64] for t in instructions}


def test_bridge_batches_match_the_raw_episodes(bridge_available, stats_dir):
  """Validation batches, un-normalised, equal the stored steps (order: episodes, then steps)."""
  config = _config([spec_lib.bridge_spec()], stats_dir, batch_size=10, window=2, action_horizon=3)
  it = pipeline.make_val_iterator(config, process_index=0, process_count=1)
  stats = it.statistics["bridge"]
  episodes = _bridge_episodes("val")[:2]
  batches = [next(it) for _ in range(2)]  # Bridge episodes have 10 steps: one batch per episode.
  for episode, batch in zip(episodes, batches):
    steps = list(episode["steps"])
    raw_action = np.stack([s["action"] for s in steps])
    raw_state = np.stack([s["observation"]["state"] for s in steps])
    action = statistics.unnormalize(batch["action"], stats["action"], "gaussian")
    for t in range(10):
      for h in range(3):
        want = raw_action[min(t + h, 9)]
        np.testing.assert_allclose(action[t, h, :6], want[:6], rtol=1e-4, atol=1e-5)
        assert action[t, h, 6] == float(want[6] < 0.5)
      proprio = statistics.unnormalize(batch["observation"]["proprio"][t, -1], stats["proprio"], "gaussian")
      np.testing.assert_allclose(proprio, raw_state[t], rtol=1e-4, atol=1e-4)
      np.testing.assert_array_equal(batch["observation"]["image_primary"][t, -1], steps[t]["observation"]["image_0"])
      np.testing.assert_array_equal(batch["observation"]["image_wrist"][t, -1], steps[t]["observation"]["image_1"])
    np.testing.assert_array_equal(batch["observation"]["image_primary"][0, 0], steps[0]["observation"]["image_0"])
    np.testing.assert_array_equal(batch["observation"]["timestep_pad_mask"][:, 0], np.arange(10) >= 1)


def test_bridge_by_name_from_the_oxe_registry_reads_the_same_steps(bridge_available, stats_dir):
  """`spec.oxe_spec("bridge", root)` reads the real Bridge files (checked against the registered
  structure first): 6 end-effector dims as stored, gripper 1 = open flipped and binarised, the
  instruction, camera image_0."""
  root = BRIDGE_DIR.rsplit("/bridge_dataset/", 1)[0]
  config = _config([spec_lib.oxe_spec("bridge", root)], stats_dir, batch_size=10, window=1, action_horizon=1)
  it = pipeline.make_val_iterator(config, process_index=0, process_count=1)
  stats = it.statistics["bridge"]
  for episode, batch in zip(_bridge_episodes("val")[:2], [next(it) for _ in range(2)]):
    steps = list(episode["steps"])  # 10 steps: one batch per episode.
    raw_action = np.stack([s["action"] for s in steps])
    action = statistics.unnormalize(batch["action"][:, 0], stats["action"], "gaussian")
    np.testing.assert_allclose(action[:, :6], raw_action[:, :6], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(action[:, 6], (raw_action[:, 6] < 0.5).astype(np.float32))
    np.testing.assert_array_equal(batch["observation"]["image_primary"][:, 0],
                                  np.stack([s["observation"]["image_0"] for s in steps]))
    assert language.detokenize(batch["task"]["language_tokens"]) == [
        s["language_instruction"].decode()[:64] for s in steps]


@pytest.fixture(scope="module")
def other_robot_dir(tmp_path_factory) -> str:
  return testing.write_synthetic_rlds(
      str(tmp_path_factory.mktemp("other")), name="other_robot_rlds", image_size=(96, 80),
      cameras=("front_rgb", "hand_rgb"), state_key="joint_pos", state_dim=9, action_dim=6,
      episode_lengths={"train": [6, 9, 4], "val": [5]})


def test_other_builder_image_size_and_action_dim_load_the_same_way(other_robot_dir, stats_dir):
  spec = spec_lib.dataset_spec(
      name="other_robot", builder_dir=other_robot_dir, cameras={"primary": "front_rgb", "wrist": "hand_rgb"},
      image_size_px=(96, 80), proprio_key="joint_pos", proprio_dim=9, action_dim=6,
      action_dim_kinds=("relative",) * 3 + ("absolute",) * 2 + ("gripper",))
  config = _config([spec], stats_dir, batch_size=4, image_size_px=(64, 64), window=2, action_horizon=3)
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  assert batch["observation"]["image_primary"].shape == (4, 2, 64, 64, 3)
  assert batch["observation"]["image_wrist"].shape == (4, 2, 64, 64, 3)
  assert batch["observation"]["proprio"].shape == (4, 2, 9)
  assert batch["action"].shape == (4, 3, 6)
  # Flat-colour frames survive resizing exactly: channel 2 identifies the camera.
  assert (batch["observation"]["image_wrist"][..., 2] == 40).all()
  assert (batch["observation"]["image_primary"][..., 2] == 0).all()


def test_oxe_style_action_fields_and_episode_language_via_standardize_fn(tmp_path_factory, stats_dir):
  builder_dir = testing.write_synthetic_rlds(
      str(tmp_path_factory.mktemp("oxe")), name="oxe_like_rlds", action_dim=7, oxe_action_fields=True,
      language_level="episode", episode_lengths={"train": [5, 4], "val": [3]})
  spec = spec_lib.dataset_spec(
      name="oxe_like", builder_dir=builder_dir, cameras={"primary": "image"}, proprio_key="state",
      proprio_dim=5, action_dim=7, action_dim_kinds=("relative",) * 6 + ("gripper",),
      language_key="instruction", language_level="episode", standardize_fn="oxe_eef_pos_gripper")
  config = _config([spec], stats_dir, batch_size=3, val_drop_remainder=False)
  batches = list(pipeline.make_val_iterator(config, process_index=0, process_count=1))
  stats = batches and pipeline.open_sources(config)[0].statistics
  action = statistics.unnormalize(np.concatenate([b["action"] for b in batches]), stats["action"], "gaussian")
  want = np.stack([testing.episode_action(2, t, 7) for t in range(3)])
  np.testing.assert_allclose(action[:, 0], want, atol=1e-4)  # Gripper {-1, 1} mapped back to {0, 1}.
  assert language.detokenize(batches[0]["task"]["language_tokens"]) == ["task 2"] * 3


@pytest.fixture(scope="module")
def tabletop_tiny_dir(tmp_path_factory) -> str:
  """The built-in dataset, tiny variant, written into a tmp dir."""
  from experiments.configs import tabletop_data
  from vla_jax.data import tabletop_builder

  config = tabletop_data.get_config("tiny")
  config.data_dir = str(tmp_path_factory.mktemp("tabletop"))
  return str(tabletop_builder.write_dataset(config, progress=False))


def test_tabletop_builtin_dataset_loads_with_its_spec(tabletop_tiny_dir, stats_dir):
  config = _config([spec_lib.tabletop_spec(builder_dir=tabletop_tiny_dir)], stats_dir, batch_size=8)
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  assert batch["observation"]["image_primary"].shape == (8, 2, 64, 64, 3)
  assert batch["observation"]["proprio"].shape == (8, 2, 5)
  assert batch["action"].shape == (8, 4, 3)
  assert set(np.unique(batch["action"][..., 2])) <= {0.0, 1.0}
  assert all(text for text in language.detokenize(batch["task"]["language_tokens"]))


def test_mixture_of_bridge_and_another_robot_pads_to_the_config_sizes(bridge_available, toy_spec, stats_dir):
  config = _config([spec_lib.bridge_spec(), toy_spec], stats_dir, batch_size=32, cameras=("primary",),
                   action_dim=7, proprio_dim=7)
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  assert batch["action"].shape == (32, 4, 7) and batch["observation"]["proprio"].shape == (32, 2, 7)
  from_toy = batch["dataset_index"] == pipeline.dataset_names(config).index("toy")
  assert from_toy.any() and (~from_toy).any()
  assert (batch["action"][from_toy][..., 3:] == 0).all()  # Padded dims of the 3-d dataset.


def test_mixture_with_different_action_sizes_needs_an_explicit_size(bridge_available, toy_spec, stats_dir):
  with pytest.raises(ValueError, match="datasets disagree on action_dim"):
    pipeline.make_train_iterator(_config([spec_lib.bridge_spec(), toy_spec], stats_dir), process_index=0,
                                 process_count=1)
