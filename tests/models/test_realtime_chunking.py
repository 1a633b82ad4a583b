"""Real-time chunking (heads/realtime.py): the mask, the exact reductions, and a bimodal toy.

The toy has an exact denoiser: the data are two equally likely action paths, +P and -P (constant
velocity commands in opposite directions), so the
posterior over the two given a noisy chunk is analytic and so are the flow velocity and the DDIM
ε. Sampled from scratch it lands on either path; temporal ensembling of one chunk from each
averages them into a path that belongs to neither; RTC continuing a chunk on +P stays on +P.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vla_jax.models.heads import realtime

H, A = 8, 2
# The two paths: constant velocity commands +c and -c, so a path shifted by executed steps is
# still the same path (a chunk half-way along +P continues +P).
PATH = np.tile(np.float32([0.6, -0.3]), (H, 1))  # [H, A]


def toy_config(kind: str, max_delay: int = 0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      action_horizon=H, action_dim=A, action_clip=1.0,
      head=dict(kind=kind, flow=dict(num_integration_steps=10),
                diffusion=dict(num_train_steps=100, num_sample_steps=10, eta=0.0, max_beta=0.5),
                prefix_conditioning=dict(max_delay=max_delay))))


def _posterior_mean(x: jnp.ndarray, signal: jnp.ndarray, noise_std: jnp.ndarray,
                    given: jnp.ndarray | None = None) -> jnp.ndarray:
  """E[x₀ | x] for x = signal·x₀ + noise_std·ε, x₀ ∈ {+P, -P} equally likely. x [B, H, A].

  given [B, H]: positions where x holds x₀ itself, clean (a prefix-conditioned head's input): they
  are scored as observations with a tiny noise instead."""
  modes = jnp.stack([PATH, -PATH])  # [2, H, A]
  given = jnp.zeros(x.shape[:2]) if given is None else given
  signal = jnp.where(given > 0, 1.0, signal[:, None])[:, None, :, None]  # [B, 1, H, 1]
  std = jnp.where(given > 0, 1e-2, noise_std[:, None])[:, None, :, None]
  logits = -jnp.sum((x[:, None] - signal * modes[None]) ** 2 / (2.0 * std ** 2), axis=(2, 3))  # [B, 2]
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bm,mha->bha", p, modes)


def toy_predict(kind: str, conditioned: bool = False):
  """(config, predict): the toy's exact denoiser; `conditioned`: a prefix-conditioned head's, which
  also takes given [B, H] (1 where its input holds a clean prefix action)."""
  config = toy_config(kind, max_delay=H // 2 if conditioned else 0)
  if kind == "flow":  # z = τ x₁ + (1 - τ) ε;  v = (E[x₁|z] - z) / (1 - τ).
    def predict(z, t, given=None):
      tt = t[:, None, None]
      mean = _posterior_mean(z, t, jnp.maximum(1.0 - t, 1e-4), given)
      return (mean - z) / jnp.maximum(1.0 - tt, 1e-4)
  else:
    from vla_jax.models.heads.diffusion import cosine_alphas_cumprod

    ab_table = jnp.asarray(cosine_alphas_cumprod(100, max_beta=0.5))

    def predict(x, level, given=None):  # x = √ᾱ x₀ + √(1-ᾱ) ε;  ε̂ = (x - √ᾱ E[x₀|x]) / √(1-ᾱ).
      ab = ab_table[level]
      mean = _posterior_mean(x, jnp.sqrt(ab), jnp.sqrt(1.0 - ab), given)
      return (x - jnp.sqrt(ab)[:, None, None] * mean) / jnp.sqrt(1.0 - ab)[:, None, None]
  if conditioned:
    return config, predict
  return config, lambda x, t: predict(x, t)  # A plain head's network takes no `given`.


def plain_sample(kind: str, predict, noise):
  """The heads' own plain samplers (Euler / DDIM η = 0), written out for the toy."""
  config = toy_config(kind)
  if kind == "flow":
    x, steps = noise, config.head.flow.num_integration_steps
    for i in range(steps):
      x = x + predict(x, jnp.full((x.shape[0],), i / steps, jnp.float32)) / steps
    return jnp.clip(x, -1, 1)
  from vla_jax.models.heads.diffusion import cosine_alphas_cumprod, ddim_timesteps

  ab_all, levels, x = cosine_alphas_cumprod(100, max_beta=0.5), ddim_timesteps(100, 10), noise
  for i, level in enumerate(levels):
    ab, ab_prev = float(ab_all[level]), float(ab_all[levels[i + 1]]) if i + 1 < len(levels) else 1.0
    eps = predict(x, jnp.full((x.shape[0],), level, jnp.int32))
    x0 = jnp.clip((x - np.sqrt(1 - ab) * eps) / np.sqrt(ab), -1, 1)
    eps = (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
    x = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
  return jnp.clip(x, -1, 1)


def test_soft_mask_matches_the_paper():
  w = np.asarray(realtime.prefix_weights(8, 2, 3))  # Frozen 0..1, decay 2..4, nothing planned 5..7.
  assert w[:2].tolist() == [1.0, 1.0] and w[5:].tolist() == [0.0, 0.0, 0.0]
  c = (5 - np.arange(2, 5)) / (5 - 2 + 1)
  np.testing.assert_allclose(w[2:5], c * (np.exp(c) - 1) / (np.e - 1), rtol=1e-6)
  assert np.all(np.diff(w) <= 0) and np.all(w[2:5] < 1)
  np.testing.assert_array_equal(realtime.prefix_weights(8, 0, 8), np.zeros(8))  # Nothing to continue.
  jitted = jax.jit(realtime.prefix_weights, static_argnums=0)  # Delay traced: one compile, any d.
  np.testing.assert_allclose(jitted(8, jnp.int32(2), jnp.int32(3)), w)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_without_a_prefix_guided_sampling_is_plain_sampling(kind):
  config, predict = toy_predict(kind)
  noise = jax.random.normal(jax.random.key(0), (16, H, A))
  expected = plain_sample(kind, predict, noise)
  for mode in realtime.MODES:
    if mode == "conditioned":  # Needs a head trained for it: the conditioned toy, given nothing.
      config, predict = toy_predict(kind, conditioned=True)
    got = realtime.guided_sample(config, predict, noise, jnp.zeros_like(noise), jnp.zeros(H), mode=mode)
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_a_prefix_conditioned_head_keeps_the_prefix_exactly_and_its_mode(kind):
  """The exact prefix-conditioned toy continues a +P prefix on +P for every noise (hard inpainting
  of the unconditioned toy does not), and a head not trained for it is refused by name."""
  config, predict = toy_predict(kind, conditioned=True)
  noise = jax.random.normal(jax.random.key(1), (128, H, A))
  prefix = jnp.broadcast_to(jnp.asarray(PATH), noise.shape)
  w = realtime.prefix_weights(H, 2, 3)
  got = np.asarray(realtime.guided_sample(config, predict, noise, prefix, w, mode="conditioned"))
  np.testing.assert_array_equal(got[:, :2], prefix[:, :2])
  assert (np.abs(got - PATH).max(axis=(1, 2)) < 0.05).mean() == 1.0
  plain_config, plain_predict = toy_predict(kind)
  with pytest.raises(ValueError, match="prefix_conditioning.max_delay > 0"):
    realtime.guided_sample(plain_config, plain_predict, noise, prefix, w, mode="conditioned")


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_inpainting_keeps_the_prefix_exactly_rtc_keeps_it_and_its_mode(kind):
  """Hard inpainting copies the frozen actions but, on this bimodal toy, often continues them on
  the other path (a mode switch inside one chunk); RTC's guidance is soft — it reproduces the
  prefix to float precision on almost every noise and keeps the whole chunk on its path."""
  config, predict = toy_predict(kind)
  noise = jax.random.normal(jax.random.key(1), (128, H, A))
  prefix = jnp.broadcast_to(jnp.asarray(PATH), noise.shape)  # The robot is on +P.
  d, s = 3, 3
  w = realtime.prefix_weights(H, d, s)
  hard = np.asarray(realtime.guided_sample(config, predict, noise, prefix, w, mode="hard"))
  np.testing.assert_array_equal(hard[:, :d], prefix[:, :d])
  hard_stays = np.abs(hard - PATH).max(axis=(1, 2)) < 0.05
  rtc = np.asarray(realtime.guided_sample(config, predict, noise, prefix, w, mode="rtc"))
  prefix_err = np.abs(rtc[:, :d] - PATH[:d]).max(axis=(1, 2))
  rtc_stays = np.abs(rtc - PATH).max(axis=(1, 2)) < 0.05
  assert np.median(prefix_err) < 1e-5 and (prefix_err < 0.05).mean() >= 0.9
  assert rtc_stays.mean() >= 0.9 and hard_stays.mean() <= 0.85 and rtc_stays.mean() > hard_stays.mean() + 0.1


def test_the_guidance_clip_comes_from_the_config_and_defaults_to_the_papers():
  """β is `head.rtc_max_guidance` unless passed; a config saved before the key existed samples
  with the paper's 5; a different β changes the chunk."""
  config, predict = toy_predict("flow")
  noise = jax.random.normal(jax.random.key(3), (8, H, A))
  prefix = 0.3 * jax.random.normal(jax.random.key(4), noise.shape)  # Off both paths: guidance must pull.
  w = realtime.prefix_weights(H, 2, 3)
  sample = lambda cfg, **kw: np.asarray(realtime.guided_sample(cfg, predict, noise, prefix, w, **kw))  # noqa: E731
  assert "rtc_max_guidance" not in config.head
  default = sample(config)
  np.testing.assert_array_equal(default, sample(config, max_guidance=realtime.DEFAULT_MAX_GUIDANCE))
  config.head.rtc_max_guidance = 1.0
  np.testing.assert_array_equal(sample(config), sample(config, max_guidance=1.0))
  assert np.abs(sample(config) - default).max() > 1e-3


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_bimodal_toy_ensembling_averages_the_modes_rtc_follows_the_prefix(kind):
  config, predict = toy_predict(kind)
  noise = jax.random.normal(jax.random.key(2), (64, H, A))
  fresh = np.asarray(plain_sample(kind, predict, noise))
  on_plus = np.sum(fresh * PATH, axis=(1, 2)) > 0
  assert 0.2 < on_plus.mean() < 0.8  # From scratch the toy picks either path ...
  np.testing.assert_allclose(np.abs(fresh), np.abs(PATH)[None].repeat(64, 0), atol=0.05)  # ... a whole one.
  # A robot on +P that executes s = 3 actions per chunk while the next one takes d = 3 to compute.
  prefix = jnp.broadcast_to(jnp.asarray(PATH), noise.shape)  # The previous chunk, shifted: still +P.
  rtc = np.asarray(realtime.guided_sample(config, predict, noise, prefix, realtime.prefix_weights(H, 3, 3)))
  assert (np.abs(rtc - PATH).max(axis=(1, 2)) < 0.05).mean() >= 0.9  # RTC continues on +P.
  # Temporal ensembling of the previous (+P) plan with a fresh chunk that went to -P: the overlap
  # is their average, a path that belongs to neither mode.
  ensembled = 0.5 * (PATH + fresh[~on_plus][0])
  assert np.abs(ensembled - PATH).min() > 0.25 and np.abs(ensembled + PATH).min() > 0.25


@pytest.mark.parametrize("head", [pytest.param("flow", marks=pytest.mark.slow), "diffusion"])
def test_policy_guided_sampling_runs_the_backbone_once_and_reduces_to_plain(head, make_tiny_config, jit):
  """Policy.sample_actions_guided on a real (tiny, untrained) model: one compiled function for
  every delay (d traced), no previous chunk (W = 0) gives `sample_actions_from_noise`, hard mode keeps the prefix."""
  from vla_jax.models import Policy, example_batch

  config = make_tiny_config(head)
  config.head.diffusion.num_sample_steps = 4
  config.head.flow.num_integration_steps = 4
  policy = Policy(config)
  batch = example_batch(config, 2, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  obs, task = batch["observation"], batch["task"]
  noise = policy.make_noise(jax.random.key(1), 2)
  prefix = jax.random.uniform(jax.random.key(2), (2, config.action_horizon, config.action_dim), minval=-1, maxval=1)
  horizon = config.action_horizon

  @jit
  def guided(delay, execute):
    w = realtime.prefix_weights(horizon, delay, execute)
    return (policy.sample_actions_guided(params, obs, task, noise, prefix, w, mode="hard"),
            policy.sample_actions_guided(params, obs, task, noise, prefix, w, mode="rtc"))

  plain = jit(policy.sample_actions_from_noise)(params, obs, task, noise)
  hard0, rtc0 = guided(jnp.int32(0), jnp.int32(horizon))  # No previous chunk: W = 0.
  np.testing.assert_allclose(rtc0, plain, atol=1e-5)
  np.testing.assert_allclose(hard0, plain, atol=1e-5)
  hard2, rtc2 = guided(jnp.int32(2), jnp.int32(1))  # Same compiled function, another delay.
  np.testing.assert_array_equal(hard2[:, :2], prefix[:, :2])
  assert np.all(np.isfinite(rtc2)) and rtc2.shape == plain.shape
  calls = []
  embed = policy.embed
  policy.embed = lambda *args: calls.append(1) or embed(*args)  # Counts backbone runs (traced once).
  jax.jit(lambda: policy.sample_actions_guided(params, obs, task, noise, prefix,
                                               realtime.prefix_weights(horizon, 2, 1), mode="rtc"))()
  assert len(calls) == 1  # Only the head iterates (and is differentiated); the backbone runs once.
  policy.embed = embed
  with pytest.raises(ValueError, match="prefix has shape"):
    policy.sample_actions_guided(params, obs, task, noise, prefix[:, :1], realtime.prefix_weights(horizon, 1, 1))


def test_prefix_conditioned_training_masks_the_given_actions_and_sampling_reduces_to_plain(make_tiny_config, jit):
  """Training gives a random prefix of each chunk clean and takes no loss on it; sampling with no
  prefix is plain sampling; a given prefix is reproduced exactly. (The flow head's sampler is the
  same code path: the toy tests above cover both.)"""
  from vla_jax.models import Policy, example_batch
  from vla_jax.models.heads import common

  actions = jax.random.normal(jax.random.key(0), (64, 5, 2))
  noisy = actions + 10.0
  x, given, mask = common.condition_on_prefix(jax.random.key(1), actions, noisy, jnp.ones((64, 5), bool), 3)
  delays = np.asarray(given).sum(1)
  assert (delays[:32] == 0).all()  # plain_fraction 0.5: the first half of the rows (whole noise copies) plain,
  assert set(delays[32:].tolist()) == {1, 2, 3}  # the rest d ~ U{1 … max_delay}: every delay drawn.
  g = np.asarray(given) > 0
  np.testing.assert_array_equal(np.asarray(x)[g], np.asarray(actions)[g])
  np.testing.assert_array_equal(np.asarray(x)[~g], np.asarray(noisy)[~g])
  np.testing.assert_array_equal(np.asarray(mask), ~g)
  _, _, dim_mask = common.condition_on_prefix(jax.random.key(1), actions, noisy, jnp.ones((64, 5, 2), bool), 3)
  np.testing.assert_array_equal(np.asarray(dim_mask), np.repeat(~g[..., None], 2, -1))  # [B, H, A] masks too.

  config = make_tiny_config("diffusion")
  config.head.prefix_conditioning.max_delay = 2
  config.head.diffusion.num_sample_steps = 4
  policy = Policy(config)
  batch = example_batch(config, 2, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  # Inputs: pooled readouts, time embedding, the chunk, and one "given" flag per chunk position.
  expected_inputs = (config.transformer.width + config.head.denoiser.hidden_dim
                     + config.action_horizon * (config.action_dim + 1))
  assert params["head"]["denoiser"]["input"]["kernel"].shape[0] == expected_inputs
  obs, task = batch["observation"], batch["task"]
  noise = policy.make_noise(jax.random.key(1), 2)
  prefix = jax.random.uniform(jax.random.key(2), (2, config.action_horizon, config.action_dim), minval=-1, maxval=1)
  plain = jit(policy.sample_actions_from_noise)(params, obs, task, noise)
  conditioned = jit(lambda d: policy.sample_actions_guided(
      params, obs, task, noise, prefix, realtime.prefix_weights(config.action_horizon, d, 1), mode="conditioned"))
  np.testing.assert_allclose(conditioned(jnp.int32(0)), plain, atol=1e-6)
  got = conditioned(jnp.int32(2))
  np.testing.assert_array_equal(got[:, :2], prefix[:, :2])
  assert np.abs(np.asarray(got[:, 2:]) - np.asarray(plain[:, 2:])).max() > 1e-3  # The prefix is read.


@pytest.mark.slow  # ~30 s: 400 training steps.
def test_a_prefix_conditioned_head_learns_to_continue_the_mode_its_prefix_started(make_tiny_config, train_steps, jit):
  """A tiny diffusion policy trained on a bimodal task — every chunk is +P or -P, independent of
  the observation — with prefix conditioning: sampled from scratch it picks either path, and given
  two actions of +P it continues on +P (the exact toy always does; the trained head must in ≥ 95 %)."""
  from vla_jax.models import Policy, example_batch

  config = make_tiny_config("diffusion")
  config.head.prefix_conditioning.max_delay = 2
  config.head.diffusion.num_sample_steps = 10
  policy = Policy(config)
  h, a = config.action_horizon, config.action_dim
  path = np.tile(np.linspace(-0.6, 0.6, a, dtype=np.float32), (h, 1))  # [H, A]
  batch = example_batch(config, 64, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  rng = np.random.default_rng(0)

  def batch_fn(i):
    sign = rng.choice([-1.0, 1.0], size=(64, 1, 1)).astype(np.float32)
    return {**batch, "action": sign * path[None]}

  params, _ = train_steps(policy, params, batch_fn, 400, 3e-3)
  n = 64
  obs = jax.tree.map(lambda x: x[:n], batch["observation"])
  task = jax.tree.map(lambda x: x[:n], batch["task"])
  noise = policy.make_noise(jax.random.key(5), n)
  fresh = np.asarray(jit(policy.sample_actions_from_noise)(params, obs, task, noise))
  on_plus = (fresh * path).sum(axis=(1, 2)) > 0
  assert 0.2 < on_plus.mean() < 0.8  # From scratch: either path.
  prefix = jnp.broadcast_to(jnp.asarray(path), (n, h, a))
  w = realtime.prefix_weights(h, 2, 1)
  got = np.asarray(jit(lambda: policy.sample_actions_guided(params, obs, task, noise, prefix, w, mode="conditioned"))())
  on_path = ((got[:, 2:] * path[2:]).sum(axis=(1, 2)) > 0).mean()  # Measured 0.98 (400 steps).
  error = np.median(np.abs(got[:, 2:] - path[2:]).max(axis=(1, 2)))  # Measured 0.03.
  assert on_path >= 0.95 and error < 0.1, (on_path, error)


@pytest.mark.slow  # ~12 s: two head compilations and their gradients.
@pytest.mark.parametrize("detach", [False, True])
def test_detach_backbone_stops_the_gradient_of_prefix_rows_into_the_readouts(detach, make_tiny_config):
  """With head.prefix_conditioning.detach_backbone the readouts get gradient from the plain rows
  only: every noise copy of an example in the plain half, none from the conditioned half."""
  from vla_jax.models.heads.diffusion import DiffusionHead

  config = make_tiny_config("diffusion")
  config.head.prefix_conditioning.update(max_delay=2, detach_backbone=detach)
  config.head.diffusion.num_noise_samples = 1  # One row per example: row b is plain iff b < B / 2.
  head = DiffusionHead(config)
  b, h, a = 8, config.action_horizon, config.action_dim
  readouts = jax.random.normal(jax.random.key(0), (b, 2, 16))
  actions = jax.random.uniform(jax.random.key(1), (b, h, a), minval=-1, maxval=1)
  mask = jnp.ones((b, h), bool)
  params = head.init(jax.random.key(2), readouts, actions, mask, jax.random.key(3))
  grad = jax.grad(lambda r: head.apply(params, r, actions, mask, jax.random.key(3))[0])(readouts)
  per_row = np.abs(np.asarray(grad)).sum(axis=(1, 2))
  assert (per_row[: b // 2] > 0).all()
  assert (per_row[b // 2:] == 0).all() if detach else (per_row[b // 2:] > 0).all()
