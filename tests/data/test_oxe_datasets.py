"""Every registered OXE dataset, as a tiny fixture with its exact published structure (written here
with TFDS), reads through the standard pipeline into batches with this project's conventions:
7-d action, gripper in [0, 1] with 1 = close, the instruction text, the right camera."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vla_jax.data import language, pipeline, spec as spec_lib, statistics, testing
from vla_jax.data.oxe import features, mixtures, registry

# Written from each dataset's TFDS catalog page, independently of the registry: which observation
# key is the primary / wrist camera, which 6 numbers are the end-effector action, and whether the
# instruction survives (Octo blanks one-template-per-dataset instructions).
_wv_rd = lambda s: np.concatenate([s["action"]["world_vector"], s["action"]["rotation_delta"]])
_a6 = lambda s: s["action"][:6]
EXPECTED: dict[str, dict[str, Any]] = {
    "fractal20220817_data": dict(cameras={"primary": "image"}, eef=_wv_rd, language=True),
    "kuka": dict(cameras={"primary": "image"}, eef=_wv_rd, language=False),
    "bridge": dict(cameras={"primary": "image_0"}, eef=_a6, language=True),
    "taco_play": dict(cameras={"primary": "rgb_static", "wrist": "rgb_gripper"},
                      eef=lambda s: s["action"]["rel_actions_world"][:6], language=True),
    "jaco_play": dict(cameras={"primary": "image", "wrist": "image_wrist"},
                      eef=lambda s: np.concatenate([s["action"]["world_vector"], np.zeros(3)]), language=True),
    # No gripper action: the cable stays grasped (closed) throughout.
    "berkeley_cable_routing": dict(cameras={"primary": "image", "wrist": "wrist45_image"}, eef=_wv_rd, language=False,
                                   gripper=1),
    "roboturk": dict(cameras={"primary": "front_rgb"}, eef=_wv_rd, language=False),
    "nyu_door_opening": dict(cameras={"wrist": "image"}, eef=_wv_rd, language=False),
    "viola": dict(cameras={"primary": "agentview_rgb", "wrist": "eye_in_hand_rgb"}, eef=_wv_rd, language=False),
    "berkeley_autolab_ur5": dict(cameras={"primary": "image", "wrist": "hand_image"}, eef=_wv_rd, language=True),
    "toto": dict(cameras={"primary": "image"}, eef=_wv_rd, language=False),
    # A planar pusher without a gripper: open throughout.
    "language_table": dict(cameras={"primary": "rgb"}, eef=lambda s: np.concatenate([s["action"], np.zeros(4)]),
                           language=True, gripper=0),
    "stanford_hydra": dict(cameras={"primary": "image", "wrist": "wrist_image"}, eef=_a6, language=False),
    "austin_buds": dict(cameras={"primary": "image", "wrist": "wrist_image"}, eef=_a6, language=False),
    "nyu_franka_play": dict(cameras={"primary": "image", "secondary": "image_additional_view"},
                            eef=lambda s: s["action"][7:13], language=False),
    "ucsd_kitchen": dict(cameras={"primary": "image"}, eef=_a6, language=True),
    "austin_sailor": dict(cameras={"primary": "image", "wrist": "wrist_image"}, eef=_a6, language=False),
    "austin_sirius": dict(cameras={"primary": "image", "wrist": "wrist_image"}, eef=_a6, language=False),
    "bc_z": dict(cameras={"primary": "image"}, language=True,
                 eef=lambda s: np.concatenate([s["action"]["future/xyz_residual"][:3],
                                               s["action"]["future/axis_angle_residual"][:3]])),
    "dlr_edan_shared_control": dict(cameras={"primary": "image"}, eef=_a6, language=True),
}
NAMES = sorted(registry.REGISTRY)


@pytest.fixture(scope="module")
def oxe_root(tmp_path_factory) -> str:
  """All registered datasets as tiny fixtures under one OXE-style root (<root>/<tfds_name>/0.1.0)."""
  root = str(tmp_path_factory.mktemp("oxe"))
  for name in NAMES:
    testing.write_oxe_fixture(root, name)
  return root


@pytest.fixture(scope="module")
def oxe_stats_dir(tmp_path_factory) -> str:
  """Shared across this module so the mixture test reuses the per-dataset statistics."""
  return str(tmp_path_factory.mktemp("oxe_stats"))


def _config(specs, stats_dir: str, **overrides) -> Any:
  config = pipeline.pipeline_config(list(specs), statistics_dir=stats_dir, **overrides)
  config.augmentation.enabled = False
  return config


def _raw_steps(builder_dir: str) -> list[list[dict]]:
  """The stored steps of the train split, images left encoded (only numeric fields are compared)."""
  builder = tfds.builder_from_directory(builder_dir)
  ds = builder.as_dataset("train", decoders={"steps": tfds.decode.SkipDecoding()})
  return [[{k: v[t] if not isinstance(v, dict) else _index(v, t) for k, v in ep["steps"].items()}
           for t in range(len(ep["steps"]["is_first"]))] for ep in tfds.as_numpy(ds)]


def _index(tree: dict, t: int) -> dict:
  return {k: _index(v, t) if isinstance(v, dict) else v[t] for k, v in tree.items()}


def test_fixtures_have_exactly_the_registered_structure(oxe_root: str):
  """The fixture writer wrote every registered key with its dtype and shape, and nothing else."""
  for name, entry in registry.REGISTRY.items():
    written = features.read_features_json(os.path.join(oxe_root, entry.tfds_name, "0.1.0"))
    registered = entry.flat_features()
    assert set(written) == set(registered), name
    assert features.first_mismatch(registered, written) is None, name


def test_registry_covers_the_octo_and_openvla_training_datasets():
  assert len(registry.REGISTRY) >= 15
  assert set(EXPECTED) == set(registry.REGISTRY)
  for mixture in mixtures.MIXTURES.values():
    assert {name for name, _ in mixture} <= set(registry.REGISTRY)


@pytest.fixture(scope="module")
def oxe_val_batches(oxe_root: str, oxe_stats_dir: str) -> dict[str, tuple[dict, dict, Any]]:
  """{name: (batch of all its steps, its statistics, its spec)} from ONE validation pass over every
  registered dataset (the pipeline reads datasets in name order; each fixture has exactly
  sum(OXE_EPISODE_LENGTHS) steps, so with that batch size each batch is one dataset's)."""
  specs = [spec_lib.oxe_spec(name, oxe_root, train_split="train", val_split="train") for name in NAMES]
  config = _config(specs, oxe_stats_dir, batch_size=sum(testing.OXE_EPISODE_LENGTHS), window=1, action_horizon=1,
                   image_size_px=(16, 16), val_drop_remainder=False,
                   **{**mixtures.pipeline_overrides(specs), "cameras": None})  # None: every camera role.
  iterator = pipeline.make_val_iterator(config, process_index=0, process_count=1)
  batches = list(iterator)
  names = pipeline.dataset_names(config)
  assert len(batches) == len(names)
  out = {}
  for batch in batches:
    (index,) = set(batch["dataset_index"].tolist())
    name = names[index]
    out[name] = (batch, iterator.statistics[name], config.datasets[name])
  return out


@pytest.mark.parametrize("name", NAMES)
def test_dataset_reads_with_the_project_conventions(name: str, oxe_root: str, oxe_val_batches):
  batch, stats, spec = oxe_val_batches[name]
  expected = EXPECTED[name]
  steps = [(e, t) for e, n in enumerate(testing.OXE_EPISODE_LENGTHS) for t in range(n)]

  action = batch["action"][:, 0]
  assert action.shape == (len(steps), 7)
  want_gripper = [expected.get("gripper", testing.oxe_gripper_closed(e, t)) for e, t in steps]
  np.testing.assert_array_equal(action[:, 6], want_gripper)
  raw = _raw_steps(spec_lib.resolve_builder_dir(spec))
  want_eef = np.stack([expected["eef"](raw[e][t]) for e, t in steps]).astype(np.float32)
  eef = statistics.unnormalize(action, stats["action"], "gaussian")[:, :6]
  np.testing.assert_allclose(eef, want_eef, atol=1e-4)

  texts = language.detokenize(batch["task"]["language_tokens"])
  assert texts == [f"task {e}" if expected["language"] else "" for e, _ in steps]

  assert set(spec.cameras) == set(expected["cameras"])
  for cam, key in expected["cameras"].items():
    frames = batch["observation"][f"image_{cam}"][:, 0]
    assert (frames[..., 2] == testing.oxe_camera_colour(key)).all(), f"camera '{cam}' is not {key}"
    np.testing.assert_array_equal(frames[:, 0, 0, 0], [t for _, t in steps])
  proprio = statistics.unnormalize(batch["observation"]["proprio"][:, 0, :spec.proprio_dim], stats["proprio"],
                                   "gaussian")
  assert proprio.shape == (len(steps), spec.proprio_dim)
  assert (batch["observation"]["proprio"][:, 0, spec.proprio_dim:] == 0).all()  # Mixture padding.


def test_a_mixture_of_oxe_datasets_plugs_into_the_pipeline(oxe_root: str, oxe_stats_dir: str):
  mixture = [("fractal20220817_data", 1.0), ("taco_play", 2.0), ("language_table", 0.5)]
  specs = mixtures.mixture_specs(mixture, oxe_root, train_split="train", val_split="train")
  overrides = mixtures.pipeline_overrides(specs)
  assert overrides == {"action_dim": 7, "proprio_dim": 8, "cameras": ("primary", "wrist")}
  config = _config(specs, oxe_stats_dir, batch_size=24, image_size_px=(16, 16), **overrides)
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  assert batch["action"].shape == (24, 4, 7) and batch["observation"]["proprio"].shape == (24, 2, 8)
  assert set(np.unique(batch["action"][..., 6])) <= {0.0, 1.0}
  assert len(set(batch["dataset_index"].tolist())) >= 2
  taco = pipeline.dataset_names(config).index("taco_play")
  assert (batch["observation"]["image_wrist"][batch["dataset_index"] != taco] == 0).all()  # No wrist camera.


@pytest.mark.slow
def test_the_octo_like_mixture_reads_all_its_datasets(oxe_root: str, oxe_stats_dir: str):
  specs = mixtures.mixture_specs("octo_magic_soup", oxe_root, train_split="train", val_split="train")
  config = _config(specs, oxe_stats_dir, batch_size=64, image_size_px=(16, 16), **mixtures.pipeline_overrides(specs))
  batch = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
  assert batch["action"].shape == (64, 4, 7)
  assert set(np.unique(batch["action"][..., 6])) <= {0.0, 1.0}


def test_balancing_by_episodes_multiplies_weights_by_train_episodes(oxe_root: str):
  specs = mixtures.mixture_specs([("toto", 2.0), ("bc_z", 0.5)], oxe_root, balance_by_episodes=True)
  # train_split "train[:95%]" names the base split "train": len(OXE_EPISODE_LENGTHS) episodes.
  assert [s.weight for s in specs] == [2.0 * 2, 0.5 * 2]


# ---- A directory that does not match its registration. -------------------------------------------


def _copy_with_edited_features(oxe_root: str, tmp_path, name: str, edit: Callable[[dict], None]) -> str:
  """A copy of a fixture whose features.json is edited (the records stay as written)."""
  tfds_name = registry.get(name).tfds_name
  root = str(tmp_path / "edited")
  shutil.copytree(os.path.join(oxe_root, tfds_name), os.path.join(root, tfds_name))
  path = os.path.join(root, tfds_name, "0.1.0", "features.json")
  with open(path) as f:
    features = json.load(f)
  edit(features)
  with open(path, "w") as f:
    json.dump(features, f)
  return root


def _steps_features(features: dict) -> dict:
  return features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]


