"""The small network that iterates at inference: an MLP-ResNet over the flattened action chunk.

It is conditioned on the pooled readout embedding (computed once per control step by the backbone)
and on the noise level / flow time, so each sampling step costs only a few small matmuls.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp

from vla_jax.models.heads.common import time_features
from vla_jax.models.transformer import gelu

Array = jnp.ndarray


class Denoiser(nn.Module):
  """(condition [B, C], x [B, H, A], time) → output [B, H, A] (ε or velocity).

  time: t float32 [B] in [0, 1] (sinusoidal features computed here), or already computed
  features float32 [B, num_time_features] (the diffusion head's exact per-level table).
  """

  hidden_dim: int
  num_blocks: int
  num_time_features: int

  @nn.compact
  def __call__(self, condition: Array, x: Array, time: Array) -> Array:
    chex.assert_rank([condition, x], [2, 3])
    b, h, a = x.shape
    if time.ndim == 1:
      time = time_features(time, self.num_time_features)
    chex.assert_shape(time, (b, self.num_time_features))
    temb = gelu(nn.Dense(self.hidden_dim, name="time_in")(time))
    y = nn.Dense(self.hidden_dim, name="input")(
        jnp.concatenate([condition, temb, x.reshape(b, h * a)], axis=-1))
    for i in range(self.num_blocks):
      z = nn.LayerNorm(name=f"block_{i}_norm")(y)
      z = gelu(nn.Dense(4 * self.hidden_dim, name=f"block_{i}_in")(z))
      y = y + nn.Dense(self.hidden_dim, name=f"block_{i}_out")(z)
    y = gelu(nn.LayerNorm(name="norm_out")(y))
    out = nn.Dense(h * a, name="output")(y).reshape(b, h, a)
    return out
