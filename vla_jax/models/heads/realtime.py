"""Real-time chunking: sample a new action chunk that continues the one the robot is executing.

While the model thinks for d control steps, the robot keeps executing the previous chunk, so the
first d actions of the new chunk are already decided. Real-time chunking (RTC; Black, Galliker &
Levine, arXiv 2506.07339) samples the rest of the chunk *conditioned* on that, by guiding the
iterative sampler towards the previous plan with a soft mask — no retraining. Notation as in the
paper: H the chunk length, d the inference delay, s the execution horizon (actions executed
between two inferences), Y [H, A] the previous chunk shifted so that Y_i is the action it planned
for the control step of the new chunk's index i.

Soft mask (paper eq. 5): W_i = 1 for i < d (frozen: these will execute), W_i = 0 for i ≥ H - s
(nothing planned there), and in between an exponential decay
    W_i = c_i (e^{c_i} - 1) / (e - 1),   c_i = (H - s - i) / (H - s - d + 1).

Flow matching (π0's convention: τ = 0 is noise, τ = 1 data; A^{τ+Δ} = A^τ + Δ v). One step of
the guided Euler integration (paper Algorithm 1, ΠGDM guidance):
    Â¹ = A^τ + (1 - τ) v(A^τ, τ)                       clean-chunk estimate
    g  = [(Y - Â¹) ⊙ W]ᵀ ∂Â¹/∂A^τ                       one vector–Jacobian product
    r² = (1 - τ)² / (τ² + (1 - τ)²)
    A^{τ+Δ} = A^τ + Δ (v + min(β, (1 - τ) / (τ r²)) g)  β: the guidance clip (paper: 5)

DDIM (ε-prediction, η = 0), derived here: divide the diffusion state by s_k = √ᾱ_k + √(1-ᾱ_k)
and it lies on the flow path, z = x / s_k = τ_k x̂₀ + (1 - τ_k) ε̂ with τ_k = √ᾱ_k / s_k. A
deterministic DDIM step x_k → x_{k'} is then *exactly* an Euler step in z from τ_k to τ_{k'} with
velocity v = x̂₀ - ε̂ (both sides equal τ_{k'} x̂₀ + (1 - τ_{k'}) ε̂), and the clean estimate Â¹ is
DDIM's (clipped) x̂₀. So the same guided step applies in z-coordinates, with the diffusion head's
own non-uniform τ_k; at W = 0 it reproduces plain DDIM (tested). The plain sampler clips x̂₀ to
the action range at every step, and the guidance differentiates that clip as it is (zero where an
estimate saturates): a straight-through derivative was measured on the trained small_h16 policy to
pass a ~1/τ Jacobian at the noisiest levels (85–90 % of estimates clipped there), making guided
steps ~18× the plain ones and the chunks 2.5× jerkier (benchmarks/results/realtime_chunking.md).
Stochastic DDIM (η > 0) is not supported.

Hard inpainting (the baseline without guidance): after every step the frozen positions (W = 1)
are overwritten with the prefix noised to the next τ, τ Y + (1 - τ) ε₀ (ε₀ the initial noise),
and the output reproduces Y there exactly.

Training-time conditioning (mode "conditioned": the continuation learned instead of guided): a head trained with `head.prefix_conditioning.max_delay` > 0 saw chunks whose first d
actions were given clean and flagged, with no loss on them. It samples the continuation directly:
at every step the frozen positions of its input hold Y (flagged), the rest is integrated as in
plain sampling, and the output reproduces Y there exactly. No guidance and no VJP, so it costs
what plain sampling costs; only the frozen prefix (W = 1) conditions it, not the soft-mask tail.
Delays above the trained max_delay are outside what it learned.

Everything is a pure function of (head params, readouts, noise, Y, d, s); d and s may be traced, so
one compiled sampler serves every delay. The backbone is not involved: it runs once per inference.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.models.heads import common
from vla_jax.models.heads import diffusion as diffusion_lib

Array = jnp.ndarray
MODES = ("rtc", "hard", "conditioned")
DEFAULT_MAX_GUIDANCE = 5.0  # β of the paper; a model's own is `head.rtc_max_guidance`.


def supported_modes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The `MODES` a model of `config` can sample: none for one-step heads and stochastic DDIM;
  "conditioned" only for heads trained with prefix conditioning."""
  kind = config.head.kind
  if kind not in ("flow", "diffusion") or (kind == "diffusion" and config.head.diffusion.eta > 0):
    return ()
  return tuple(m for m in MODES if m != "conditioned" or common.prefix_max_delay(config) > 0)