def test_a_wrong_image_size_names_the_key_and_the_registered_shape(oxe_root, tmp_path):
  def resize(features):
    obs = _steps_features(features)["observation"]["featuresDict"]["features"]
    obs["rgb_static"]["image"]["shape"]["dimensions"] = ["200", "200", "3"]

  root = _copy_with_edited_features(oxe_root, tmp_path, "taco_play", resize)
  with pytest.raises(ValueError) as error:
    spec_lib.oxe_spec("taco_play", root)
  assert ("steps/observation/rgb_static: registered as Image uint8 (150,200,3), dataset has Image uint8 "
          "(200,200,3)") in str(error.value)


def test_a_renamed_key_is_named_at_spec_time_and_again_when_the_pipeline_opens(oxe_root, tmp_path, stats_dir):
  def rename(features):
    action = _steps_features(features)["action"]["featuresDict"]["features"]
    action["gripper_action"] = action.pop("gripper_closedness_action")

  root = _copy_with_edited_features(oxe_root, tmp_path, "fractal20220817_data", rename)
  message = ("steps/action/gripper_closedness_action: registered as Tensor float32 (1), dataset has no such key "
             "(it has steps/action/{base_displacement_vector, base_displacement_vertical_rotation, gripper_action")
  with pytest.raises(ValueError) as error:
    spec_lib.oxe_spec("fractal20220817_data", root)
  assert message in str(error.value)
  spec = spec_lib.oxe_spec("fractal20220817_data", root, check_features=False)
  with pytest.raises(ValueError) as error:
    pipeline.open_sources(_config([spec], stats_dir))
  assert message in str(error.value)


def test_an_unknown_dataset_name_lists_the_registered_ones():
  with pytest.raises(ValueError, match=r"'rt_2' is not registered; registered: \[.*'bc_z'"):
    spec_lib.oxe_spec("rt_2", "/data/oxe")
