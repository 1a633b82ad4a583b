"""The ONNX runtime (`vla_jax.inference.onnx_runtime`) drives an export like JaxPolicy — without JAX or TF."""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.envs import VectorTabletopEnv
from vla_jax.inference.jax_policy import JaxPolicy
from vla_jax.inference.onnx_runtime import OnnxPolicy


def _env_obs(num_envs: int, image_size: int, seed: int):
  venv = VectorTabletopEnv(num_envs, image_size=image_size, max_episode_steps=20)
  obs, _ = venv.reset(seeds=seed)
  return venv, obs


@pytest.fixture(scope="module")
def policies(tiny_export, tiny_bundle):
  export_dir, _ = tiny_export
  jax_policy = JaxPolicy(tiny_bundle, seed=3)
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


def test_numpy_noise_has_the_manifest_shapes(tiny_export):  # No JAX at all: the fresh-interpreter test below.
  export_dir, manifest = tiny_export
  policy = OnnxPolicy(export_dir, noise="numpy", seed=0)
  noise = policy.noise(5)
  assert {k: v.shape for k, v in noise.items()} == {"noise_initial": (5, 4, 3)}


JAX_FREE_SCRIPT = """
import sys
import numpy as np
from vla_jax.inference.onnx_runtime import OnnxPolicy

policy = OnnxPolicy(sys.argv[1], noise="numpy", seed=0, threads=1)
session = policy.new_session()
session.reset(["push the red block to the left", "pick up the blue circle"])
rng = np.random.default_rng(0)
for _ in range(3):
  obs = {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "state": rng.normal(size=(2, 4)).astype(np.float32)}
  actions = session(obs)
assert actions.shape == (2, policy.action_horizon, 3) and np.isfinite(actions).all(), actions.shape
heavy = sorted(m for m in ("jax", "jaxlib", "flax", "optax", "tensorflow", "tf2onnx") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_onnx_runtime_imports_and_runs_without_jax_or_tensorflow(tiny_export):
  """What an edge computer runs: a fresh interpreter that loads and runs the export, then shows
  neither JAX nor TensorFlow (nor flax, optax, tf2onnx) was ever imported."""
  import subprocess
  import sys

  from tests.conftest import REPO

  export_dir, manifest = tiny_export
  state_dim = [s for s in manifest["inputs"] if s["name"] == "proprio"][0]["shape"][-1]
  script = JAX_FREE_SCRIPT.replace("size=(2, 4)", f"size=(2, {state_dim})")
  proc = subprocess.run([sys.executable, "-c", script, str(export_dir)], capture_output=True, text=True,
                        cwd=str(REPO), timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "HEAVY []" in proc.stdout, proc.stdout


def test_sessions_share_the_onnx_session_but_not_the_episode(tiny_export):
  export_dir, _ = tiny_export
  policy = OnnxPolicy(export_dir, noise="numpy", seed=5)
  a, b = policy.new_session(), policy.new_session()
  assert a.session is policy.session and a.window is not b.window
  venv, obs = _env_obs(1, 32, seed=3)
  for p in (a, b):
    p.reset(obs["instruction"], venv.scenes)
  np.testing.assert_array_equal(a(obs, venv.scenes), b(obs, venv.scenes))  # Same seed, same first call.
