"""The heads learn: over-fitting one batch, and the bimodal test that separates generative heads
(diffusion, flow) from regression, which can only average the modes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch


@pytest.mark.parametrize("head", ["diffusion"] + [
    pytest.param(h, marks=pytest.mark.slow) for h in ("flow", "mse", "discrete")])
def test_loss_decreases_when_overfitting_one_batch(make_tiny_config, train_steps, jit, head):
  config = make_tiny_config(head)
  policy = Policy(config)
  batch = example_batch(config, batch_size=8, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  _, losses = train_steps(policy, params, lambda i: batch, num_steps=150)
  first, last = losses[:10].mean(), losses[-10:].mean()
  assert last < 0.5 * first, f"{head}: loss {first:.3f} → {last:.3f}"


MODE = 0.5  # Demonstrations: the whole chunk at +MODE or -MODE (50/50), plus N(0, 0.05²).


def _bimodal_batch(config, rng: np.random.Generator, batch_size: int) -> dict:
  batch = example_batch(config, batch_size)  # Identical observations and (empty) instruction.
  sign = rng.choice([-1.0, 1.0], size=(batch_size, 1, 1))
  noise = rng.normal(0, 0.05, (batch_size, config.action_horizon, config.action_dim))
  batch["action"] = (sign * MODE + noise).astype(np.float32)
  return batch


def _train_on_bimodal(make_tiny_config, train_steps, jit, head, num_steps):
  config = make_tiny_config(head)
  config.head.denoiser.hidden_dim = 64
  config.head.denoiser.num_blocks = 2
  config.head.regression.hidden_dim = 64
  policy = Policy(config)
  data_rng = np.random.default_rng(0)
  batches = [_bimodal_batch(config, data_rng, 64) for _ in range(16)]
  params = jit(policy.init)(jax.random.key(0), batches[0])
  params, _ = train_steps(policy, params, lambda i: batches[i % len(batches)], num_steps,
                          learning_rate=3e-3)
  test = example_batch(config, 256)
  actions = jit(policy.sample_actions)(params, test["observation"], test["task"],
                                           jax.random.key(1))
  return np.asarray(actions)


@pytest.mark.parametrize("head", ["diffusion", pytest.param("flow", marks=pytest.mark.slow)])
def test_generative_heads_recover_both_modes(make_tiny_config, train_steps, jit, head):
  actions = _train_on_bimodal(make_tiny_config, train_steps, jit, head, num_steps=600)
  chunk_mean = actions.mean(axis=(1, 2))
  near_plus = np.mean(np.abs(chunk_mean - MODE) < 0.15)
  near_minus = np.mean(np.abs(chunk_mean + MODE) < 0.15)
  in_between = np.mean(np.abs(chunk_mean) < 0.25)
  summary = f"{head}: +mode {near_plus:.2f}, -mode {near_minus:.2f}, between {in_between:.2f}"
  # Averaging the modes (what regression does) would give +0, -0, between 1.0.
  assert near_plus > 0.2 and near_minus > 0.2, summary
  assert near_plus + near_minus > 0.8, summary
  assert in_between < 0.15, summary
  # Each chunk commits to one mode as a whole (the demonstrations never mix them).
  assert np.mean(np.abs(actions - chunk_mean[:, None, None]) < 0.2) > 0.85, summary


@pytest.mark.slow  # 600 training steps (~18 s); the diffusion variant above stays in the default suite.
def test_regression_head_averages_the_modes(make_tiny_config, train_steps, jit):
  actions = _train_on_bimodal(make_tiny_config, train_steps, jit, "mse", num_steps=600)
  assert np.all(np.abs(actions) < 0.2), f"mse head output range {actions.min():.2f}…{actions.max():.2f}"
