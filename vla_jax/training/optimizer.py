"""optax: AdamW with warm-up + cosine decay and global-norm clipping; parameter EMA.

Weight decay applies only to matrices and kernels (ndim >= 2): decaying LayerNorm scales, biases
and embeddings' 1-D parameters hurts more than it regularises.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay to `learning_rate * final_lr_ratio`."""
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.learning_rate,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=config.learning_rate * config.final_lr_ratio,
  )


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   labels: Any = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW + clipping; with `labels` (a params-shaped tree of "trainable" / "frozen", see
  `training.finetune.frozen_labels`) frozen leaves get a zero update and no optimizer state, and
  the clipping norm counts trainable gradients only."""
  schedule = make_schedule(config, total_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)  # noqa: E731
  tx = optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=decay_mask),
  )
  if labels is not None and any(v == "frozen" for v in jax.tree.leaves(labels)):
    tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule


def ema_update(ema: Any, params: Any, step: jax.Array, decay: float, labels: Any = None) -> Any:
  """EMA with a warm-up (decay grows as (1 + t) / (10 + t)) so early averages are not stale.

  labels: optional "trainable" / "frozen" tree; frozen leaves keep their EMA as is (the average of a
  constant is that constant, but d·e + (1 − d)·e rounds in its last bit).
  """
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
  update = lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype)  # noqa: E731
  if labels is None:
    return jax.tree.map(update, ema, params)
  return jax.tree.map(lambda e, p, label: e if label == "frozen" else update(e, p), ema, params, labels)
