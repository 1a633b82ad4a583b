"""The train state: one pytree of arrays, so it can be sharded, donated and checkpointed whole."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: optimizer updates done.
  params: Any
  opt_state: Any
  ema_params: Any  # EMA of params: what evaluation and export use.
  rng: jax.Array  # uint32 [2]: raw key data, so the checkpoint is plain arrays.


def create_state(init_fn: Callable[[jax.Array], Any], tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """Builds the state from `init_fn(rng) -> params`. Pure, so it can run under jit with out_shardings."""
  init_rng, train_rng = jax.random.split(rng)
  params = init_fn(init_rng)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params),
      rng=train_rng,
  )

