"""Specification of the built-in RLDS dataset writer and its CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.configs import tabletop_data
from tests.conftest import REPO
from vla_jax.data import rlds_writer, tabletop_builder, tabletop_episodes
from vla_jax.envs import render, tabletop, tasks


def tiny_config(data_dir, **overrides):
  config = tabletop_data.get_config("tiny")
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def read_episodes(path, split="train"):
  ds = tfds.builder_from_directory(str(path)).as_dataset(split=split)
  return [
      {"steps": {k: v for k, v in _batched_steps(ep["steps"]).items()}, "meta": ep["episode_metadata"]}
      for ep in tfds.as_numpy(ds)
  ]


def _batched_steps(steps):
  rows = list(steps)
  return {
      "image": np.stack([r["observation"]["image"] for r in rows]),
      "state": np.stack([r["observation"]["state"] for r in rows]),
      "referent_xy": np.stack([r["referents"]["position"] for r in rows]),
      "referent_valid": np.stack([r["referents"]["valid"] for r in rows]),
      "attribute_xy": np.stack([r["referents"]["attributes"]["position"] for r in rows]),
      "attribute_valid": np.stack([r["referents"]["attributes"]["valid"] for r in rows]),
      **{k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ("observation", "referents")},
  }


def test_dataset_reads_back_in_a_fresh_process_with_the_oxe_schema(tiny_tabletop_dir):
  code = f"""
import json, tensorflow_datasets as tfds
b = tfds.builder_from_directory({str(tiny_tabletop_dir)!r})
steps = b.info.features["steps"]
print(json.dumps({{
    "splits": {{k: v.num_examples for k, v in b.info.splits.items()}},
    "image": [list(steps["observation"]["image"].shape), steps["observation"]["image"].dtype.name],
    "state": [list(steps["observation"]["state"].shape), steps["observation"]["state"].dtype.name],
    "action": [list(steps["action"].shape), steps["action"].dtype.name],
    "referents": {{k: [list(v.shape), v.dtype.name] for k, v in steps["referents"].items() if k != "attributes"}},
    "attributes": {{k: [list(v.shape), v.dtype.name] for k, v in steps["referents"]["attributes"].items()}},
    "keys": sorted(steps.keys()),
    "meta": sorted(b.info.features["episode_metadata"].keys()),
}}))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
  info = json.loads(out.stdout.strip().splitlines()[-1])
  assert info["splits"] == {"train": 12, "val": 3}
  assert info["image"] == [[64, 64, 3], "uint8"]
  assert info["state"] == [[5], "float32"]
  assert info["action"] == [[3], "float32"]
  assert info["referents"] == {"position": [[2, 2], "float32"], "valid": [[2], "bool"]}
  assert info["attributes"] == {"position": [[2, 6, 2], "float32"], "valid": [[2, 6], "bool"]}
  assert info["keys"] == sorted([
      "observation", "action", "language_instruction", "reward", "discount", "is_first", "is_last",
      "is_terminal", "referents",
  ])
  assert {"task_family", "seed", "split", "scene_objects", "success"} <= set(info["meta"])


def test_episodes_have_correct_boundaries_dtypes_and_rewards(tiny_tabletop_dir):
  episodes = read_episodes(tiny_tabletop_dir)
  assert len(episodes) == 12
  for ep in episodes:
    s = ep["steps"]
    n = len(s["action"])
    assert 2 <= n <= 101  # At most 100 transitions plus the final observation.
    assert s["image"].shape == (n, 64, 64, 3) and s["image"].dtype == np.uint8
    assert s["state"].dtype == np.float32 and s["action"].dtype == np.float32
    np.testing.assert_array_equal(s["is_first"], np.arange(n) == 0)
    np.testing.assert_array_equal(s["is_last"], np.arange(n) == n - 1)
    assert ep["meta"]["success"]
    np.testing.assert_array_equal(s["is_terminal"], np.arange(n) == n - 1)
    np.testing.assert_array_equal(s["reward"], (np.arange(n) == n - 2).astype(np.float32))
    assert s["discount"][-1] == 0 and np.all(s["discount"][:-1] == 1)
    assert len(set(s["language_instruction"])) == 1
    assert np.all(np.abs(s["action"][:, :2]) <= 1) and set(np.unique(s["action"][:, 2])) <= {0.0, 1.0}
    # The recorded state is the state the image shows: the gripper moved by the recorded action.
    moved = np.diff(s["state"][:, :2], axis=0)
    assert np.all(np.abs(moved) <= 0.06 + 1e-6)


