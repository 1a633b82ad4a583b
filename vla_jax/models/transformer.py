"""A pre-LayerNorm transformer encoder with an explicit boolean attention mask.

Attention is written out (einsum + masked softmax) rather than taken from a library so that every
op is one jax2tf's TF-op lowering and tf2onnx handle, and so the mask semantics are visible: masked
logits get a large finite negative value (not -inf, which turns fully masked rows into NaN).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp

Array = jnp.ndarray
_MASKED_LOGIT = -1e9


def gelu(x: Array) -> Array:
  """tanh-approximate GELU: the exact (erf) form lowers to `Erfc`, which tf2onnx cannot convert."""
  return nn.gelu(x, approximate=True)


class Attention(nn.Module):
  """Multi-head attention of queries_in [B, Q, D] over kv_in [B, S, D]; mask: bool [B, Q, S].

  Queries and keys/values come from separate inputs so the last block can compute queries for
  the readout tokens only (see `Transformer`); in every other block both are the full sequence.
  """

  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, queries_in: Array, kv_in: Array, mask: Array, train: bool = False) -> Array:
    b, q_len, d = queries_in.shape
    s = kv_in.shape[1]
    if d % self.num_heads:
      raise ValueError(f"transformer width {d} is not divisible by num_heads={self.num_heads}")
    head_dim = d // self.num_heads
    q = nn.Dense(d, name="query")(queries_in).reshape(b, q_len, self.num_heads, head_dim)
    kv = nn.Dense(2 * d, name="key_value")(kv_in).reshape(b, s, 2, self.num_heads, head_dim)
    k, v = kv[:, :, 0], kv[:, :, 1]  # Each [B, S, heads, head_dim].
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (head_dim ** -0.5)
    logits = jnp.where(mask[:, None, :, :], logits, _MASKED_LOGIT)
    weights = nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=not train)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, q_len, d)
    return nn.Dense(d, name="out")(out)


class Block(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)).

  With `num_queries`, only the last num_queries tokens are updated (they still attend to the
  whole sequence) and the block returns [B, num_queries, D].
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False,
               num_queries: int | None = None) -> Array:
    drop = nn.Dropout(self.dropout_rate)
    normed = nn.LayerNorm(name="norm_attention")(x)
    if num_queries is not None:
      x, mask = x[:, -num_queries:], mask[:, -num_queries:]
    y = Attention(self.num_heads, self.dropout_rate, name="attention")(
        normed[:, -x.shape[1]:], normed, mask, train)
    x = x + drop(y, deterministic=not train)
    y = nn.LayerNorm(name="norm_mlp")(x)
    y = nn.Dense(x.shape[-1], name="mlp_out")(gelu(nn.Dense(self.mlp_dim, name="mlp_in")(y)))
    return x + drop(y, deterministic=not train)


class Transformer(nn.Module):
  """depth × Block, then a final LayerNorm. tokens: [B, S, D], mask: bool [B, S, S] → [B, S, D].

  `num_outputs=R` returns only the last R tokens [B, R, D]. Because nothing attends to readouts,
  the last block then needs queries, attention output and MLP for those R tokens only (keys and
  values still cover the sequence) — about 20 % less work for a 4-layer backbone, same result.
  """

  depth: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, train: bool = False,
               num_outputs: int | None = None) -> Array:
    chex.assert_rank(tokens, 3)
    b, s, d = tokens.shape
    chex.assert_shape(mask, (b, s, s))
    x = tokens
    for i in range(self.depth):
      last = i == self.depth - 1
      x = Block(self.num_heads, self.mlp_dim, self.dropout_rate, name=f"block_{i}")(
          x, mask, train, num_outputs if last else None)
    if num_outputs is not None and self.depth == 0:
      x = x[:, -num_outputs:]
    x = nn.LayerNorm(name="norm_out")(x)
    chex.assert_shape(x, (b, s if num_outputs is None else num_outputs, d))
    return x
