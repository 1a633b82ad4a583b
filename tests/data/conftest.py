"""Shared fixtures: small synthetic RLDS datasets written once per test session."""

from __future__ import annotations

import os

import pytest

from vla_jax.data import spec as spec_lib
from vla_jax.data import testing

# Episode lengths chosen to hit the edge cases: a 1-step episode, episodes shorter than the
# window and the horizon, and one longer than both.
TOY_LENGTHS = {"train": [5, 1, 8, 3, 6, 2], "val": [4, 6]}
BRIDGE_DIR = spec_lib.BRIDGE_DEBUG_DIR


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> str:
  return testing.write_synthetic_rlds(str(tmp_path_factory.mktemp("toy")), name="toy_rlds",
                                      episode_lengths=TOY_LENGTHS)


@pytest.fixture(scope="session")
def toy_spec(toy_dir):
  return spec_lib.dataset_spec(
      name="toy", builder_dir=toy_dir, cameras={"primary": "image"}, image_size_px=(64, 64),
      proprio_key="state", proprio_dim=5, action_dim=3, action_dim_kinds=("relative", "relative", "gripper"))


@pytest.fixture(scope="session")
def second_dir(tmp_path_factory) -> str:
  """A second toy dataset with the same layout (for mixtures); episode ids start at 100 in effect."""
  return testing.write_synthetic_rlds(str(tmp_path_factory.mktemp("toy2")), name="toy_two_rlds",
                                      episode_lengths={"train": [7, 7, 7, 7], "val": [3]})


@pytest.fixture
def stats_dir(tmp_path) -> str:
  return str(tmp_path / "stats")


@pytest.fixture
def bridge_available() -> None:
  if not os.path.isdir(BRIDGE_DIR):
    pytest.skip(f"Bridge debug dataset not found at {BRIDGE_DIR}")
