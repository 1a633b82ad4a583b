"""The auxiliary state loss (`state_loss.*`): readouts regress privileged simulator state."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch
from vla_jax.models.model import state_loss


def _config(make_tiny_config, weight: float, num_targets: int = 3):
  config = make_tiny_config("l1")
  config.window_size = 1
  config.state_loss.update(weight=weight, num_targets=num_targets, hidden_dim=16)
  return config


def _aux(batch_size: int, num_targets: int = 3, valid: bool = True) -> dict:
  target = np.linspace(-0.9, 0.9, batch_size * num_targets, dtype=np.float32).reshape(batch_size, num_targets)
  return {"state_target": target, "state_target_valid": np.full((batch_size,), valid)}


def test_mean_squared_error_over_valid_samples_only():
  prediction = np.zeros((3, 2), np.float32)
  target = np.array([[1.0, 1.0], [2.0, 0.0], [100.0, 100.0]], np.float32)
  loss, metrics = state_loss(prediction, target, np.array([True, True, False]))
  np.testing.assert_allclose(float(loss), (1.0 + 2.0) / 2, rtol=1e-6)  # Per-sample means 1 and 2.
  np.testing.assert_allclose(float(metrics["state_target_error"]), (1.0 + 1.0) / 2, rtol=1e-6)
  assert float(state_loss(prediction, target, np.zeros(3, bool))[0]) == 0.0


def test_policy_loss_adds_the_state_term_only_when_enabled_and_labelled(make_tiny_config):
  off = Policy(_config(make_tiny_config, 0.0))
  batch = example_batch(off.config, 2, seed=0)
  assert "state_head" not in off.init(jax.random.key(0), batch)
  on = Policy(_config(make_tiny_config, 0.5))
  params = on.init(jax.random.key(0), batch)  # No labels at init: the head exists all the same.
  assert params["state_head"]["layers_2"]["kernel"].shape == (16, 3)
  rng = jax.random.key(1)
  base, _ = on.loss(params, batch, rng)
  total, metrics = on.loss(params, {**batch, "aux": _aux(2)}, rng)
  assert float(metrics["state_target_mse"]) > 0.0
  np.testing.assert_allclose(float(metrics["head_loss"]), float(base), rtol=1e-6)
  np.testing.assert_allclose(float(total), float(base) + 0.5 * float(metrics["state_target_mse"]), rtol=1e-5)
  invalid, _ = on.loss(params, {**batch, "aux": _aux(2, valid=False)}, rng)
  np.testing.assert_allclose(float(invalid), float(base), rtol=1e-6)
  grads = jax.grad(lambda p: on.loss(p, {**batch, "aux": _aux(2)}, rng)[0])(params)
  assert float(np.abs(grads["state_head"]["layers_0"]["kernel"]).sum()) > 0.0


def test_mismatched_or_missing_state_labels_are_clear_errors(make_tiny_config):
  policy = Policy(_config(make_tiny_config, 1.0))
  batch = example_batch(policy.config, 2, seed=0)
  params = policy.init(jax.random.key(0), batch)
  rng = jax.random.key(1)
  with pytest.raises(ValueError, match=r"aux/state_target has 4 dims but state_loss.num_targets=3"):
    policy.loss(params, {**batch, "aux": _aux(2, num_targets=4)}, rng)
  with pytest.raises(ValueError, match=r"batch/aux/state_target_valid has shape \(3,\), expected \(2,\)"):
    policy.loss(params, {**batch, "aux": {**_aux(2), "state_target_valid": np.ones(3, bool)}}, rng)
  referents_only = {"referent_xy": np.zeros((2, 2, 2), np.float32), "referent_valid": np.zeros((2, 2), bool)}
  with pytest.raises(ValueError, match=r"needs aux/state_target: set data.state_targets = 3"):
    policy.loss(params, {**batch, "aux": referents_only}, rng)
  with pytest.raises(ValueError, match=r"state_loss.num_targets > 0"):
    Policy(_config(make_tiny_config, 1.0, num_targets=0)).init(jax.random.key(0), batch)


def _square_scene(rng: np.random.Generator, batch_size: int, config) -> dict:
  """16×16 grey frames with one dark 3×3 square; the state target is its centre in [-1, 1]."""
  px = config.image_size_px
  images = np.full((batch_size, 1, px, px, 3), 200, np.uint8)
  corners = rng.integers(0, px - 3, size=(batch_size, 2))
  for i, (x0, y0) in enumerate(corners):
    images[i, 0, y0:y0 + 3, x0:x0 + 3] = 30
  batch = example_batch(config, batch_size, seed=int(rng.integers(1 << 30)))
  batch["observation"]["image_primary"] = images
  centre = (corners + 1.5) / px * 2.0 - 1.0
  batch["aux"] = {"state_target": centre.astype(np.float32), "state_target_valid": np.ones(batch_size, bool)}
  return batch


@pytest.mark.slow  # A small training loop (~10 s).
def test_state_loss_teaches_the_readouts_where_the_square_is(make_tiny_config, metric_before_after):
  """Where the square is can only come from the image: the head must learn it through the
  backbone, well below the error of the best constant guess (the training targets' median)."""
  config = _config(make_tiny_config, 1.0, num_targets=2)
  config.image.coord_channels = True
  rng = np.random.default_rng(0)
  pool = [_square_scene(rng, 16, config) for _ in range(8)]
  held_out = _square_scene(np.random.default_rng(99), 64, config)
  before, after = metric_before_after(config, pool, held_out, "state_target_error")
  median = np.median(np.concatenate([b["aux"]["state_target"] for b in pool]), axis=0)
  constant = float(np.abs(held_out["aux"]["state_target"] - median).mean())  # ~0.37
  assert before > constant, (before, constant)  # The untrained head is no better than a constant.
  assert after < 0.6 * constant, (before, after, constant)
