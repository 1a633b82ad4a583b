"""Discrete action-token baseline head (as RT-2): each action dim of each chunk step is one of
`num_bins` uniform bins over [-action_clip, action_clip], trained with cross-entropy.

Predicts all H·A tokens in parallel from the pooled readout (no autoregression) and decodes the
argmax bin's centre, so sampling is deterministic and consumes no noise.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vla_jax.models.heads import common
from vla_jax.models.transformer import gelu

Array = jnp.ndarray


def noise_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple]:
  del config, batch_size
  return {}


def actions_to_bins(actions: Array, num_bins: int, clip: float) -> Array:
  """float [..] in [-clip, clip] → int32 bin ids in [0, num_bins)."""
  scaled = (jnp.clip(actions, -clip, clip) + clip) / (2 * clip) * num_bins
  return jnp.clip(jnp.floor(scaled), 0, num_bins - 1).astype(jnp.int32)


def bins_to_actions(bins: Array, num_bins: int, clip: float) -> Array:
  """int bin ids → float bin centres in [-clip, clip]."""
  return (bins.astype(jnp.float32) + 0.5) / num_bins * (2 * clip) - clip


class DiscreteHead(nn.Module):
  config: ml_collections.ConfigDict

  @nn.compact
  def logits(self, readouts: Array) -> Array:
    """readouts [B, R, D] → logits float32 [B, H, A, num_bins]."""
    h, a = self.config.action_horizon, self.config.action_dim
    bins = self.config.head.discrete.num_bins
    y = common.pool_readouts(readouts)
    y = gelu(nn.Dense(self.config.head.discrete.hidden_dim, name="hidden")(y))
    return nn.Dense(h * a * bins, name="output")(y).reshape(-1, h, a, bins)

  def __call__(self, readouts: Array, actions: Array, action_pad_mask: Array, rng: Array,
               train: bool = False) -> tuple[Array, dict[str, Array]]:
    del rng, train
    chex.assert_rank([readouts, actions], 3)
    chex.assert_rank(action_pad_mask, {2, 3})  # [B, H], or [B, H, A] with an action-dim mask.
    cfg = self.config
    logits = self.logits(readouts)
    targets = actions_to_bins(actions, cfg.head.discrete.num_bins, cfg.action_clip)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, H, A]
    loss = common.masked_mean(nll, action_pad_mask)
    accuracy = common.masked_mean((logits.argmax(-1) == targets).astype(jnp.float32),
                                  action_pad_mask)
    return loss, {"cross_entropy": loss, "bin_accuracy": accuracy}

  def sample(self, readouts: Array, noise: dict[str, Array]) -> Array:
    del noise
    cfg = self.config
    return bins_to_actions(self.logits(readouts).argmax(-1), cfg.head.discrete.num_bins,
                           cfg.action_clip)
