"""Tokenizer options: learned (TokenLearner) image tokens, CoordConv channels, the byte n-gram conv."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch
from vla_jax.models.tokenizers import ImageTokenizer, LanguageTokenizer


def _image_with_dot(x_px: int, y_px: int, size: int = 16) -> np.ndarray:
  image = np.full((1, 1, size, size, 3), 200, np.uint8)
  image[0, 0, y_px, x_px] = (220, 40, 40)
  return image


def test_learned_image_tokens_replace_patches_with_k_tokens(make_tiny_config):
  config = make_tiny_config()
  config.image.num_learned_tokens = 3
  policy = Policy(config)
  batch = example_batch(config, batch_size=2)
  params = jax.eval_shape(policy.init, jax.random.key(0), batch)
  out = jax.eval_shape(policy.backbone_outputs, params, batch["observation"], batch["task"])
  assert out["observation"].shape == (2, config.window_size, 3 + 1, config.transformer.width)


def test_learned_token_position_is_the_softmax_weighted_mean_of_pixel_coordinates():
  """With the attention logits forced to pick one location, a token's "where" is that location:
  the coordinates reach the token exactly, not through learned position embeddings."""
  tokenizer = ImageTokenizer(width=4, stem_features=(), stem_kernel_size=3, patch_size=1,
                             num_learned_tokens=1)
  image = _image_with_dot(12, 3)
  params = tokenizer.init(jax.random.key(0), image)["params"]
  # Logit = 50 · (r − g − b) of the pixel: high only on the red dot. The projection reads (x, y).
  params["token_hidden"] = {"kernel": jnp.eye(3)[None, None], "bias": jnp.zeros(3)}
  params["token_logits"] = {"kernel": jnp.array([[[[50.0], [-50.0], [-50.0]]]]), "bias": jnp.zeros(1)}
  projection = np.zeros((5, 4), np.float32)
  projection[3, 0] = projection[4, 1] = 1.0  # Read out (x, y) only.
  params["token_projection"] = {"kernel": jnp.asarray(projection), "bias": jnp.zeros(4)}
  params["position_embedding"] = jnp.zeros_like(params["position_embedding"])
  where = np.asarray(tokenizer.apply({"params": params}, image))[0, 0, 0, :2]
  expected = np.array([12, 3]) / 15 * 2 - 1  # Pixel centres span [-1, 1].
  np.testing.assert_allclose(where, expected, atol=1e-3)


def test_coord_channels_make_identical_content_at_different_places_tokenize_differently():
  blank = np.full((1, 1, 16, 16, 3), 128, np.uint8)
  for coords, should_differ in ((False, False), (True, True)):
    tokenizer = ImageTokenizer(width=8, stem_features=(4,), stem_kernel_size=3, patch_size=1,
                               coord_channels=coords)
    params = tokenizer.init(jax.random.key(0), blank)["params"]
    params["position_embedding"] = jnp.zeros_like(params["position_embedding"])
    tokens = np.asarray(tokenizer.apply({"params": params}, blank))[0, 0]
    # Two interior patches of the 8×8 grid: the same content, no padding in their receptive field.
    assert (np.abs(tokens[2 * 8 + 2] - tokens[5 * 8 + 5]).max() > 1e-4) == should_differ


def test_byte_conv_lets_a_token_see_bytes_across_its_group_boundary():
  ids = np.zeros((1, 16), np.int32)
  ids[0, :12] = np.arange(1, 13) + 60
  changed = ids.copy()
  changed[0, 4] += 1  # First byte of group 1.
  for kernel, token0_changes in ((0, False), (3, True)):
    tokenizer = LanguageTokenizer(width=8, mode="tokens", vocab_size=257, byte_embedding_dim=4,
                                  bytes_per_token=4, embedding_num_tokens=1, byte_conv_kernel=kernel)
    params = tokenizer.init(jax.random.key(0), {"language_tokens": ids})
    a, _ = tokenizer.apply(params, {"language_tokens": ids})
    b, _ = tokenizer.apply(params, {"language_tokens": changed})
    assert (np.abs(np.asarray(a - b))[0, 0].max() > 1e-6) == token0_changes
    assert np.abs(np.asarray(a - b))[0, 1].max() > 1e-6  # Group 1 itself always changes.


def test_stem_strides_set_the_patch_grid_and_must_match_the_stem():
  images = np.zeros((1, 1, 16, 16, 3), np.uint8)
  for strides, patches in (((), 4), ((2, 1), 16)):  # () = every conv halves: 16 → 4 px → 2×2 patches.
    tokenizer = ImageTokenizer(width=8, stem_features=(4, 4), stem_kernel_size=3, patch_size=2,
                               stem_strides=strides)
    tokens = tokenizer.apply(tokenizer.init(jax.random.key(0), images), images)
    assert tokens.shape == (1, 1, patches, 8)
  bad = ImageTokenizer(width=8, stem_features=(4, 4), stem_kernel_size=3, patch_size=2, stem_strides=(2,))
  with pytest.raises(ValueError, match="one stride per stem conv"):
    bad.init(jax.random.key(0), images)


def test_stem_activation_is_applied_to_the_stem_and_the_learned_token_maps():
  images = np.random.default_rng(0).integers(0, 255, (2, 1, 16, 16, 3), dtype=np.uint8)
  # Each layout has activations in one place only, so a difference shows that place uses the option:
  # patch tokens after two stem convs (the stem alone), learned tokens on raw pixels (their hidden layer alone).
  layouts = {"stem": dict(stem_features=(4, 4), stem_strides=(2, 1), patch_size=2),
             "learned token hidden layer": dict(stem_features=(), patch_size=1, num_learned_tokens=3)}
  for where, layout in layouts.items():
    gelu = ImageTokenizer(width=8, stem_kernel_size=3, **layout)  # gelu is the default: old checkpoints load.
    params = gelu.init(jax.random.key(0), images)
    relu = ImageTokenizer(width=8, stem_kernel_size=3, stem_activation="relu", **layout)
    out_gelu, out_relu = gelu.apply(params, images), relu.apply(params, images)  # Same parameters.
    assert out_relu.shape == out_gelu.shape, where
    assert not np.allclose(out_relu, out_gelu, atol=1e-4), where
  with pytest.raises(ValueError, match=r"image.stem_activation='swish' is not one of \['gelu', 'relu'\]"):
    ImageTokenizer(width=8, stem_kernel_size=3, stem_activation="swish", **layouts["stem"]).init(
        jax.random.key(0), images)


@pytest.mark.slow  # ~11 s of compiles for a config plumbing check.
def test_stem_activation_reaches_the_image_tokenizer_from_the_model_config(make_tiny_config):
  config = make_tiny_config()
  batch = example_batch(config, 2, seed=0)
  params = Policy(config).init(jax.random.key(0), batch)
  assert config.image.stem_activation == "gelu"
  gelu = Policy(config).embed(params, batch["observation"], batch["task"])
  config.image.stem_activation = "relu"
  relu = Policy(config).embed(params, batch["observation"], batch["task"])
  assert gelu.shape == relu.shape and not np.allclose(gelu, relu, atol=1e-5)
