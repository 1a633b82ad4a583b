"""Sampling behaviour: determinism, noise as an input, range, and the instruction mattering."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch
from vla_jax.models.tokenizers import ImageTokenizer

ALL_HEADS = ["diffusion", "flow", "l1", "mse", "discrete"]


@pytest.mark.parametrize("head", ALL_HEADS)
def test_sampling_is_deterministic_given_the_rng(tiny_policy, head):
  policy, params, batch, sample = tiny_policy(head)
  obs, task = batch["observation"], batch["task"]
  a = sample(params, obs, task, jax.random.key(7))
  b = sample(params, obs, task, jax.random.key(7))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if head in ("diffusion", "flow"):  # Generative heads: another rng gives another sample.
    c = sample(params, obs, task, jax.random.key(8))
    assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("head", ALL_HEADS)
def test_actions_are_a_chunk_in_the_normalised_range(tiny_policy, head):
  policy, params, batch, sample = tiny_policy(head)
  a = np.asarray(sample(params, batch["observation"], batch["task"], jax.random.key(0)))
  assert a.shape == (4, 4, 3) and a.dtype == np.float32
  assert np.all(np.abs(a) <= policy.config.action_clip)


def test_noise_passed_in_reproduces_sample_actions_with_stochastic_ddim(make_tiny_config, jit):
  config = make_tiny_config("diffusion")
  config.head.diffusion.eta = 1.0
  policy = Policy(config)
  batch = example_batch(config, 4, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  obs, task = batch["observation"], batch["task"]
  rng = jax.random.key(3)
  a = jit(policy.sample_actions)(params, obs, task, rng)
  from_noise = jit(policy.sample_actions_from_noise)
  noise = policy.make_noise(rng, 4)
  np.testing.assert_allclose(np.asarray(a), np.asarray(from_noise(params, obs, task, noise)),
                             atol=1e-6)
  noise["step"] = noise["step"] * 0.0  # η > 0: the per-step noise is really used.
  assert not np.allclose(np.asarray(a), np.asarray(from_noise(params, obs, task, noise)))


@pytest.mark.parametrize("language", ["tokens", "embedding"])
def test_changing_the_instruction_changes_the_actions(tiny_policy, language):
  policy, params, batch, sample = tiny_policy("flow", language)
  obs, task = batch["observation"], batch["task"]
  other = {k: v[::-1].copy() for k, v in task.items()}  # Each example gets another instruction.
  a = np.asarray(sample(params, obs, task, jax.random.key(0)))
  b = np.asarray(sample(params, obs, other, jax.random.key(0)))
  assert np.abs(a - b).max() > 1e-3


def test_film_makes_image_tokens_depend_on_the_instruction():
  tokenizer = ImageTokenizer(width=8, stem_features=(4,), stem_kernel_size=3, patch_size=2,
                             film=True)
  images = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8, 3)).astype(np.uint8)
  cond_a, cond_b = np.ones((2, 5), np.float32), -np.ones((2, 5), np.float32)
  params = tokenizer.init(jax.random.key(0), images, cond_a)["params"]
  # Zero-initialised FiLM is the identity, so training starts from the unconditioned stem…
  same_a = tokenizer.apply({"params": params}, images, cond_a)
  same_b = tokenizer.apply({"params": params}, images, cond_b)
  np.testing.assert_allclose(np.asarray(same_a), np.asarray(same_b), atol=1e-6)
  # …and once FiLM has weights, the instruction modulates the image features.
  params["film_0"]["kernel"] = jax.random.normal(jax.random.key(1), params["film_0"]["kernel"].shape)
  a = tokenizer.apply({"params": params}, images, cond_a)
  b = tokenizer.apply({"params": params}, images, cond_b)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2


def test_film_from_layer_leaves_the_earlier_stem_convs_unconditioned():
  tokenizer = ImageTokenizer(width=8, stem_features=(4, 4), stem_kernel_size=3, stem_strides=(1, 1), patch_size=2,
                             film=True, film_from_layer=1)
  images = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8, 3)).astype(np.uint8)
  params = tokenizer.init(jax.random.key(0), images, np.ones((2, 5), np.float32))["params"]
  assert "film_0" not in params and "film_1" in params
  with pytest.raises(ValueError, match="image.film_from_layer=2 is not valid"):
    ImageTokenizer(width=8, stem_features=(4, 4), stem_kernel_size=3, patch_size=2, film=True,
                   film_from_layer=2).init(jax.random.key(0), images, np.ones((2, 5), np.float32))


def test_diffusion_level_features_are_the_exact_float64_table():
  """The denoiser's time features at integer levels come from a float64 table (picked by a one-hot
  matmul), not from float32 sin/cos of angles up to ~1000 rad, whose result differs between XLA,
  TF kernels and TF constant folding by ~1e-4 — enough to break export parity."""
  from vla_jax.models.heads.common import level_features, time_features
  levels = np.arange(100, dtype=np.int32)
  got = np.asarray(level_features(jnp.asarray(levels), 100, 32))
  angles = (levels / 100.0)[:, None] * np.exp(np.linspace(0.0, np.log(1000.0), 16))[None, :]
  exact = np.concatenate([np.sin(angles), np.cos(angles)], -1)
  np.testing.assert_allclose(got, exact, atol=1e-7)  # float32 rounding of the exact value only.
  float32_trig = np.asarray(time_features(jnp.asarray(levels / 100.0, jnp.float32), 32))
  assert np.abs(float32_trig - exact).max() > 1e-6  # What the table avoids.


def test_schedule_cap_bounds_the_first_ddim_steps_error_amplification():
  """√((1−ᾱ)/ᾱ) at the noisiest level multiplies ε̂'s rounding into the sampled actions."""
  from vla_jax.models.heads.diffusion import cosine_alphas_cumprod

  def amplification(max_beta):
    ab = cosine_alphas_cumprod(100, max_beta=max_beta)[-1]
    return np.sqrt((1 - ab) / ab)

  assert amplification(0.999) > 1000  # The customary cap: float rounding ×2 000.
  assert amplification(0.5) < 100
  np.testing.assert_array_equal(cosine_alphas_cumprod(100, max_beta=0.5)[:97],
                                cosine_alphas_cumprod(100, max_beta=0.999)[:97])


def test_configs_without_max_beta_keep_the_schedule_they_were_trained_with():
  from vla_jax.models.config import model_config
  from vla_jax.models.heads.diffusion import DiffusionHead, cosine_alphas_cumprod

  config = model_config("tiny")
  del config.head.diffusion.max_beta
  head = DiffusionHead(config).bind({})
  np.testing.assert_array_equal(head.alphas_cumprod, cosine_alphas_cumprod(100, max_beta=0.999))