def test_episode_is_reproducible_from_its_metadata_seed(tiny_tabletop_dir):
  from vla_jax.envs import TabletopEnv

  ep = read_episodes(tiny_tabletop_dir, "val")[1]
  meta = ep["meta"]
  config = tabletop_data.get_config("tiny")
  replay = tabletop_episodes.rollout_episode(
      TabletopEnv(**config.env.to_dict()), tabletop_episodes.make_expert(config),
      int(meta["seed"]), int(meta["expert_seed"]), meta["task_family"].decode(),
  )
  np.testing.assert_array_equal(replay["steps"]["observation"]["image"], ep["steps"]["image"])
  np.testing.assert_array_equal(replay["steps"]["action"], ep["steps"]["action"])


def test_referents_describe_the_scene_each_frame_was_rendered_from(tiny_tabletop_dir):
  """Replays episodes step by step: label t is `tabletop.referents` (and `attribute_referents`) of
  the state image t shows."""
  from vla_jax.envs import TabletopEnv

  config = tabletop_data.get_config("tiny")
  episodes = read_episodes(tiny_tabletop_dir)
  for ep in episodes[:len(tasks.FAMILIES)]:  # One of each family (written in turn).
    meta, s = ep["meta"], ep["steps"]
    env = TabletopEnv(**config.env.to_dict())
    expert = tabletop_episodes.make_expert(config)  # With the dataset's recovery perturbations.
    obs, _ = env.reset(seed=int(meta["seed"]), options={"task_family": meta["task_family"].decode()})
    expert.reset(env.scene, seed=int(meta["expert_seed"]))
    for t in range(len(s["action"])):
      np.testing.assert_array_equal(obs["image"], s["image"][t])
      position, valid = tabletop.referents(env.scene)
      np.testing.assert_array_equal(s["referent_xy"][t], position, err_msg=f"step {t}")
      np.testing.assert_array_equal(s["referent_valid"][t], valid, err_msg=f"step {t}")
      position, valid = tabletop.attribute_referents(env.scene)
      np.testing.assert_array_equal(s["attribute_xy"][t], position, err_msg=f"step {t}")
      np.testing.assert_array_equal(s["attribute_valid"][t], valid, err_msg=f"step {t}")
      if t < len(s["action"]) - 1:
        obs, *_ = env.step(expert.perturb(env.scene, expert.act(env.scene)))


def test_target_referent_lies_on_the_target_in_its_own_frame_as_it_moves(tiny_tabletop_dir):
  """Table point (x, y) is pixel (row y * S, column x * S) of the same step's image."""
  moved = {}
  for ep in read_episodes(tiny_tabletop_dir):
    s, family = ep["steps"], ep["meta"]["task_family"].decode()
    target_rgb = tasks.COLOURS[ep["meta"]["scene_objects"].decode().split(",")[0].split()[0]]
    assert s["referent_valid"][:, 0].all()
    np.testing.assert_array_equal(s["referent_valid"][:, 1], family != "pick")
    for t, (x, y) in enumerate(s["referent_xy"][:, 0]):
      row, col = int(y * 64), int(x * 64)
      gripper = np.clip(s["state"][t, :2], tabletop.OBJECT_RADIUS, 1 - tabletop.OBJECT_RADIUS)
      # Held: under the white fist, exactly at the gripper. (A recovery demo's premature close may
      # hold another object for a step; then the target is on the table, as below.)
      if s["state"][t, 3] and np.allclose([x, y], gripper, atol=1e-6):
        np.testing.assert_array_equal(s["image"][t, row, col], render.GRIPPER_HELD_RGB)
      else:  # 3x3 pixels: the open gripper's ring or a dropped-on object may hide the very centre.
        patch = s["image"][t, max(row - 1, 0):row + 2, max(col - 1, 0):col + 2]
        assert (patch == target_rgb).all(-1).any(), f"{family} episode step {t}: no target pixel at ({x}, {y})"
    travel = np.linalg.norm(s["referent_xy"][-1, 0] - s["referent_xy"][0, 0])
    moved[family] = max(moved.get(family, 0.0), travel)
  assert moved["place"] > 0.2 and moved["push"] > 0.1, moved  # Carried and pushed targets were covered.


def test_training_episodes_never_contain_heldout_phrasings_or_combos():
  config = tabletop_data.get_config("default")
  config.num_train_episodes = 300
  heldout_names = {tasks.object_name(*c) for c in tasks.HELDOUT_COMBOS}
  families = set()
  for _, ep in tabletop_episodes.generate_episodes(config, "train", progress=False):
    instruction = ep["steps"]["language_instruction"][0]
    family, kind, _, _ = tasks.parse_instruction(instruction)
    assert kind == "train", instruction
    assert family == ep["episode_metadata"]["task_family"]
    assert not set(ep["episode_metadata"]["scene_objects"].split(",")) & heldout_names
    families.add(family)
  assert families == set(tasks.FAMILIES)