def prefix_weights(horizon: int, delay: Array | int, execute_horizon: Array | int, xp=jnp) -> Array:
  """The soft mask W float32 [H] (module docstring); delay and execute_horizon may be traced.

  The decay region is empty when d ≥ H - s (then W is 1 on the first d positions, 0 after).
  xp: jax.numpy (traceable) or numpy (for runtimes without JAX: the ONNX policy, the server).
  """
  i = xp.arange(horizon, dtype=xp.float32)
  d = xp.asarray(delay, xp.float32)
  end = horizon - xp.asarray(execute_horizon, xp.float32)  # First index with nothing planned.
  c = (end - i) / xp.maximum(end - d + 1.0, 1.0)
  decay = c * (xp.exp(c) - 1.0) / (np.e - 1.0)
  return xp.where(i < d, 1.0, xp.where(i < end, decay, 0.0)).astype(xp.float32)


# A head in flow coordinates: per sampling step i, clean_and_velocity(z, i) → (Â¹, v), the τ grid
# τ_0 < … < τ_S = 1, and the maps between the head's own state x and z.
StepFn = Callable[[Array, int], tuple[Array, Array]]


def _flow_coordinates(config: ml_collections.ConfigDict, predict: Callable[..., Array]):
  steps = int(config.head.flow.num_integration_steps)
  if steps < 1:
    raise ValueError(f"head.flow.num_integration_steps must be ≥ 1, got {steps}")
  taus = np.arange(steps + 1, dtype=np.float64) / steps

  def step(z: Array, i: int) -> tuple[Array, Array]:
    v = predict(z, jnp.full((z.shape[0],), taus[i], jnp.float32))
    return z + (1.0 - taus[i]) * v, v

  return taus, step, (lambda x: x)


def _ddim_coordinates(config: ml_collections.ConfigDict, predict: Callable[..., Array]):
  cfg = config.head.diffusion
  if cfg.eta > 0:
    raise ValueError(f"real-time chunking needs deterministic DDIM (head.diffusion.eta = 0), got eta={cfg.eta}")
  ab_all = diffusion_lib.cosine_alphas_cumprod(int(cfg.num_train_steps), max_beta=cfg.get("max_beta", 0.999))
  levels = diffusion_lib.ddim_timesteps(int(cfg.num_train_steps), int(cfg.num_sample_steps))
  ab = np.append(ab_all[levels].astype(np.float64), 1.0)  # [S + 1]; the last is the clean end.
  scale = np.sqrt(ab) + np.sqrt(1.0 - ab)
  taus = np.sqrt(ab) / scale
  clip = float(config.action_clip)

  def step(z: Array, i: int) -> tuple[Array, Array]:
    a = ab[i]
    x = z * scale[i]
    eps = predict(x, jnp.full((z.shape[0],), levels[i], jnp.int32))
    x0 = jnp.clip((x - np.sqrt(1.0 - a) * eps) / np.sqrt(a), -clip, clip)
    eps = (x - np.sqrt(a) * x0) / np.sqrt(1.0 - a)  # As the plain sampler: ε re-derived from the clipped x̂₀.
    return x0, x0 - eps

  return taus, step, (lambda x: x / scale[0])


