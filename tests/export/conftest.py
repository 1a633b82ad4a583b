"""Fixtures for the export tests: one tiny untrained policy exported once per session.

An untrained policy exercises exactly the same graph as a trained one (conversion and parity do
not care about the weights), so most tests share one export of a `tiny` model on 16×16 images
with synthetic statistics; one slow test exports a really trained checkpoint.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from vla_jax.models import model_config  # noqa: E402


def tiny_export_model_config(head: str = "diffusion"):
  config = model_config("tiny", head)
  config.image_size_px = 32  # The simulator renders ≥ 32 px.
  config.language.max_len = 16
  config.head.diffusion.num_sample_steps = 3  # The loop is unrolled: fewer steps, faster compiles.
  # Random weights with the uncapped schedule: the first DDIM step's clean-chunk estimate is then
  # always clipped, so these tests check the export plumbing at 1e-4 independent of how much the
  # sampler amplifies rounding (x60 with the default cap, wherever the estimate is unclipped; see
  # heads/diffusion.cosine_alphas_cumprod). Conditioning on trained weights: test_trained_checkpoint.
  config.head.diffusion.max_beta = 0.999
  return config


@pytest.fixture
def tiny_model_config():
  """A fresh `tiny_export_model_config()` for a test that exports a policy of its own."""
  return tiny_export_model_config()


@pytest.fixture(scope="session")
def tiny_bundle():
  from vla_jax.inference.testing import random_bundle

  return random_bundle(tiny_export_model_config(), seed=0, normalization="bounds")


@pytest.fixture(scope="session")
def tiny_export(tiny_bundle, tmp_path_factory):
  """(export_dir, manifest) of the tiny policy, with both quantised variants."""
  from vla_jax.export import export_config, export_policy

  out = tmp_path_factory.mktemp("exports") / "tiny"
  config = export_config()
  config.parity_batch_sizes = (1, 4)
  manifest = export_policy(tiny_bundle, out, config, log=lambda *_: None)
  return out, manifest