def test_train_and_val_use_disjoint_seeds():
  train = {tabletop_episodes.episode_seeds(0, "train", i)[0] for i in range(2000)}
  val = {tabletop_episodes.episode_seeds(0, "val", i)[0] for i in range(2000)}
  assert not train & val


def test_refuses_to_overwrite_a_finished_dataset(tmp_path):
  config = tiny_config(tmp_path, num_train_episodes=2, num_val_episodes=1)
  path = tabletop_builder.write_dataset(config, progress=False)
  with pytest.raises(FileExistsError, match="overwrite"):
    tabletop_builder.write_dataset(config, progress=False)
  config.num_train_episodes = 3
  tabletop_builder.write_dataset(config, overwrite=True, progress=False)
  assert tabletop_builder.load_summary(path)["splits"]["train"]["episodes"] == 3
  assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]  # No temp dirs left behind.


def test_a_crash_mid_write_leaves_no_finished_dataset_and_keeps_the_old_one(tmp_path, monkeypatch):
  config = tiny_config(tmp_path, num_train_episodes=2, num_val_episodes=1)
  path = tabletop_builder.write_dataset(config, progress=False)
  original = tabletop_builder.generate_episodes

  def crash_after_one(config, split, progress=True, **kwargs):
    for i, item in enumerate(original(config, split, progress, **kwargs)):
      if i == 1:
        raise KeyboardInterrupt("simulated crash")
      yield item

  monkeypatch.setattr(tabletop_builder, "generate_episodes", crash_after_one)
  config.num_train_episodes = 4
  with pytest.raises(KeyboardInterrupt):
    tabletop_builder.write_dataset(config, overwrite=True, progress=False)
  assert tabletop_builder.load_summary(path)["splits"]["train"]["episodes"] == 2  # Old one intact.
  fresh = tiny_config(tmp_path / "fresh", num_train_episodes=4, num_val_episodes=1)
  with pytest.raises(KeyboardInterrupt):
    tabletop_builder.write_dataset(fresh, progress=False)
  assert not rlds_writer.is_complete(tabletop_builder.dataset_dir(fresh))


def test_a_dead_writers_temp_dir_is_removed_and_a_live_writers_is_kept(tmp_path):
  import os

  dead = tmp_path / ".tmp-tabletop-999999999-1"   # No such process.
  live = tmp_path / f".tmp-tabletop-{os.getpid()}-2"
  garbled = tmp_path / ".tmp-tabletop-x-3"
  other = tmp_path / ".tmp-tabletop_tiny-999999999-4"  # Another dataset's: not ours to touch.
  for d in (dead, live, garbled, other):
    d.mkdir()
  rlds_writer.remove_stale_temp_dirs(tmp_path, "tabletop")
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_bad_generation_config_values_name_the_key(tmp_path):
  with pytest.raises(ValueError, match="num_train_episodes=-1"):
    tabletop_builder.write_dataset(tiny_config(tmp_path, num_train_episodes=-1))
  config = tiny_config(tmp_path)
  config.env.image_size = 1000
  with pytest.raises(ValueError, match="image_size=1000"):
    tabletop_builder.write_dataset(config)
  config = tiny_config(tmp_path)
  config.env.split = "validation"
  with pytest.raises(ValueError, match="split='validation'"):
    tabletop_builder.write_dataset(config)
  config = tiny_config(tmp_path)
  config.env.max_episode_steps = 101
  with pytest.raises(ValueError, match=r"max_episode_steps=101 .*control_rate \(1\)"):
    tabletop_builder.write_dataset(config)


def test_the_rate4_dataset_records_the_default_tasks_at_four_times_the_control_rate(tmp_path):
  """Same scenes and tasks as the default config's episodes, each step a quarter of the default
  one: episodes take ~4x the steps, and the default config's keys (so its staleness check) are
  untouched by the variant."""
  coarse = tabletop_data.get_config()
  fine = tabletop_data.get_config("rate4")
  tabletop_episodes.validate_config(fine)
  assert "control_rate" not in coarse.env and fine.env.control_rate == 4 and fine.env.max_episode_steps == 400
  lengths = {}
  for name, config in (("coarse", coarse), ("fine", fine)):
    env = tabletop.TabletopEnv(**config.env.to_dict())
    expert = tabletop_episodes.make_expert(config)
    episodes = [tabletop_episodes.rollout_episode(env, expert, *tabletop_episodes.episode_seeds(0, "train", i),
                                                  tasks.FAMILIES[i % 3]) for i in range(12)]
    assert all(e["episode_metadata"]["success"] for e in episodes), name
    lengths[name] = np.mean([len(e["steps"]["action"]) for e in episodes])
    if name == "fine":
      assert max(np.abs(e["steps"]["observation"]["state"][1:, :2] - e["steps"]["observation"]["state"][:-1, :2]).max()
                 for e in episodes) <= tabletop.MAX_STEP / 4 + 1e-6
  assert 3.0 < lengths["fine"] / lengths["coarse"] < 5.0, lengths