def guided_sample(config: ml_collections.ConfigDict, predict: Callable[..., Array], initial_noise: Array,
                  prefix: Array, weights: Array, *, mode: str = "rtc",
                  max_guidance: float | None = None) -> Array:
  """A chunk that continues `prefix`, for the flow or (η = 0) diffusion head.

  Args:
    config: the model config (head.kind "flow" or "diffusion").
    predict: (x [B, H, A], time [B][, given [B, H]]) → the head network's output (velocity, or ε̂
      for a noise level) — `Policy.head_predict` with params and readouts bound; `given` is passed
      only in mode "conditioned".
    initial_noise: float32 [B, H, A], the sampler's noise["initial"].
    prefix: Y float32 [B, H, A] in normalised units, aligned to the new chunk's steps.
    weights: W float32 [H] or [B, H] (`prefix_weights`); 1 marks the frozen positions.
    mode: "rtc" (guided), "hard" (inpaint the positions with W ≥ 1, no guidance) or
      "conditioned" (a prefix-conditioned head continues the positions with W ≥ 1).
    max_guidance: β, the clip on the guidance weight; None: the config's `head.rtc_max_guidance`
      (`DEFAULT_MAX_GUIDANCE` for configs saved before it existed).

  Returns:
    actions float32 [B, H, A] in [-action_clip, action_clip].
  """
  kind = config.head.kind
  if mode not in MODES:
    raise ValueError(f"guided sampling mode {mode!r} unknown; expected one of {MODES}")
  shape = (initial_noise.shape[0], int(config.action_horizon), int(config.action_dim))
  chex.assert_shape([initial_noise, prefix], shape)
  w = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), shape[:2])[..., None]  # [B, H, 1]
  frozen = w >= 1.0
  if mode == "conditioned":
    if common.prefix_max_delay(config) < 1:
      raise ValueError("guidance 'conditioned' needs a head trained with prefix conditioning "
                       "(head.prefix_conditioning.max_delay > 0); this one was not: use 'rtc' or 'hard'")
    given = frozen[..., 0].astype(jnp.float32)
    plain_predict = predict
    # The head's own input x (flow: z; DDIM: z · scale) holds the clean prefix where it is given.
    predict = lambda x, t: plain_predict(jnp.where(frozen, prefix, x), t, given)  # noqa: E731
  if kind == "flow":
    taus, step, to_z = _flow_coordinates(config, predict)
  elif kind == "diffusion":
    taus, step, to_z = _ddim_coordinates(config, predict)
  else:
    raise ValueError(f"real-time chunking needs an iterative head (flow or diffusion), got head.kind={kind!r}")
  if max_guidance is None:
    max_guidance = float(config.head.get("rtc_max_guidance", DEFAULT_MAX_GUIDANCE))
  eps0 = initial_noise
  z = to_z(initial_noise)
  if mode == "hard":
    z = jnp.where(frozen, taus[0] * prefix + (1.0 - taus[0]) * eps0, z)
  for i in range(len(taus) - 1):  # Fixed count, unrolled, like the plain samplers.
    tau, dt = float(taus[i]), float(taus[i + 1] - taus[i])
    if mode == "rtc":
      clean, vjp, v = jax.vjp(lambda zz: step(zz, i), z, has_aux=True)
      (g,) = vjp((prefix - clean) * w)
      r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
      weight = max_guidance if tau == 0.0 else min(max_guidance, (1.0 - tau) / (tau * r2))
      z = z + dt * (v + weight * g)
    else:
      _, v = step(z, i)
      z = z + dt * v
      if mode == "hard":
        nxt = float(taus[i + 1])
        z = jnp.where(frozen, nxt * prefix + (1.0 - nxt) * eps0, z)
  clip = float(config.action_clip)
  out = jnp.clip(z, -clip, clip)
  if mode in ("hard", "conditioned"):
    out = jnp.where(frozen, prefix, out)
  return out
