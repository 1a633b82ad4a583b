"""Output shapes for every head and size, checked by abstract evaluation (no compilation)."""

from __future__ import annotations

import jax
import pytest

from vla_jax.models import Policy, example_batch, model_config
from vla_jax.models.config import HEAD_KINDS, SIZES


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("head", HEAD_KINDS)
def test_every_head_and_size_returns_an_action_chunk(size, head):
  config = model_config(size, head)
  policy = Policy(config)
  batch = example_batch(config, batch_size=3)
  params = jax.eval_shape(policy.init, jax.random.key(0), batch)
  loss, metrics = jax.eval_shape(policy.loss, params, batch, jax.random.key(1))
  actions = jax.eval_shape(policy.sample_actions, params, batch["observation"], batch["task"],
                           jax.random.key(2))
  assert loss.shape == () and metrics
  assert actions.shape == (3, config.action_horizon, config.action_dim)
  assert actions.dtype == "float32"


@pytest.mark.parametrize("language", ["tokens", "embedding", "none"])
def test_two_cameras_history_and_split_proprio_tokenize_as_configured(make_tiny_config, language):
  config = make_tiny_config(language=language)
  config.cameras = ("primary", "wrist")
  config.window_size = 3
  config.proprio_modalities = (("pose", 0, 3), ("tactile", 3, 5))
  config.num_readout_tokens = 2
  policy = Policy(config)
  batch = example_batch(config, batch_size=2)
  params = jax.eval_shape(policy.init, jax.random.key(0), batch)
  out = jax.eval_shape(policy.backbone_outputs, params, batch["observation"], batch["task"])
  patches = (16 // 8) ** 2  # tiny: stride-2 stem × patch 4 on 16 px.
  width = config.transformer.width
  assert out["observation"].shape == (2, 3, 2 * patches + 2, width)
  assert out["readout"].shape == (2, 2, width)
  num_task = {"tokens": 16 // 4, "embedding": 1, "none": 0}[language]
  assert out["task"].shape == (2, num_task, width)


def test_ddim_with_eta_asks_for_per_step_noise():
  config = model_config("tiny", "diffusion")
  config.head.diffusion.eta = 1.0
  shapes = Policy(config).noise_shapes(batch_size=2)
  assert shapes == {"initial": (2, 4, 3), "step": (config.head.diffusion.num_sample_steps, 2, 4, 3)}


def test_deterministic_heads_take_no_noise():
  for head in ("l1", "mse", "discrete"):
    assert Policy(model_config("tiny", head)).noise_shapes(4) == {}