def run_cli(*args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.generate_data", *args], capture_output=True, text=True, cwd=REPO,
  )


def test_cli_unknown_config_key_is_one_clear_line(tmp_path):
  result = run_cli("--config", "experiments/configs/tabletop_data.py:tiny", "--config.num_train_episode=5")
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "num_train_episode" in last


def test_cli_bad_config_value_is_one_clear_line(tmp_path):
  result = run_cli(
      "--config", "experiments/configs/tabletop_data.py:tiny", f"--config.data_dir={tmp_path}",
      "--config.env.task_family=stack",
  )
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("error: task_family='stack'")


@pytest.mark.slow  # The entry point in subprocesses (~10 s).
def test_cli_generates_summarises_and_then_refuses_to_regenerate(tmp_path):
  args = ["--config", "experiments/configs/tabletop_data.py:tiny", f"--config.data_dir={tmp_path}",
          "--config.num_train_episodes=3", "--config.num_val_episodes=1"]
  first = run_cli(*args, "--json")
  assert first.returncode == 0, first.stderr
  summary = json.loads(first.stdout[first.stdout.index("{"):])
  assert summary["splits"]["train"]["episodes"] == 3
  second = run_cli(*args, "--config.num_workers=1")  # The worker count is no reason to rebuild.
  assert second.returncode == 0 and "already exists" in second.stdout


def test_config_differences_name_what_makes_a_finished_dataset_stale(tiny_tabletop_dir):
  """generate_data rebuilds a dataset written with another generation config (e.g. an older
  default); this is how it tells: the same config (any data_dir) differs in nothing."""
  config = tabletop_data.get_config("tiny")
  config.data_dir = "/somewhere/else"
  assert tabletop_builder.config_differences(tiny_tabletop_dir, config) == []
  config.expert.mistake_prob = 0.0
  config.num_train_episodes += 1
  assert tabletop_builder.config_differences(tiny_tabletop_dir, config) == [
      "expert.mistake_prob", "num_train_episodes"]


def test_a_dataset_written_before_the_attribute_labels_is_stale(tiny_tabletop_dir, tmp_path):
  metadata = json.loads((tiny_tabletop_dir / "metadata.json").read_text())
  assert metadata["schema"] == tabletop_builder.SCHEMA
  del metadata["schema"]  # What a writer before `SCHEMA` existed stored.
  (tmp_path / "metadata.json").write_text(json.dumps(metadata))
  assert tabletop_builder.config_differences(tmp_path, tabletop_data.get_config("tiny")) == ["schema"]


def test_equal_family_weights_give_the_plain_cycle_of_older_datasets():
  families = ("place", "push", "pick")
  plain = [families[i % 3] for i in range(10)]
  assert tabletop_episodes.family_schedule(families, None, 10) == plain
  assert tabletop_episodes.family_schedule(families, {"place": 2, "push": 2, "pick": 2}, 10) == plain


def test_family_weights_set_the_share_of_every_prefix_of_the_dataset():
  schedule = tabletop_episodes.family_schedule(("place", "push", "pick"), {"place": 1, "push": 2, "pick": 1}, 400)
  assert [schedule.count(f) for f in ("place", "push", "pick")] == [100, 200, 100]
  for n in (8, 40, 123):  # Interleaved, not blocks: a prefix holds the same mix, within one episode.
    assert abs(schedule[:n].count("push") - n / 2) <= 1
  only_push = tabletop_episodes.family_schedule(("place", "push", "pick"), {"push": 1.0}, 5)
  assert only_push == ["push"] * 5


def test_bad_family_weights_name_the_key(tmp_path):
  config = tiny_config(tmp_path)
  config.family_weights = {"stack": 1.0}
  with pytest.raises(ValueError, match=r"family_weights names \['stack'\]"):
    tabletop_builder.write_dataset(config)
  config.family_weights = {"push": -1.0}
  with pytest.raises(ValueError, match="family_weights.push=-1.0"):
    tabletop_builder.write_dataset(config)
  config.family_weights = {"push": 0.0}
  with pytest.raises(ValueError, match="no family a positive weight"):
    tabletop_builder.write_dataset(config)
