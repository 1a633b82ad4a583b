"""Pieces shared by the action heads: readout pooling, masked losses, the time embedding."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


def pool_readouts(readouts: Array) -> Array:
  """readouts: float32 [B, R, D] → [B, D] (mean over readout tokens)."""
  chex.assert_rank(readouts, 3)
  return readouts.mean(axis=1)


def masked_mean(values: Array, action_pad_mask: Array) -> Array:
  """Mean of values [B, H, ...] over entries whose action_pad_mask [B, H] is True.

  Padded steps (past the episode end) carry no supervision; the max(…, 1) keeps an all-padding
  batch from dividing by zero.
  """
  chex.assert_equal_shape_prefix([values, action_pad_mask], 2)
  weights = action_pad_mask.astype(jnp.float32).reshape(
      action_pad_mask.shape + (1,) * (values.ndim - 2))
  weights = jnp.broadcast_to(weights, values.shape)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def time_features(t: Array, num_features: int) -> Array:
  """Sinusoidal features of a noise level / flow time t: float32 [B] in [0, 1] → [B, F]."""
  if num_features % 2:
    raise ValueError(f"time_features needs an even number of features, got {num_features}")
  half = num_features // 2
  freqs = np.exp(np.linspace(0.0, np.log(1000.0), half)).astype(np.float32)
  angles = t[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def repeat_for_noise_samples(x: Array, n: int) -> Array:
  """[B, ...] → [n·B, ...] (n copies, batch-major within each copy) for multi-draw losses."""
  return jnp.concatenate([x] * n, axis=0) if n > 1 else x
