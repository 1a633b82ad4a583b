"""The small network that iterates at inference: an MLP-ResNet over the flattened action chunk.

It is conditioned on the pooled readout embedding (computed once per control step by the backbone)
and on the noise level / flow time, so each sampling step costs only a few small matmuls. With
prefix conditioning (real-time chunking trained in, `head.prefix_conditioning`) it also reads which
chunk positions hold given, clean actions rather than noisy ones.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp

from vla_jax.models.heads.common import time_features
from vla_jax.models.transformer import gelu

Array = jnp.ndarray


class Denoiser(nn.Module):
  """(condition [B, C], x [B, H, A], time[, given]) → output [B, H, A] (ε or velocity).

  time: t float32 [B] in [0, 1] (sinusoidal features computed here), or already computed
  features float32 [B, num_time_features] (the diffusion head's exact per-level table).
  given: only with `prefix_conditioning`: float32/bool [B, H], 1 where x holds a clean, given
  action (the frozen prefix) instead of a noisy one; None = nothing given (plain sampling).
  """

  hidden_dim: int
  num_blocks: int
  num_time_features: int
  prefix_conditioning: bool = False

  @nn.compact
  def __call__(self, condition: Array, x: Array, time: Array, given: Array | None = None) -> Array:
    chex.assert_rank([condition, x], [2, 3])
    b, h, a = x.shape
    if time.ndim == 1:
      time = time_features(time, self.num_time_features)
    chex.assert_shape(time, (b, self.num_time_features))
    temb = gelu(nn.Dense(self.hidden_dim, name="time_in")(time))
    inputs = [condition, temb, x.reshape(b, h * a)]
    if self.prefix_conditioning:
      given = jnp.zeros((b, h), jnp.float32) if given is None else given.astype(jnp.float32)
      chex.assert_shape(given, (b, h))
      inputs.append(given)
    elif given is not None:
      raise ValueError("this head was trained without prefix conditioning "
                       "(head.prefix_conditioning.max_delay = 0): it cannot be given a prefix")
    y = nn.Dense(self.hidden_dim, name="input")(jnp.concatenate(inputs, axis=-1))
    for i in range(self.num_blocks):
      z = nn.LayerNorm(name=f"block_{i}_norm")(y)
      z = gelu(nn.Dense(4 * self.hidden_dim, name=f"block_{i}_in")(z))
      y = y + nn.Dense(self.hidden_dim, name=f"block_{i}_out")(z)
    y = gelu(nn.LayerNorm(name="norm_out")(y))
    out = nn.Dense(h * a, name="output")(y).reshape(b, h, a)
    return out
