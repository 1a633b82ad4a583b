"""Referent labels (`config.num_referents`): batch["aux"] carries the current step's labels, or nothing."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vla_jax.data import pipeline, spec as spec_lib, testing
from tests.data.test_pipeline import _assert_equal_batches, _config, _ids, _train

LENGTHS = {"train": [5, 1, 8, 3], "val": [4, 6]}


def _labelled_dir(tmp_path_factory, num_referents: int) -> str:
  return testing.write_synthetic_rlds(str(tmp_path_factory.mktemp(f"ref{num_referents}")),
                                      name=f"ref{num_referents}_rlds", episode_lengths=LENGTHS,
                                      num_referents=num_referents)


def _spec(builder_dir: str, name: str = "labelled", referents_key: str | None = "referents"):
  return spec_lib.dataset_spec(
      name=name, builder_dir=builder_dir, cameras={"primary": "image"}, image_size_px=(64, 64),
      proprio_key="state", proprio_dim=5, action_dim=3, action_dim_kinds=("relative", "relative", "gripper"),
      referents_key=referents_key)


@pytest.fixture(scope="module")
def two_dir(tmp_path_factory) -> str:
  return _labelled_dir(tmp_path_factory, 2)


def _assert_current_step_labels(batch, num_referents: int, dataset_referents: int) -> None:
  episode, step = _ids(batch)
  for b in range(len(episode)):
    want_xy, want_valid = testing.episode_referents(int(episode[b, -1]), int(step[b, -1]), dataset_referents)
    np.testing.assert_allclose(batch["aux"]["referent_xy"][b, :dataset_referents], want_xy, atol=1e-6)
    np.testing.assert_array_equal(batch["aux"]["referent_valid"][b, :dataset_referents], want_valid)
    assert not batch["aux"]["referent_valid"][b, dataset_referents:num_referents].any()
    assert (batch["aux"]["referent_xy"][b, dataset_referents:num_referents] == 0).all()


def test_batches_carry_the_referents_of_the_current_step(two_dir, stats_dir):
  it = _train(_config([_spec(two_dir)], stats_dir, window=3, batch_size=5, num_referents=2))
  for _ in range(6):  # Over an epoch (17 samples): windows padded at episode starts included.
    batch = next(it)
    assert batch["aux"]["referent_xy"].shape == (5, 2, 2) and batch["aux"]["referent_xy"].dtype == np.float32
    assert batch["aux"]["referent_valid"].shape == (5, 2) and batch["aux"]["referent_valid"].dtype == bool
    _assert_current_step_labels(batch, 2, 2)


def test_referents_off_gives_no_aux_key_and_the_same_batches_as_before(two_dir, stats_dir):
  with_labels = _config([_spec(two_dir)], stats_dir)
  without_field = _config([_spec(two_dir, referents_key=None)], stats_dir)
  assert with_labels.num_referents == 0
  a, b = _train(with_labels), _train(without_field)
  for _ in range(3):
    batch = next(a)
    assert "aux" not in batch
    _assert_equal_batches(batch, next(b))
  assert "aux" not in pipeline.make_val_iterator(with_labels, process_index=0, process_count=1).element_spec


def test_referents_off_keeps_the_iterator_state_hash_of_configs_saved_before_they_existed(two_dir, stats_dir):
  config = _config([_spec(two_dir)], stats_dir)
  old = config.to_dict()
  del old["num_referents"]
  for spec in old["datasets"].values():
    del spec["referents_key"]
  assert pipeline._config_fingerprint(ml_collections.ConfigDict(old)) == pipeline._config_fingerprint(config)
  config.num_referents = 2
  assert pipeline._config_fingerprint(ml_collections.ConfigDict(old)) != pipeline._config_fingerprint(config)


def test_restore_and_validation_keep_the_referents(two_dir, stats_dir):
  config = _config([_spec(two_dir)], stats_dir, num_referents=2, val_drop_remainder=False)
  config.augmentation.update(enabled=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))  # Colour only.
  it = _train(config)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.state()))
  want = next(it)
  _assert_equal_batches(next(_train(config, state=state)), want)
  val = pipeline.make_val_iterator(config, process_index=0, process_count=1)
  assert val.element_spec["aux"]["referent_xy"].shape.as_list() == [None, 2, 2]
  for batch in val:
    _assert_current_step_labels(batch, 2, 2)


def test_a_dataset_with_fewer_referents_is_padded_with_invalid_ones(tmp_path_factory, stats_dir):
  one = _labelled_dir(tmp_path_factory, 1)
  batch = next(_train(_config([_spec(one)], stats_dir, num_referents=3)))
  assert batch["aux"]["referent_xy"].shape == (8, 3, 2)
  _assert_current_step_labels(batch, 3, 1)


def test_a_dataset_with_more_referents_than_requested_is_an_error(tmp_path_factory, stats_dir):
  three = _labelled_dir(tmp_path_factory, 3)
  with pytest.raises(ValueError, match=r"dataset 'labelled': steps/referents/position has 3 referents per step "
                                       r"\(shape \(None, 3, 2\)\) but config.num_referents=2"):
    _train(_config([_spec(three)], stats_dir, num_referents=2))


def test_a_mixture_member_without_referents_gets_invalid_labels(two_dir, toy_spec, stats_dir):
  assert toy_spec.referents_key is None
  config = _config([_spec(two_dir), toy_spec], stats_dir, batch_size=32, num_referents=2)
  batch = next(_train(config))
  from_toy = batch["dataset_index"] == pipeline.dataset_names(config).index("toy")
  assert from_toy.any() and (~from_toy).any()
  assert not batch["aux"]["referent_valid"][from_toy].any()
  assert (batch["aux"]["referent_xy"][from_toy] == 0).all()
  labelled = {k: v[~from_toy] for k, v in batch["aux"].items()}
  assert labelled["referent_valid"].any()
  episode, step = _ids(batch)
  for b in np.flatnonzero(~from_toy):
    xy, _ = testing.episode_referents(int(episode[b, -1]), int(step[b, -1]), 2)
    np.testing.assert_allclose(batch["aux"]["referent_xy"][b], xy, atol=1e-6)


def test_missing_referents_key_is_reported_only_when_referents_are_requested(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.referents_key = "referents"
  assert "aux" not in next(_train(_config([spec], stats_dir)))  # Not requested: the old dataset loads.
  with pytest.raises(ValueError) as error:
    _train(_config([spec], stats_dir, num_referents=2))
  message = str(error.value)
  assert message.startswith("dataset 'toy': spec wants steps/referents/position (referent positions), dataset "
                            "has steps/{action, discount, is_first, is_last, is_terminal, language_instruction, "
                            "observation, reward}")
  assert "referents_key=None" in message and "num_referents=0" in message


def test_random_crops_with_referents_are_refused_but_colour_jitter_is_not(two_dir, stats_dir):
  config = _config([_spec(two_dir)], stats_dir, num_referents=2)
  config.augmentation.enabled = True
  with pytest.raises(ValueError, match=r"num_referents=2 with random-crop augmentation .* crops move the image "
                                       r"but not the referent labels"):
    _train(config)
  config.augmentation.update(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
  batch = next(_train(config))
  plain = _config([_spec(two_dir)], stats_dir, num_referents=2)
  _assert_equal_batches(batch["aux"], next(_train(plain))["aux"])  # Same stream, labels untouched.


def test_negative_num_referents_names_the_key(two_dir, stats_dir):
  with pytest.raises(ValueError, match=r"config.num_referents=-1 is not valid"):
    _train(_config([_spec(two_dir)], stats_dir, num_referents=-1))


def test_tabletop_batches_carry_each_steps_simulator_labels(tiny_tabletop_dir, stats_dir):
  """Validation is ordered: sample i is step i of the concatenated raw val episodes."""
  config = _config([spec_lib.tabletop_spec(builder_dir=str(tiny_tabletop_dir))], stats_dir, batch_size=16,
                   num_referents=2, val_drop_remainder=False)
  batches = list(pipeline.make_val_iterator(config, process_index=0, process_count=1))
  xy = np.concatenate([b["aux"]["referent_xy"] for b in batches])
  valid = np.concatenate([b["aux"]["referent_valid"] for b in batches])
  raw = tfds.builder_from_directory(str(tiny_tabletop_dir)).as_dataset(split="val")
  want_xy, want_valid = [], []
  for episode in tfds.as_numpy(raw):
    for step in episode["steps"]:
      want_xy.append(step["referents"]["position"])
      want_valid.append(step["referents"]["valid"])
  np.testing.assert_array_equal(xy, np.stack(want_xy))
  np.testing.assert_array_equal(valid, np.stack(want_valid))
  assert batches[0]["aux"]["referent_xy"].shape == (16, 2, 2)


def test_the_built_in_dataset_gives_the_attribute_labels_of_the_current_step(tiny_tabletop_dir, stats_dir):
  """The target is the first object of both attribute rows (it shares its own colour and shape),
  so row slot 0 must be the same step's target referent; the rest are padding or its mates."""
  config = _config([spec_lib.tabletop_spec(str(tiny_tabletop_dir))], stats_dir, window=1, batch_size=16,
                   num_referents=2, attribute_objects=6)
  batch = next(_train(config))
  aux = batch["aux"]
  assert aux["attribute_xy"].shape == (16, 2, 6, 2) and aux["attribute_xy"].dtype == np.float32
  assert aux["attribute_valid"].shape == (16, 2, 6) and aux["attribute_valid"].dtype == bool
  assert aux["referent_valid"][:, 0].all() and aux["attribute_valid"][:, :, :2].all()
  for row in range(2):
    np.testing.assert_array_equal(aux["attribute_xy"][:, row, 0], aux["referent_xy"][:, 0])
  assert (aux["attribute_xy"][~aux["attribute_valid"]] == 0).all()


def test_attribute_labels_missing_from_a_dataset_or_without_referents_are_clear_errors(two_dir, stats_dir):
  with pytest.raises(ValueError, match=r"steps/referents/attributes/position \(referent attribute positions\).*"
                                       r"regenerate the dataset"):
    _train(_config([_spec(two_dir)], stats_dir, num_referents=2, attribute_objects=6))
  with pytest.raises(ValueError, match=r"config.attribute_objects=6 needs referent labels"):
    _train(_config([_spec(two_dir)], stats_dir, attribute_objects=6))
