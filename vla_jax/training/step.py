"""The jitted train and evaluation steps (pure functions of state and batch).

`loss_fn(params, batch, rng) -> (loss, metrics)` is the policy's loss: the step adds optional
bf16 compute (fp32 master weights: params are cast for the forward/backward pass only), gradient
accumulation over micro-batches (a scan, so memory is one micro-batch), the optimizer update, the
parameter EMA, and the training metrics.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vla_jax.training.optimizer import ema_update
from vla_jax.training.state import TrainState

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floating(tree: Any, dtype) -> Any:
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def microbatches(batch: Any, k: int) -> Any:
  """[B, ...] -> [k, B/k, ...] taking rows j, j+k, j+2k, ... for micro-batch j.

  Strided rather than contiguous so that every device keeps an equal share of each micro-batch.
  """

  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by config.train.grad_accum_steps={k}")
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    ema_decay: float,
    grad_accum_steps: int = 1,
    compute_dtype: str = "float32",
    labels: Any = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
  """labels: optional params-shaped tree of "trainable" / "frozen" (`training.finetune`); frozen
  leaves' gradients are zeroed here, so XLA drops their computation and `grad_norm` counts only
  what trains (the optimizer gives them no update and no state)."""
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.train.compute_dtype={compute_dtype!r} is not valid; expected one of {list(COMPUTE_DTYPES)}")
  dtype = COMPUTE_DTYPES[compute_dtype]

  def loss_and_grads(params, batch, rng):
    def compute(p):
      loss, metrics = loss_fn(cast_floating(p, dtype), batch, rng)
      return loss.astype(jnp.float32), jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    (loss, metrics), grads = jax.value_and_grad(compute, has_aux=True)(params)
    if labels is not None:
      grads = jax.tree.map(lambda g, label: jnp.zeros_like(g) if label == "frozen" else g, grads, labels)
    return loss, metrics, cast_floating(grads, jnp.float32)

  def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = jax.random.fold_in(state.rng, state.step)
    if grad_accum_steps == 1:
      loss, metrics, grads = loss_and_grads(state.params, batch, rng)
    else:
      def body(acc, xs):
        index, micro = xs
        out = loss_and_grads(state.params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, acc, out), None

      first = jax.eval_shape(loss_and_grads, state.params, jax.tree.map(lambda x: x[0], microbatches(batch, grad_accum_steps)), rng)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
      total, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), microbatches(batch, grad_accum_steps)))
      loss, metrics, grads = jax.tree.map(lambda x: x / grad_accum_steps, total)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        ema_params=ema_update(state.ema_params, params, state.step, ema_decay, labels),
    )
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return new_state, metrics

  return train_step


def make_eval_step(loss_fn: LossFn, sample_fn: Callable[[Any, Any, jax.Array], jax.Array] | None):
  """Validation metrics on one batch with the EMA params: loss, and the sampled chunk's error."""

  def eval_step(state: TrainState, batch: Any) -> dict[str, jax.Array]:
    rng = jax.random.fold_in(state.rng, 2**30)
    loss, metrics = loss_fn(state.ema_params, batch, rng)
    out = {**metrics, "loss": loss}
    if sample_fn is not None:
      actions = sample_fn(state.ema_params, batch, rng)
      mask = batch["action_pad_mask"][..., None].astype(jnp.float32)
      if "action_dim_mask" in batch:  # Padded action dims of a mixture are not errors.
        mask = mask * batch["action_dim_mask"][:, None, :].astype(jnp.float32)
      mask = jnp.broadcast_to(mask, actions.shape)
      err = jnp.abs(actions - batch["action"]) * mask
      out["action_mae"] = err.sum() / jnp.maximum(mask.sum(), 1.0)
    return out

  return eval_step
