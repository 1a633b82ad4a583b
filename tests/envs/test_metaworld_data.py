"""Meta-World data through the standard tools: the RLDS builder, the input pipeline by spec, and the
benchmark's one command (generate -> train -> evaluate) on a tiny config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from vla_jax.envs import metaworld_tasks

pytest.importorskip("metaworld", reason="Meta-World is an optional extra: make metaworld-deps")


@pytest.fixture(scope="module")
def tiny_metaworld_dir(tmp_path_factory) -> Path:
  """2 tasks x (2 train + 1 val) successful expert episodes at 64x64 from corner4 and the other front
  corner (the default views), written with 2 worker processes."""
  from experiments.configs import metaworld_data
  from vla_jax.data import metaworld_builder

  config = metaworld_data.get_config("tiny")
  config.data_dir = str(tmp_path_factory.mktemp("metaworld_data"))
  return metaworld_builder.write_dataset(config, progress=False)


@pytest.mark.slow
def test_builder_writes_successful_demos_of_each_task_in_the_rlds_schema(tiny_metaworld_dir):
  from vla_jax.data import tabletop_builder

  summary = tabletop_builder.load_summary(tiny_metaworld_dir)
  assert summary["image_shape"] == [64, 64, 3]
  assert summary["splits"]["train"]["families"] == {"reach-v3": 2, "drawer-close-v3": 2}
  assert summary["splits"]["val"]["families"] == {"reach-v3": 1, "drawer-close-v3": 1}
  assert summary["splits"]["train"]["success_rate"] == 1.0
  assert set(summary["splits"]["train"]["example_instructions"]) <= {
      p for t in ("reach-v3", "drawer-close-v3") for p in metaworld_tasks.instructions(t, "train")}
  import tensorflow_datasets as tfds

  builder = tfds.builder_from_directory(str(tiny_metaworld_dir))
  episode = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
  obs = {k: np.stack([s["observation"][k] for s in episode["steps"]]) for k in ("image", "image_corner", "state",
                                                                                 "env_state")}
  assert obs["image_corner"].shape == obs["image"].shape and obs["env_state"].shape[1:] == (39,)
  assert not np.array_equal(obs["image_corner"], obs["image"])  # Another view, not a copy.
  # The full state starts with the proprio (hand xyz, gripper) and holds the goal in its last 3 entries.
  np.testing.assert_array_equal(obs["env_state"][:, :4], obs["state"])
  assert np.ptp(obs["env_state"][:, -3:], axis=0).max() < 1e-6 and np.abs(obs["env_state"][0, -3:]).max() > 0.05
  referents = {k: np.stack([s["referents"][k] for s in episode["steps"]]) for k in ("position", "valid")}
  # Object and goal in each view, camera-major: corner4's rows 0-1, the other corner's 2-3.
  assert referents["position"].shape == (len(obs["state"]), 4, 2) and referents["valid"].shape == (len(obs["state"]), 4)
  assert referents["valid"][:, [1, 3]].all()  # The goal, in both views.
  assert (referents["position"] >= 0).all() and (referents["position"] <= 1).all()
  assert np.abs(referents["position"][:, 1] - referents["position"][:, 3]).max() > 0.05  # Two projections.


def test_the_cpu_pixel_policies_learn_where_the_object_and_goal_are():
  """Two fixed views by default; the referent loss (MT10 47 % -> 68 %) is on for the CPU pixel
  variants, off where it cannot be; every pixel policy regresses the object's and goal's world xyz
  (with the second view: 68 -> 90 %)."""
  from experiments.configs import metaworld
  from experiments.configs import metaworld_data

  views = {"mt10": ("primary", "corner"), "mt50": ("primary", "corner"), "mt10_wrist": ("primary", "wrist"),
           "mt10_single": ("primary",)}
  for variant, cameras in views.items():
    config = metaworld.get_config(variant)  # Each view's tokens get its own object and goal labels.
    assert tuple(config.model.cameras) == cameras, variant
    assert config.data.num_referents == 2 * len(cameras) and config.model.referent_loss.weight > 0, variant
    assert config.model.image.num_learned_tokens >= 2 and config.model.referent_loss.cameras == cameras, variant
    # The evaluation renders, and the data holds, the views the policy reads.
    data = metaworld_data.get_config(variant)
    assert tuple(config.eval.extra_cameras) == tuple(data.env.extra_cameras) == tuple(
        metaworld_data.EXTRA_VIEWS[c] for c in cameras[1:]), variant
    assert config.data.datasets.metaworld.builder_dir == f"data/{data.name}/1.0.0", variant
  for variant in ("mt10_state", "gpu", "tiny"):  # No image / patch tokens: no maps to train.
    config = metaworld.get_config(variant)
    assert not config.data.get("num_referents") and not config.model.referent_loss.weight, variant
  for variant in ("mt10", "mt10_single", "mt10_wrist", "gpu", "tiny"):
    config = metaworld.get_config(variant)
    assert config.data.state_targets == config.model.state_loss.num_targets == 6, variant
    assert config.model.state_loss.weight > 0, variant
  config = metaworld.get_config("mt10_state")  # Its input is the state already.
  assert not config.data.state_targets and not config.model.state_loss.weight


@pytest.mark.slow
@pytest.mark.parametrize("variant, cameras, proprio_dim",
                         [("tiny_single", ["primary"], 4), ("tiny", ["primary", "corner"], 4), ("tiny_state", [], 39)])
def test_the_standard_pipeline_reads_it_by_spec(tiny_metaworld_dir, variant, cameras, proprio_dim):
  from experiments.configs import metaworld
  from vla_jax.data import pipeline

  config = metaworld.get_config(variant)
  assert list(config.model.cameras) == cameras and config.model.proprio_dim == proprio_dim
  config.data.datasets.metaworld.builder_dir = str(tiny_metaworld_dir)
  config.data.statistics_dir = str(tiny_metaworld_dir.parent / f"stats_{variant}")
  config.data.num_referents = 4  # The object and goal labels in each of the data's two views.
  config.data.state_targets = 6  # Their world xyz (for the state loss; 0 in tiny_state).
  config.data.batch_size = b = 4
  batch = next(iter(pipeline.make_train_iterator(config.data, process_index=0, process_count=1)))
  t, h = config.data.window, config.data.action_horizon
  for camera in cameras:
    assert batch["observation"][f"image_{camera}"].shape == (b, t, 64, 64, 3)
  assert batch["observation"]["proprio"].shape == (b, t, proprio_dim)
  assert batch["aux"]["referent_xy"].shape == (b, 4, 2) and batch["aux"]["referent_valid"][:, [1, 3]].all()
  state = batch["aux"]["state_target"]  # Mapped from metaworld.STATE_TARGET_BOUNDS: inside [-1, 1].
  assert state.shape == (b, 6) and batch["aux"]["state_target_valid"].all()
  assert np.abs(state).max() < 1.0 and np.abs(state).max() > 0.1
  assert batch["action"].shape[0] == b and batch["action"].shape[-2:] == (h, 4)
  # "bounds" normalisation: every action dimension within [-1, 1], and not all zero.
  assert np.abs(batch["action"]).max() <= 1.0 + 1e-5 and np.abs(batch["action"]).max() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("variant, views", [("tiny_single", 1), ("tiny", 2), ("tiny_state", 1)])
def test_generate_train_evaluate_end_to_end_on_the_tiny_config(tiny_metaworld_dir, tmp_path, variant, views):
  """`make metaworld`'s three commands on the tiny configs (the default two fixed views, one camera,
  state only) on the same two-view data: the evaluation writes its artifacts; a two-camera GIF shows
  both views side by side."""
  config = f"experiments/configs/metaworld.py:{variant}"
  data_flag = f"--config.data.datasets.metaworld.builder_dir={tiny_metaworld_dir}"
  train = subprocess.run([sys.executable, "-m", "experiments.train", "--config", config, data_flag,
                          "--workdir", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
  assert train.returncode == 0, train.stderr[-3000:]
  logged = set().union(*(json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()))
  assert ("train/state_target_mse" in logged) == (variant != "tiny_state")  # The pixel policies' state loss.
  evaluate = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir", str(tmp_path / "run"),
                             "--config", config], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  out = tmp_path / "run" / "eval" / "step_20"
  summary = json.loads((out / "summary.json").read_text())
  assert summary["suite"] == "metaworld"
  assert set(summary["conditions"]) == {"seen", "heldout_paraphrase", "language_blind"}
  for cond in summary["conditions"].values():
    assert set(cond["families"]) == {"reach-v3", "drawer-close-v3"} and set(cond["groups"]) == {"easy"}
    assert cond["overall"]["episodes"] == 4
  assert "| reach-v3 | easy |" in (out / "results.md").read_text()
  gifs = sorted((out / "videos").glob("*.gif"))
  assert [p.name.split("_")[0] for p in gifs] == ["seen", "seen"]
  from PIL import Image

  with Image.open(gifs[0]) as gif:
    assert gif.size[0] == views * 64 * 4  # `save_gif` scales the 64-px frames 4x.
