"""State labels (`config.state_targets`): batch["aux"] carries the current step's privileged state."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from vla_jax.data import pipeline, spec as spec_lib, testing
from tests.data.test_pipeline import _config, _ids, _train

# The toy datasets' 5-d `state` at (episode e, step t) is [e, t, 0.5 t - e, t - e, 1.5 t - e]
# (`testing.episode_state`); dims 1 and 3 stand in for a simulator's object coordinates.
DIMS = (1, 3)
LOW, HIGH = (0.0, -10.0), (20.0, 10.0)


def _spec(toy_dir: str, name: str = "labelled", **overrides):
  fields = dict(state_target_key="state", state_target_dims=DIMS, state_target_bounds=(LOW, HIGH))
  fields.update(overrides)
  return spec_lib.dataset_spec(
      name=name, builder_dir=toy_dir, cameras={"primary": "image"}, image_size_px=(64, 64),
      proprio_key="state", proprio_dim=5, action_dim=3, action_dim_kinds=("relative", "relative", "gripper"),
      **fields)


def _expected(episode: int, step: int) -> np.ndarray:
  state = testing.episode_state(episode, step, 5)[list(DIMS)]
  return 2.0 * (state - np.asarray(LOW)) / (np.asarray(HIGH) - np.asarray(LOW)) - 1.0


def test_batches_carry_the_current_steps_state_mapped_by_the_bounds(toy_dir, stats_dir):
  it = _train(_config([_spec(toy_dir)], stats_dir, window=3, batch_size=5, state_targets=2))
  for _ in range(4):
    batch = next(it)
    assert set(batch["aux"]) == {"state_target", "state_target_valid"}  # No referents asked for.
    assert batch["aux"]["state_target"].shape == (5, 2) and batch["aux"]["state_target"].dtype == np.float32
    assert batch["aux"]["state_target_valid"].all()
    episode, step = _ids(batch)
    for b in range(5):
      np.testing.assert_allclose(batch["aux"]["state_target"][b], _expected(int(episode[b, -1]), int(step[b, -1])),
                                 atol=1e-6)


def test_a_mixture_member_without_a_state_key_gets_invalid_zero_labels(toy_dir, toy_spec, stats_dir):
  assert toy_spec.state_target_key is None
  config = _config([_spec(toy_dir), toy_spec], stats_dir, batch_size=32, state_targets=2)
  batch = next(_train(config))
  from_toy = batch["dataset_index"] == pipeline.dataset_names(config).index("toy")
  assert from_toy.any() and (~from_toy).any()
  np.testing.assert_array_equal(batch["aux"]["state_target_valid"], ~from_toy)
  assert (batch["aux"]["state_target"][from_toy] == 0).all()


def test_state_targets_off_keep_the_batches_and_the_iterator_state_hash(toy_dir, toy_spec, stats_dir):
  config = _config([_spec(toy_dir)], stats_dir)
  assert config.state_targets == 0 and "aux" not in next(_train(config))
  old = config.to_dict()  # As saved before state targets existed.
  del old["state_targets"]
  for spec in old["datasets"].values():
    for key in ("state_target_key", "state_target_dims", "state_target_bounds"):
      del spec[key]
  assert pipeline._config_fingerprint(ml_collections.ConfigDict(old)) == pipeline._config_fingerprint(config)
  config.state_targets = 2
  assert pipeline._config_fingerprint(ml_collections.ConfigDict(old)) != pipeline._config_fingerprint(config)


def test_state_labels_that_do_not_fit_the_data_or_the_config_are_clear_errors(toy_dir, stats_dir):
  with pytest.raises(ValueError, match=r"config.state_targets=3 but the spec's state_target_dims name 2 dims"):
    _train(_config([_spec(toy_dir)], stats_dir, state_targets=3))
  with pytest.raises(ValueError, match=r"state_target_dims \(1, 5\) index past steps/observation/state's 5 dims"):
    _train(_config([_spec(toy_dir, state_target_dims=(1, 5))], stats_dir, state_targets=2))
  with pytest.raises(ValueError, match=r"spec wants steps/observation/env_state \(state target\), dataset has "
                                       r"steps/observation/\{image, state\}"):
    _train(_config([_spec(toy_dir, state_target_key="env_state")], stats_dir, state_targets=2))
  assert "aux" not in next(_train(_config([_spec(toy_dir, state_target_key="env_state")], stats_dir)))
  with pytest.raises(ValueError, match=r"config.state_targets=-1 is not valid"):
    _train(_config([_spec(toy_dir)], stats_dir, state_targets=-1))


@pytest.mark.parametrize("fields, message", [
    (dict(state_target_dims=()), r"state_target_dims must be distinct indices >= 0"),
    (dict(state_target_dims=(1, 1)), r"state_target_dims must be distinct indices >= 0"),
    (dict(state_target_bounds=((0.0,), (1.0,))), r"state_target_bounds must be \(low, high\) with 2 values each"),
    (dict(state_target_bounds=None), r"state_target_bounds must be \(low, high\) with 2 values each"),
    (dict(state_target_bounds=((0.0, 1.0), (1.0, 1.0))), r"state_target_bounds needs low < high in every dim"),
])
def test_inconsistent_state_target_fields_name_the_spec(toy_dir, fields, message):
  with pytest.raises(ValueError, match=r"dataset spec 'labelled': " + message):
    _spec(toy_dir, **fields)
