"""The normalisation baked into the exported graph is the one in vla_jax.data.statistics.

(Every export also checks this end to end: its "numpy_normalisation" parity row runs the numpy
functions around the JAX policy; see test_round_trip.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from vla_jax.data import statistics as stats_lib
from vla_jax.inference import policy_fn


def _stats(dim: int, seed: int, zero_range_dim: int | None = None) -> dict:
  rng = np.random.default_rng(seed)
  mean, std = rng.normal(size=dim), rng.uniform(0.1, 3.0, size=dim)
  q01, q99 = mean - 2 * std, mean + 2 * std
  if zero_range_dim is not None:
    q99[zero_range_dim] = q01[zero_range_dim]
    std[zero_range_dim] = 0.0
  mask = [True] * dim
  mask[-1] = False  # A gripper-like pass-through dim.
  return {"mean": mean.tolist(), "std": std.tolist(), "q01": q01.tolist(), "q99": q99.tolist(), "mask": mask}


@pytest.mark.parametrize("method", ["bounds", "gaussian"])
@pytest.mark.parametrize("zero_range_dim", [None, 0])
def test_graph_normalize_matches_numpy(method, zero_range_dim):
  stats = _stats(5, seed=1, zero_range_dim=zero_range_dim)
  x = (np.random.default_rng(2).normal(size=(3, 2, 5)) * 4).astype(np.float32)  # Past the bounds too.
  ours = np.asarray(policy_fn.normalize(jnp.asarray(x), policy_fn.Affine.from_stats(stats, method)))
  np.testing.assert_allclose(ours, stats_lib.normalize(x, stats, method), atol=1e-5, rtol=1e-5)
  assert np.isfinite(ours).all()


@pytest.mark.parametrize("method", ["bounds", "gaussian"])
@pytest.mark.parametrize("zero_range_dim", [None, 1])
def test_graph_unnormalize_matches_numpy(method, zero_range_dim):
  stats = _stats(4, seed=3, zero_range_dim=zero_range_dim)
  y = np.random.default_rng(4).uniform(-1, 1, (3, 4, 4)).astype(np.float32)
  ours = np.asarray(policy_fn.unnormalize(jnp.asarray(y), policy_fn.Affine.from_stats(stats, method)))
  np.testing.assert_allclose(ours, stats_lib.unnormalize(y, stats, method), atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(ours[..., -1], y[..., -1])  # Unmasked dim passes through untouched.


def test_error_scale_converts_env_units_back_to_normalised_units():
  stats = _stats(3, seed=5)
  affine = policy_fn.Affine.from_stats(stats, "bounds")
  y = np.zeros((1, 3), np.float32)
  shifted = stats_lib.unnormalize(y + 0.01, stats, "bounds") - stats_lib.unnormalize(y, stats, "bounds")
  np.testing.assert_allclose(shifted / affine.error_scale(), 0.01, rtol=1e-3)
