"""`config.mask_after_perturbation`: chunk entries after a demonstrator's recorded mistake carry no loss."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from vla_jax.data import pipeline, spec as spec_lib, testing
from tests.data.test_pipeline import _assert_equal_batches, _config, _ids, _train

LENGTHS = {"train": [5, 1, 8, 3, 6], "val": [4, 6]}


@pytest.fixture(scope="module")
def perturbed_dir(tmp_path_factory) -> str:
  return testing.write_synthetic_rlds(str(tmp_path_factory.mktemp("perturbed")), name="perturbed_rlds",
                                      episode_lengths=LENGTHS, perturbations=True)


def _spec(builder_dir: str, keys=("perturbation_step",)):
  return spec_lib.dataset_spec(
      name="perturbed", builder_dir=builder_dir, cameras={"primary": "image"}, image_size_px=(64, 64),
      proprio_key="state", proprio_dim=5, action_dim=3, action_dim_kinds=("relative", "relative", "gripper"),
      perturbation_keys=keys)


def _expected_mask(e: int, t: int, horizon: int) -> np.ndarray:
  length = LENGTHS["train"][e]  # Train episodes come first: id = index.
  p = testing.episode_perturbation_step(e, length)
  h = np.arange(horizon)
  return (t + h < length) & ~((p >= t) & (t + h > p))


def test_batches_mask_the_chunk_after_each_episodes_recorded_mistake(perturbed_dir, stats_dir):
  horizon = 5
  it = _train(_config([_spec(perturbed_dir)], stats_dir, window=1, action_horizon=horizon, batch_size=6,
                      mask_after_perturbation=True))
  seen_masked = 0
  for _ in range(8):  # Over two epochs of 23 samples.
    batch = next(it)
    assert "perturbed" not in batch
    episode, step = _ids(batch)
    for b in range(len(episode)):
      e, t = int(episode[b, -1]), int(step[b, -1])
      want = _expected_mask(e, t, horizon)
      np.testing.assert_array_equal(batch["action_pad_mask"][b], want, err_msg=f"episode {e} step {t}")
      seen_masked += int((~want & (t + np.arange(horizon) < LENGTHS["train"][e])).any())
  assert seen_masked > 0  # Some samples lost entries to a mistake, not only to the episode end.


def test_off_reads_no_key_and_keeps_the_batches_and_the_iterator_state_hash(perturbed_dir, stats_dir):
  plain = _config([_spec(perturbed_dir, keys=())], stats_dir)
  # Off, even a key the dataset lacks (slip_step) is never read: the iterator opens and streams.
  declared = _config([_spec(perturbed_dir, keys=("perturbation_step", "slip_step"))], stats_dir)
  assert declared.mask_after_perturbation is False
  assert pipeline._config_fingerprint(plain) == pipeline._config_fingerprint(declared)
  old = declared.to_dict()  # A config saved before the option existed.
  del old["mask_after_perturbation"]
  for spec in old["datasets"].values():
    del spec["perturbation_keys"]
  assert pipeline._config_fingerprint(ml_collections.ConfigDict(old)) == pipeline._config_fingerprint(declared)
  a, b = _train(plain), _train(declared)
  for _ in range(3):
    _assert_equal_batches(next(a), next(b))
  declared.mask_after_perturbation = True
  assert pipeline._config_fingerprint(declared) != pipeline._config_fingerprint(plain)


def test_a_missing_perturbation_key_is_named(perturbed_dir, stats_dir):
  config = _config([_spec(perturbed_dir, keys=("slip_step",))], stats_dir, mask_after_perturbation=True)
  with pytest.raises(ValueError, match=r"episode_metadata/slip_step \(perturbation step\).*perturbation_step"):
    _train(config)
