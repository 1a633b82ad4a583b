"""The OXE registry's entries, its feature notation and the standardisation pieces no registered
dataset exercises on its own (episode-level instructions, non-ASCII UTF-8 codes, zlib tensors)."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import tensorflow as tf

from vla_jax.data import spec as spec_lib
from vla_jax.data.oxe import features, registry, transforms
from vla_jax.data.oxe.registry import OxeDataset, Slice, Zeros


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_entry_is_consistent_and_gives_a_7d_spec(name):
  entry = registry.get(name)
  registry.check_entry(entry)
  spec = spec_lib.oxe_spec(name, "/nonexistent/oxe")
  assert spec.action_dim == 7 and tuple(spec.action_dim_kinds)[6] == "gripper"
  assert spec.standardize_fn.startswith(f"oxe/{name}@") and spec.builder_dir.endswith(entry.tfds_name)
  assert entry.source  # Every structure says where it came from.


def test_editing_an_entry_changes_its_standardize_fn_name_and_so_the_statistics_key():
  entry = registry.get("viola")
  edited = dataclasses.replace(entry, proprio=(Slice(("observation", "joint_states")),))
  assert registry.standardize_fn_name(entry) != registry.standardize_fn_name(edited)
  assert registry.standardize_fn_name(entry) == registry.standardize_fn_name(registry.get("viola"))


def test_tfds_directory_names_resolve_to_the_same_entry():
  assert registry.get("stanford_hydra_dataset_converted_externally_to_rlds") is registry.get("stanford_hydra")


def test_an_entry_whose_action_is_not_6_plus_gripper_is_refused():
  entry = dataclasses.replace(registry.get("toto"), eef=(Slice(("action", "world_vector")), Zeros(2)))
  with pytest.raises(ValueError, match="eef parts give 5 dims, want 6"):
    registry.check_entry(entry)


def test_an_entry_reading_an_unregistered_key_is_refused():
  entry = dataclasses.replace(registry.get("viola"), gripper=Slice(("action", "gripper")))
  with pytest.raises(ValueError, match="reads steps/action/gripper, not in its registered features"):
    registry.check_entry(entry)


def test_notation_parses_to_leaves():
  assert features.parse_leaf("f32(7):zlib") == features.Leaf("tensor", "float32", (7,), True)
  assert features.parse_leaf("image(256,320)") == features.Leaf("image", "uint8", (256, 320, 3))
  assert features.parse_leaf("image(?,?)").matches(features.Leaf("image", "uint8", (64, 64, 3)))
  assert features.parse_leaf("text").matches(features.Leaf("tensor", "string", ()))
  assert not features.parse_leaf("f32(7)").matches(features.Leaf("tensor", "float32", (8,)))
  with pytest.raises(ValueError, match=r"bad feature notation 'float\(3\)'"):
    features.parse_leaf("float(3)")


def test_the_bridge_entry_matches_the_real_bridge_features_json(bridge_available):
  """Octo's real Bridge files (shared/datasets/bridge_debug), not a fixture of ours."""
  root = spec_lib.BRIDGE_DEBUG_DIR.rsplit("/bridge_dataset/", 1)[0]
  spec = spec_lib.oxe_spec("bridge", root)  # Compares features.json; raises on a mismatch.
  assert spec_lib.resolve_builder_dir(spec) == spec_lib.BRIDGE_DEBUG_DIR


# ---- Standardisation pieces, on a hand-made entry and episode (eager). -------------------------------

_ENTRY = OxeDataset(
    name="handmade", tfds_name="handmade", source="this test",
    features={"episode_metadata": {"goal": "text"},
              "steps": {"action": "f32(8)", "is_first": "bool", "is_last": "bool",
                        "observation": {"image": "image(8,8)", "pose": "f32(3):zlib", "codes": "i32(12)"}}},
    cameras={"primary": "image"}, eef=(Slice(("action",), 1, 7),), eef_kind="absolute",
    gripper_convention="open_is_1", gripper=Slice(("action",), 7, 8),
    proprio=(Slice(("observation", "pose")),), language_level="episode", language_path=("goal",))


def _episode() -> dict:
  pose = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
  codes = np.zeros([2, 12], np.int32)
  codes[:, :5] = list("pâte".encode())  # 5 UTF-8 bytes (â is 2).
  return {
      "episode_metadata": {"goal": tf.constant("stack the cups")},
      "steps": {"action": tf.constant(np.arange(16, dtype=np.float32).reshape(2, 8) / 10),
                "is_first": tf.constant([True, False]), "is_last": tf.constant([False, True]),
                "observation": {"image": tf.constant([b"png0", b"png1"]),
                                "pose": tf.constant([zlib.compress(p.tobytes()) for p in pose]),
                                "codes": tf.constant(codes)}},
  }


def test_episode_level_instruction_zlib_proprio_and_action_layout():
  out = transforms.standardize_episode(_ENTRY, _episode())["steps"]
  assert out["language_instruction"].numpy().tolist() == [b"stack the cups"] * 2
  np.testing.assert_array_equal(out["observation"]["proprio"].numpy(), [[1, 2, 3], [4, 5, 6]])
  np.testing.assert_allclose(out["action"].numpy()[:, :6], [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                                                            [0.9, 1.0, 1.1, 1.2, 1.3, 1.4]], rtol=1e-6)
  np.testing.assert_allclose(out["action"].numpy()[:, 6], [1 - 0.7, 0.0], atol=1e-6)  # 1 - clip(open).
  assert sorted(out["observation"]) == ["image", "proprio"]


def test_utf8_code_instructions_decode_exactly():
  entry = dataclasses.replace(_ENTRY, language_level="utf8_codes", language_path=("observation", "codes"))
  out = transforms.standardize_episode(entry, _episode())["steps"]
  assert [t.decode() for t in out["language_instruction"].numpy()] == ["pâte"] * 2


def test_blanked_instructions_are_empty_strings():
  out = transforms.standardize_episode(dataclasses.replace(_ENTRY, keep_language=False), _episode())["steps"]
  assert out["language_instruction"].numpy().tolist() == [b"", b""]


def test_an_episode_with_a_different_dtype_names_the_key_and_the_registration():
  episode = _episode()
  episode["steps"]["observation"]["codes"] = tf.zeros([2, 12], tf.float32)
  with pytest.raises(ValueError, match=r"steps/observation/codes: registered as Tensor int32 \(12\), dataset has "
                                       r"Tensor float32 \(12\) \(registered from this test\)"):
    transforms.standardize_episode(_ENTRY, episode)
