"""Shared fixtures for the model tests: tiny configs, cached tiny policies, an Adam loop.

Compilation dominates these tests on a 2-core machine, so policies and their jitted samplers are
built once per session and shared (the whole suite compiles at XLA:CPU backend optimisation
level 1: tests/conftest.py).
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from vla_jax.models import Policy, example_batch, model_config


def tiny_config(head: str = "diffusion", language: str = "tokens", image_size_px: int = 16):
  """The `tiny` model on 16×16 images (4 patch tokens per frame): compiles in seconds."""
  config = model_config("tiny", head, language)
  config.image_size_px = image_size_px
  config.language.max_len = 16
  config.language.embedding_dim = 8
  return config


@pytest.fixture(scope="session")
def make_tiny_config():
  return tiny_config


@pytest.fixture(scope="session")
def jit():
  return jax.jit


@pytest.fixture(scope="session")
def tiny_policy():
  """tiny_policy(head, language="tokens") → (policy, params, batch of 4, jitted sample_actions).

  Cached: tests must not mutate the returned params or batch in place.
  """
  cache = {}

  def get(head: str, language: str = "tokens"):
    if (head, language) not in cache:
      config = tiny_config(head, language)
      policy = Policy(config)
      batch = example_batch(config, 4, seed=0)
      params = jax.jit(policy.init)(jax.random.key(0), batch)
      cache[head, language] = (policy, params, batch, jax.jit(policy.sample_actions))
    return cache[head, language]

  return get


@pytest.fixture(scope="session")
def train_steps():
  """train_steps(policy, params, batch_fn, num_steps, lr) → (params, losses): jitted Adam loop
  with a cosine-decayed learning rate (so short runs settle instead of ending mid-oscillation)."""

  def run(policy: Policy, params, batch_fn, num_steps: int, learning_rate: float = 3e-3):
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
      (loss, _), grads = jax.value_and_grad(policy.loss, has_aux=True)(params, batch, rng)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    rng = jax.random.key(0)
    for i in range(num_steps):
      rng, step_rng = jax.random.split(rng)
      params, opt_state, loss = step(params, opt_state, batch_fn(i), step_rng)
      losses.append(loss)
    return params, np.array(jax.device_get(losses))

  return run


@pytest.fixture(scope="session")
def metric_before_after(train_steps):
  """metric_before_after(config, pool, held_out, metric, num_steps, lr) → (before, after): a loss
  metric of a fresh policy on the held-out batch, and again after training on the pool (cycled)."""

  def run(config, pool: list, held_out: dict, metric: str, num_steps: int = 300, learning_rate: float = 1e-2):
    policy = Policy(config)
    params = jax.jit(policy.init)(jax.random.key(0), pool[0])
    loss = jax.jit(policy.loss)
    value = lambda p: float(loss(p, held_out, jax.random.key(0))[1][metric])  # noqa: E731
    before = value(params)
    params, _ = train_steps(policy, params, lambda i: pool[i % len(pool)], num_steps, learning_rate)
    return before, value(params)

  return run
