"""Flow-matching action head (as in π0): learn the velocity that carries noise to actions.

Path x_t = (1 - t)·noise + t·actions for t ∈ [0, 1]; the target velocity is actions - noise.
Sampling integrates dx/dt = v(x, t) from t = 0 (the noise input) to t = 1 with a fixed number of
Euler steps, then clips to ±action_clip.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vla_jax.models.heads import common
from vla_jax.models.heads.denoiser import Denoiser

Array = jnp.ndarray


def noise_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple]:
  """Noise `sample` consumes: "initial" [B, H, A] (Euler integration is deterministic after it)."""
  return {"initial": (batch_size, config.action_horizon, config.action_dim)}


class FlowHead(nn.Module):
  config: ml_collections.ConfigDict

  def setup(self):
    d = self.config.head.denoiser
    self.denoiser = Denoiser(d.hidden_dim, d.num_blocks, d.time_features,
                             prefix_conditioning=common.prefix_max_delay(self.config) > 0)

  def predict(self, readouts: Array, x: Array, t: Array, given: Array | None = None) -> Array:
    """One network call: readouts [B, R, D], x [B, H, A], t float32 [B] → velocity [B, H, A].
    given: [B, H], 1 where x holds a clean prefix action (prefix-conditioned heads only)."""
    return self.denoiser(common.pool_readouts(readouts), x, t, given)

  def __call__(self, readouts: Array, actions: Array, action_pad_mask: Array, rng: Array,
               train: bool = False) -> tuple[Array, dict[str, Array]]:
    """Flow-matching loss. actions: float32 [B, H, A]; action_pad_mask: bool [B, H]."""
    del train
    chex.assert_rank([readouts, actions], 3)
    chex.assert_rank(action_pad_mask, {2, 3})  # [B, H], or [B, H, A] with an action-dim mask.
    n = self.config.head.flow.num_noise_samples
    readouts, actions, action_pad_mask = (
        common.repeat_for_noise_samples(x, n) for x in (readouts, actions, action_pad_mask))
    t_rng, noise_rng = jax.random.split(rng)
    t = jax.random.uniform(t_rng, (actions.shape[0],))
    noise = jax.random.normal(noise_rng, actions.shape)
    x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * actions
    x_t, given, action_pad_mask, readouts = common.maybe_condition_on_prefix(
        self.config, jax.random.fold_in(rng, 1), actions, x_t, action_pad_mask, readouts)
    pred = self.predict(readouts, x_t, t, given)
    loss = common.masked_mean(jnp.square(pred - (actions - noise)), action_pad_mask)
    return loss, {"flow_mse": loss}

  def sample(self, readouts: Array, noise: dict[str, Array]) -> Array:
    """Euler-integrate from noise["initial"] [B, H, A] → actions [B, H, A]."""
    return self._euler(readouts, noise)[-1]

  def sample_steps(self, readouts: Array, noise: dict[str, Array]) -> Array:
    """As `sample`, keeping every step: [S + 1, B, H, A] — the initial noise, then x after each
    Euler step; the last entry is what `sample` returns (clipped)."""
    return jnp.stack(self._euler(readouts, noise))

  def _euler(self, readouts: Array, noise: dict[str, Array]) -> list[Array]:
    """[initial noise, x after step 1, ..., clipped x after step S]."""
    x = noise["initial"]
    chex.assert_shape(x, (readouts.shape[0], self.config.action_horizon, self.config.action_dim))
    steps = self.config.head.flow.num_integration_steps
    if steps < 1:
      raise ValueError(f"head.flow.num_integration_steps must be ≥ 1, got {steps}")
    dt = 1.0 / steps
    xs = [x]  # Only `sample_steps` reads the intermediate entries; `sample`'s graph is unchanged.
    for i in range(steps):  # Fixed count, unrolled.
      x = x + dt * self.predict(readouts, x, jnp.full((x.shape[0],), i * dt, jnp.float32))
      xs.append(x)
    clip = self.config.action_clip
    xs[-1] = jnp.clip(x, -clip, clip)
    return xs
