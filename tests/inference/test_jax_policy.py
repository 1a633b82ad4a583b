"""JaxPolicy runs the exported function: equal to the numpy-normalisation reference, per robot sessions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.inference.jax_policy import JaxPolicy
from vla_jax.inference.testing import random_bundle
from vla_jax.models import model_config


@pytest.fixture(scope="module")
def bundle():
  config = model_config("tiny", "diffusion")
  config.image_size_px = 32
  config.window_size = 2  # Padding, then real frames: the window matters.
  config.language.max_len = 16
  config.head.diffusion.num_sample_steps = 3
  return random_bundle(config, seed=0, normalization="bounds")


def _frames(bundle, count: int, n: int = 2, seed: int = 0):
  rng = np.random.default_rng(seed)
  s, d = bundle.model_config.image_size_px, bundle.model_config.proprio_dim
  return [{"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
           "state": rng.normal(size=(n, d)).astype(np.float32) * 3} for _ in range(count)]


def test_closed_loop_actions_equal_the_independent_numpy_normalisation_reference(bundle):
  """Evaluation runs the exported function; its baked-in (un)normalisation equals vla_jax.data.statistics."""
  from vla_jax.export.parity import reference_actions

  policy = JaxPolicy(bundle, seed=4)
  prompts = ["push the red block to the left", "pick up the blue circle"]
  policy.reset(prompts, None)
  for call, frame in enumerate(_frames(bundle, 3)):
    actions = policy(frame)
    inputs = {**policy.window.inputs(), **policy._task}
    noise = bundle.policy.make_noise(jax.random.fold_in(jax.random.PRNGKey(4), call), 2)
    expected = reference_actions(bundle, {**inputs, **{f"noise_{k}": np.asarray(v) for k, v in noise.items()}})
    assert actions.shape == (2, bundle.model_config.action_horizon, bundle.model_config.action_dim)
    np.testing.assert_allclose(actions, expected, atol=2e-5, rtol=1e-5)


def test_sessions_share_the_weights_but_not_the_episode(bundle):
  policy = JaxPolicy(bundle, seed=1)
  a, b = policy.new_session(), policy.new_session()
  assert a.params is policy.params and a._samplers is policy._samplers
  frames = _frames(bundle, 3, n=1)
  a.reset(["push the red block to the left"])
  first = [a(f) for f in frames]
  b.reset(["pick up the blue circle"])
  b(_frames(bundle, 1, n=1, seed=9)[0])  # Another robot's frame must not enter a's window.
  a2 = policy.new_session()
  a2.reset(["push the red block to the left"])
  np.testing.assert_array_equal(np.stack(first), np.stack([a2(f) for f in frames]))
  assert a.window is not b.window and policy.window.frames is None


def test_a_call_before_reset_is_an_error(bundle):
  with pytest.raises(RuntimeError, match=r"reset\(instructions\) before the first call"):
    JaxPolicy(bundle)(_frames(bundle, 1)[0])
