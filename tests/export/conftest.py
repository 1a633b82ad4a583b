"""Fixtures for the export tests: one tiny untrained policy exported once per session.

An untrained policy exercises exactly the same graph as a trained one (conversion and parity do
not care about the weights), so most tests share one export of a `tiny` model on 32×32 images
with synthetic statistics; one slow test exports a really trained checkpoint.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.conftest import tiny_export_model_config  # noqa: E402


@pytest.fixture
def tiny_model_config():
  """A fresh `tiny_export_model_config()` for a test that exports a policy of its own."""
  return tiny_export_model_config()


@pytest.fixture(scope="session")
def tiny_export(tiny_export_and_manifest):
  """(export_dir, manifest) of the tiny policy, with both quantised variants (tests/conftest.py)."""
  return tiny_export_and_manifest
