"""OnnxPolicy drives the exported model through the evaluation harness exactly like JaxPolicy."""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.envs import VectorTabletopEnv
from vla_jax.evaluation.policies import JaxPolicy
from vla_jax.export.onnx_policy import OnnxPolicy


def _env_obs(num_envs: int, image_size: int, seed: int):
  venv = VectorTabletopEnv(num_envs, image_size=image_size, max_episode_steps=20)
  obs, _ = venv.reset(seeds=seed)
  return venv, obs


@pytest.fixture(scope="module")
def policies(tiny_export, tiny_bundle):
  export_dir, _ = tiny_export
  b = tiny_bundle
  jax_policy = JaxPolicy(b.policy, b.params, action_stats=b.action_stats, proprio_stats=b.proprio_stats,
                         normalization=b.normalization, seed=3)
  return jax_policy, OnnxPolicy(export_dir, noise="jax", seed=3)


def test_onnx_policy_returns_the_jax_policy_actions_over_several_steps(policies):
  jax_policy, onnx_policy = policies
  venv, obs = _env_obs(3, 32, seed=10)
  for p in policies:
    p.reset(obs["instruction"], venv.scenes)
  for _ in range(3):  # Window fills up: padding, then real frames.
    a_jax, a_onnx = jax_policy(obs, venv.scenes), onnx_policy(obs, venv.scenes)
    assert a_onnx.shape == a_jax.shape == (3, onnx_policy.action_horizon, 3)
    np.testing.assert_allclose(a_onnx, a_jax, atol=1e-4)
    obs = venv.step(a_jax[:, 0])[0]


def test_numpy_noise_needs_no_jax_and_has_the_manifest_shapes(tiny_export):
  export_dir, manifest = tiny_export
  policy = OnnxPolicy(export_dir, noise="numpy", seed=0)
  noise = policy.noise(5)
  assert {k: v.shape for k, v in noise.items()} == {"noise_initial": (5, 4, 3)}
