"""Diffusion action head: ε-prediction, cosine noise schedule, DDPM loss, DDIM sampling.

Training draws one of K discrete noise levels per example and regresses the added noise. Sampling
runs a fixed number S of DDIM steps (a Python-unrolled loop: export turns it into a static graph)
from noise that is an input, so an exported policy can be fed its noise from outside. Each step
clips the predicted clean chunk to ±action_clip (the normalised action range) and re-derives ε from
it, which keeps early, very noisy steps from overshooting.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.models.heads import common
from vla_jax.models.heads.denoiser import Denoiser

Array = jnp.ndarray


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """ᾱ_k for k = 0 … K-1 (k = 0 least noisy) of the cosine schedule (Nichol & Dhariwal, 2021).

  max_beta caps each step's β. The cosine's last β is ~1, so with the customary cap 0.999 the
  noisiest level has ᾱ ≈ 2.4e-7 (K = 100), and the first DDIM step's clean-chunk estimate
  (x − √(1−ᾱ)·ε̂)/√ᾱ multiplies any float rounding in ε̂ by √((1−ᾱ)/ᾱ) ≈ 2 000 — an error that
  persists to the sampled actions. Exported graphs round differently from XLA (~1e-7), so their
  actions differed from JAX's by up to 3e-4 on a trained tiny policy. A cap of 0.5 (it binds on the
  last three levels) leaves ᾱ ≈ 2.7e-4 at the noisiest level (signal std 0.017: still noise for
  every purpose) and a factor ≈ 60.
  """
  if not 0.0 < max_beta < 1.0:
    raise ValueError(f"head.diffusion.max_beta={max_beta} is not valid; expected in (0, 1)")
  x = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  f = np.cos((x + s) / (1 + s) * np.pi / 2) ** 2
  betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
  return np.cumprod(1.0 - betas).astype(np.float32)


def ddim_timesteps(num_train_steps: int, num_sample_steps: int) -> np.ndarray:
  """The S noise levels DDIM visits, from the noisiest (K-1) down to 0: int [S]."""
  if not 1 <= num_sample_steps <= num_train_steps:
    raise ValueError(f"head.diffusion.num_sample_steps={num_sample_steps} must be in "
                     f"[1, num_train_steps={num_train_steps}]")
  return np.round(np.linspace(num_train_steps - 1, 0, num_sample_steps)).astype(np.int32)


def noise_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple]:
  """Noise `sample` consumes: "initial" [B, H, A]; "step" [S, B, H, A] only when η > 0."""
  chunk = (batch_size, config.action_horizon, config.action_dim)
  shapes = {"initial": chunk}
  if config.head.diffusion.eta > 0:
    shapes["step"] = (config.head.diffusion.num_sample_steps, *chunk)
  return shapes


class DiffusionHead(nn.Module):
  config: ml_collections.ConfigDict

  def setup(self):
    d = self.config.head.denoiser
    self.denoiser = Denoiser(d.hidden_dim, d.num_blocks, d.time_features,
                             prefix_conditioning=common.prefix_max_delay(self.config) > 0)
    self.num_train_steps = self.config.head.diffusion.num_train_steps
    # Configs written before max_beta was a knob used the customary 0.999: keep them exact.
    self.alphas_cumprod = cosine_alphas_cumprod(
        self.num_train_steps, max_beta=self.config.head.diffusion.get("max_beta", 0.999))

  def predict(self, readouts: Array, noisy_actions: Array, level: Array, given: Array | None = None) -> Array:
    """One denoiser call: readouts [B, R, D], noisy_actions [B, H, A], level int [B] → ε̂ [B, H, A].
    given: [B, H], 1 where noisy_actions holds a clean prefix action (prefix-conditioned heads only)."""
    features = common.level_features(level, self.num_train_steps,
                                     self.config.head.denoiser.time_features)
    return self.denoiser(common.pool_readouts(readouts), noisy_actions, features, given)

  def __call__(self, readouts: Array, actions: Array, action_pad_mask: Array, rng: Array,
               train: bool = False) -> tuple[Array, dict[str, Array]]:
    """DDPM ε-prediction loss. actions: float32 [B, H, A]; action_pad_mask: bool [B, H]."""
    del train
    chex.assert_rank([readouts, actions], 3)
    chex.assert_rank(action_pad_mask, {2, 3})  # [B, H], or [B, H, A] with an action-dim mask.
    n = self.config.head.diffusion.num_noise_samples
    readouts, actions, action_pad_mask = (
        common.repeat_for_noise_samples(x, n) for x in (readouts, actions, action_pad_mask))
    level_rng, noise_rng = jax.random.split(rng)
    level = jax.random.randint(level_rng, (actions.shape[0],), 0, self.num_train_steps)
    noise = jax.random.normal(noise_rng, actions.shape)
    ab = jnp.asarray(self.alphas_cumprod)[level][:, None, None]
    noisy = jnp.sqrt(ab) * actions + jnp.sqrt(1.0 - ab) * noise
    noisy, given, action_pad_mask, readouts = common.maybe_condition_on_prefix(
        self.config, jax.random.fold_in(rng, 1), actions, noisy, action_pad_mask, readouts)
    pred = self.predict(readouts, noisy, level, given)
    loss = common.masked_mean(jnp.square(pred - noise), action_pad_mask)
    return loss, {"diffusion_mse": loss}

  def sample(self, readouts: Array, noise: dict[str, Array]) -> Array:
    """DDIM from noise["initial"] [B, H, A] (+ noise["step"] [S, B, H, A] if η > 0) → [B, H, A]."""
    return self._ddim(readouts, noise)[-1]

  def sample_steps(self, readouts: Array, noise: dict[str, Array]) -> Array:
    """As `sample`, keeping every step: [S + 1, B, H, A] — the initial noise, then the chunk after
    each DDIM step; the last entry is what `sample` returns."""
    return jnp.stack(self._ddim(readouts, noise))

  def _ddim(self, readouts: Array, noise: dict[str, Array]) -> list[Array]:
    """The S DDIM steps: [initial noise, x after step 1, ..., clipped x after step S]."""
    cfg = self.config.head.diffusion
    clip = self.config.action_clip
    x = noise["initial"]
    chex.assert_shape(x, (readouts.shape[0], self.config.action_horizon, self.config.action_dim))
    b = x.shape[0]
    levels = ddim_timesteps(self.num_train_steps, cfg.num_sample_steps)
    ab_all = self.alphas_cumprod
    steps = [x]  # Only `sample_steps` reads the intermediate entries; `sample`'s graph is unchanged.
    for i, level in enumerate(levels):  # Fixed count, unrolled: exports as a static graph.
      ab = float(ab_all[level])
      ab_prev = float(ab_all[levels[i + 1]]) if i + 1 < len(levels) else 1.0
      eps = self.predict(readouts, x, jnp.full((b,), level, jnp.int32))
      x0 = jnp.clip((x - np.sqrt(1.0 - ab) * eps) / np.sqrt(ab), -clip, clip)
      eps = (x - np.sqrt(ab) * x0) / np.sqrt(1.0 - ab)
      sigma = cfg.eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
      x = np.sqrt(ab_prev) * x0 + np.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
      if sigma > 0:
        x = x + sigma * noise["step"][i]
      steps.append(x)
    steps[-1] = jnp.clip(x, -clip, clip)
    return steps
