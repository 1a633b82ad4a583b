"""Bad inputs fail early with errors that name the key, the shape and what was expected."""

from __future__ import annotations

import jax
import pytest

from vla_jax.models import Policy, example_batch


def test_missing_camera_error_names_it_and_lists_existing_keys(make_tiny_config):
  config = make_tiny_config()
  config.cameras = ("primary", "wrist")
  batch = example_batch(config)
  del batch["observation"]["image_wrist"]
  with pytest.raises(ValueError, match=r"observation/image_wrist.*image_primary"):
    Policy(config).init(jax.random.key(0), batch)


def test_wrong_image_size_error_states_expected_shape(make_tiny_config):
  config = make_tiny_config()
  batch = example_batch(config)
  config.image_size_px = 32
  with pytest.raises(ValueError, match=r"observation/image_primary has shape .*16, 16.*32, 32"):
    Policy(config).init(jax.random.key(0), batch)


def test_language_embedding_mode_requires_the_embedding(make_tiny_config):
  tokens_batch = example_batch(make_tiny_config(language="tokens"))
  with pytest.raises(ValueError, match=r"task/language_embedding.*language_tokens"):
    Policy(make_tiny_config(language="embedding")).init(jax.random.key(0), tokens_batch)


def test_noise_with_wrong_keys_is_rejected(make_tiny_config):
  config = make_tiny_config("diffusion")
  policy = Policy(config)
  batch = example_batch(config)
  params = jax.eval_shape(policy.init, jax.random.key(0), batch)
  with pytest.raises(ValueError, match=r"noise has keys \[\].*initial"):
    policy.sample_actions_from_noise(params, batch["observation"], batch["task"], {})
