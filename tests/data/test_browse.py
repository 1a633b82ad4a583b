"""`browse.read_episodes`: whole RLDS episodes as numpy, every key as stored (tests/data/conftest's toy data)."""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.data import browse
from vla_jax.data.testing import episode_action

from tests.data.conftest import TOY_LENGTHS


def test_episodes_come_back_whole_with_decoded_images_and_text(toy_dir):
  episodes = browse.read_episodes(toy_dir, split="train", count=2, start=2)
  assert [len(e["steps"]["action"]) for e in episodes] == TOY_LENGTHS["train"][2:4]
  first = browse.flatten(episodes[0]["steps"])
  length = TOY_LENGTHS["train"][2]
  assert first["observation/image"].shape == (length, 64, 64, 3) and first["observation/image"].dtype == np.uint8
  np.testing.assert_array_equal(first["observation/image"][:, 0, 0, 0], np.arange(length))  # channel 0 = t
  np.testing.assert_allclose(first["action"], [episode_action(2, t, 3) for t in range(length)])
  assert list(first["language_instruction"]) == ["task 2"] * length
  assert first["is_last"].tolist() == [False] * (length - 1) + [True]
  assert episodes[0]["episode_metadata"]["episode_id"] == 2


def test_asking_past_the_end_returns_what_there_is_and_a_wrong_split_is_named(toy_dir):
  assert len(browse.read_episodes(toy_dir, split="val", count=10)) == len(TOY_LENGTHS["val"])
  with pytest.raises(ValueError, match="not 'test'"):
    browse.read_episodes(toy_dir, split="test")
