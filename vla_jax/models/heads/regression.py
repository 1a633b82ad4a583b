"""Regression baseline head: an MLP from the pooled readout to the chunk, trained with L1 or MSE.

A unimodal baseline: with MSE it predicts the conditional mean, so on multimodal demonstrations it
averages the modes — the failure the generative heads exist to fix.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vla_jax.models.heads import common
from vla_jax.models.transformer import gelu

Array = jnp.ndarray


def noise_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple]:
  """Deterministic head: consumes no noise."""
  del config, batch_size
  return {}


class RegressionHead(nn.Module):
  """head.kind "l1" or "mse"."""

  config: ml_collections.ConfigDict

  @nn.compact
  def predict(self, readouts: Array) -> Array:
    """readouts [B, R, D] → unclipped chunk [B, H, A]."""
    h, a = self.config.action_horizon, self.config.action_dim
    y = common.pool_readouts(readouts)
    y = gelu(nn.Dense(self.config.head.regression.hidden_dim, name="hidden")(y))
    return nn.Dense(h * a, name="output")(y).reshape(-1, h, a)

  def __call__(self, readouts: Array, actions: Array, action_pad_mask: Array, rng: Array,
               train: bool = False) -> tuple[Array, dict[str, Array]]:
    del rng, train
    chex.assert_rank([readouts, actions], 3)
    chex.assert_rank(action_pad_mask, {2, 3})  # [B, H], or [B, H, A] with an action-dim mask.
    err = self.predict(readouts) - actions
    kind = self.config.head.kind
    per_entry = jnp.abs(err) if kind == "l1" else jnp.square(err)
    loss = common.masked_mean(per_entry, action_pad_mask)
    return loss, {f"{kind}_loss": loss}

  def sample(self, readouts: Array, noise: dict[str, Array]) -> Array:
    del noise
    clip = self.config.action_clip
    return jnp.clip(self.predict(readouts), -clip, clip)
