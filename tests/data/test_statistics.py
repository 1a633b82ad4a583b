"""Normalisation statistics: numpy agreement, JSON round trip, caching, (un)normalise."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vla_jax.data import pipeline, statistics, testing
from tests.data.conftest import TOY_LENGTHS


def _raw_toy_train() -> tuple[np.ndarray, np.ndarray]:
  actions, states = [], []
  for e, length in enumerate(TOY_LENGTHS["train"]):
    for t in range(length):
      actions.append(testing.episode_action(e, t, 3))
      states.append(testing.episode_state(e, t, 5))
  return np.stack(actions).astype(np.float64), np.stack(states).astype(np.float64)


def test_statistics_match_numpy(toy_spec, stats_dir):
  config = pipeline.pipeline_config([toy_spec], statistics_dir=stats_dir)
  (source,) = pipeline.open_sources(config)
  stats = source.statistics
  action, state = _raw_toy_train()
  for key, x in (("action", action), ("proprio", state)):
    np.testing.assert_allclose(stats[key]["mean"], x.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats[key]["std"], x.std(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats[key]["q01"], np.quantile(x, 0.01, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats[key]["q99"], np.quantile(x, 0.99, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats[key]["min"], x.min(0))
    np.testing.assert_allclose(stats[key]["max"], x.max(0))
  assert stats["num_transitions"] == sum(TOY_LENGTHS["train"])
  assert stats["num_trajectories"] == len(TOY_LENGTHS["train"])
  assert stats["action"]["mask"] == [True, True, False]


def test_statistics_are_cached_as_json_keyed_by_hash_and_reused(toy_spec, stats_dir, monkeypatch):
  config = pipeline.pipeline_config([toy_spec], statistics_dir=stats_dir)
  (source,) = pipeline.open_sources(config)
  path = source.statistics_path()
  assert os.path.exists(path) and source.statistics_hash in os.path.basename(path)
  with open(path) as f:
    assert json.load(f) == source.statistics

  def fail(*args, **kwargs):
    raise AssertionError("statistics were recomputed instead of read from the cache")

  monkeypatch.setattr(statistics, "compute_statistics", fail)
  (again,) = pipeline.open_sources(config)
  assert again.statistics == source.statistics


def test_statistics_hash_changes_with_spec(toy_spec, stats_dir):
  config = pipeline.pipeline_config([toy_spec], statistics_dir=stats_dir)
  (a,) = pipeline.open_sources(config)
  other = toy_spec.copy_and_resolve_references()
  other.action_dim_kinds = ("relative", "absolute", "gripper")
  (b,) = pipeline.open_sources(pipeline.pipeline_config([other], statistics_dir=stats_dir))
  assert a.statistics_path() != b.statistics_path()


def _key_stats(mask=(True, True, False)):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 3)) * [2.0, 0.5, 1.0] + [1.0, -3.0, 0.0]
  return statistics.compute_statistics([{"action": x, "proprio": x[:, :2]}], action_mask=list(mask),
                                       action_kinds=["relative", "relative", "gripper"])["action"], x


@pytest.mark.parametrize("method", statistics.NORMALIZATION_METHODS)
def test_unnormalize_inverts_normalize_and_leaves_gripper_alone(method):
  key_stats, x = _key_stats()
  x = np.clip(x, key_stats["q01"], key_stats["q99"]).astype(np.float32)  # bounds clips outside [q01, q99]
  y = statistics.normalize(x, key_stats, method)
  np.testing.assert_array_equal(y[:, 2], x[:, 2])
  np.testing.assert_allclose(statistics.unnormalize(y, key_stats, method), x, rtol=1e-5, atol=1e-5)
  if method == "gaussian":
    np.testing.assert_allclose(y[:, :2].mean(0), 0.0, atol=0.05)
  else:
    assert y[:, :2].min() >= -1.0 and y[:, :2].max() <= 1.0


@pytest.mark.parametrize("method", statistics.NORMALIZATION_METHODS)
def test_tensorflow_and_numpy_normalisation_agree(method):
  key_stats, x = _key_stats()
  np.testing.assert_allclose(statistics.normalize_tf(x, key_stats, method).numpy(),
                             statistics.normalize(x, key_stats, method), rtol=1e-6, atol=1e-6)


def test_constant_dims_do_not_blow_up():
  x = np.ones((10, 3), np.float32)
  key_stats = statistics.compute_statistics([{"action": x, "proprio": x}], action_mask=[True] * 3,
                                            action_kinds=["absolute"] * 3)["action"]
  for method in statistics.NORMALIZATION_METHODS:
    y = statistics.normalize(x, key_stats, method)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(statistics.unnormalize(y, key_stats, method), x)


def test_save_and_load_statistics_round_trip(tmp_path):
  key_stats, _ = _key_stats()
  path = str(tmp_path / "ckpt" / "dataset_statistics.json")
  statistics.save_statistics(path, {"toy": {"action": key_stats}})
  assert statistics.load_statistics(path) == {"toy": {"action": key_stats}}


def test_a_corrupt_statistics_file_is_an_error_that_names_it(tmp_path):
  path = tmp_path / "stats.json"
  path.write_text('{"action": {"mean": [0.1, ')  # Truncated mid-write by another tool.
  with pytest.raises(ValueError, match=f"statistics file {path} is not valid JSON"):
    statistics.load_statistics(str(path))
  path.write_text("[1, 2]")
  with pytest.raises(ValueError, match="holds a list, expected a JSON object"):
    statistics.load_statistics(str(path))
