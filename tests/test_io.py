"""vla_jax.io: a file is replaced whole or not at all."""

from __future__ import annotations

import json

import pytest

from vla_jax.io import write_json_atomic, write_text_atomic


def test_writes_json_and_leaves_no_temp_file(tmp_path):
  path = write_json_atomic(tmp_path / "a" / "x.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
  assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1} and path.read_text().endswith("\n")
  assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
  path = write_text_atomic(tmp_path / "x.json", "old")
  with pytest.raises(TypeError):
    write_json_atomic(path, {"not serialisable": object()})
  with pytest.raises(TypeError):
    write_text_atomic(path, None)  # type: ignore[arg-type]
  assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
