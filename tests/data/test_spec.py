"""A spec that does not match its dataset fails at start with one actionable error."""

from __future__ import annotations

import pytest

from vla_jax.data import pipeline, spec as spec_lib
from tests.data.conftest import BRIDGE_DIR


def _open(spec, stats_dir):
  return pipeline.open_sources(pipeline.pipeline_config([spec], statistics_dir=stats_dir))


def test_missing_camera_key_names_it_and_the_keys_that_exist(bridge_available, stats_dir):
  spec = spec_lib.bridge_spec(cameras={"primary": "image_9"})
  with pytest.raises(ValueError) as error:
    _open(spec, stats_dir)
  assert str(error.value) == (
      "dataset 'bridge': spec wants steps/observation/image_9 (camera 'primary'), dataset has "
      "steps/observation/{image_0, image_1, image_2, image_3, state}")


def test_every_missing_key_is_reported_in_one_error(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.proprio_key, spec.action_key = "joint_pos", "actions"
  with pytest.raises(ValueError) as error:
    _open(spec, stats_dir)
  message = str(error.value)
  assert "spec wants steps/observation/joint_pos (proprio), dataset has steps/observation/{image, state}" in message
  assert "spec wants steps/actions (action), dataset has steps/{action, discount, is_first" in message


def test_wrong_action_dim_is_reported(toy_spec, stats_dir):
  spec = spec_lib.dataset_spec(name="toy", builder_dir=toy_spec.builder_dir, cameras={"primary": "image"},
                               action_dim=4)
  with pytest.raises(ValueError, match=r"spec says action_dim=4, steps/action has 3 dims"):
    _open(spec, stats_dir)


def test_wrong_image_size_is_reported(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.image_size_px = (128, 128)
  with pytest.raises(ValueError, match=r"image_size_px=\(128, 128\), steps/observation/image stores 64x64"):
    _open(spec, stats_dir)


def test_missing_split_suggests_a_split_by_episode(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.train_split = "training"
  with pytest.raises(ValueError, match=r"split 'training'.*dataset has splits \{train, val\}.*train\[:95%\]"):
    _open(spec, stats_dir)


def test_missing_directory_is_reported(tmp_path, stats_dir):
  spec = spec_lib.dataset_spec(name="nowhere", builder_dir=str(tmp_path / "nope"), cameras={"primary": "image"},
                               action_dim=2)
  with pytest.raises(ValueError, match="no RLDS/TFDS dataset at"):
    _open(spec, stats_dir)


def test_builder_dir_without_version_picks_the_newest_version(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.builder_dir = toy_spec.builder_dir.rsplit("/", 1)[0]
  (source,) = _open(spec, stats_dir)
  assert source.builder_dir.endswith("1.0.0")


def test_inconsistent_spec_fields_fail_before_reading():
  with pytest.raises(ValueError, match="action_dim is 3 but action_dim_kinds has 2"):
    spec_lib.dataset_spec(name="x", builder_dir=BRIDGE_DIR, cameras={"primary": "image_0"}, action_dim=3,
                          action_dim_kinds=("relative", "gripper"))


def test_unknown_standardize_fn_lists_the_registered_ones(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.standardize_fn = "does_not_exist"
  with pytest.raises(ValueError, match="not registered; known: .*bridge"):
    _open(spec, stats_dir)
