"""Recorded trial episodes as RLDS: exact round trip, the training pipeline reads them, safe writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vla_jax.data import pipeline, recording, tabletop_builder
from vla_jax.envs import TabletopEnv

IMAGE_SIZE = 32
LENGTHS = (5, 3, 7)  # Executed steps per episode (the dataset holds one more: the final observation).


def record_episode(index: int, num_actions: int) -> dict:
  """One episode of seeded random actions in the simulator, recorded as the trial runner does."""
  env = TabletopEnv(task_family=("place", "push", "pick")[index % 3], image_size=IMAGE_SIZE,
                    max_episode_steps=num_actions)
  obs, info = env.reset(seed=100 + index)
  recorder = recording.EpisodeRecorder(obs, env.scene)
  rng = np.random.default_rng(index)
  done = False
  while not done:
    action = np.array([*rng.uniform(-1, 1, 2), rng.uniform()], np.float32)
    obs, reward, terminated, truncated, _ = env.step(action)
    recorder.add(action, obs, reward, env.scene)
    done = terminated or truncated
  meta = {"task_family": info["task_family"], "split": info["split"], "scene_objects": info["scene_objects"],
          "seed": 100 + index, "episode_index": index}
  ticks = recorder.num_transitions
  trial = {"name": "unit", "policy_id": "tiny/checkpoints/20", "policy_backend": "jax", "control_hz": 20.0,
           "chunk_mode": "receding", "execute_steps": 2, "deadline_misses": index,
           "tick_latency_ms": np.linspace(1, 60, ticks), "deadline_missed": np.arange(ticks) < index,
           "request_latency_ms": [3.5, 4.25][: index + 1], "start_time_unix_ms": 1_700_000_000_123 + index}
  return recorder.finish(success=bool(terminated), metadata=meta, trial=trial)


@pytest.fixture(scope="module")
def episodes() -> list[dict]:
  return [record_episode(i, n) for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def trial_dir(episodes, tmp_path_factory):
  out = tmp_path_factory.mktemp("trial")
  return recording.write_episodes(episodes, out, metadata={"trial_config": {"control_hz": 20.0}})


def read_back(path) -> list[dict]:
  """Every episode of a dataset: {"steps": [step dicts], "episode_metadata": dict}, numpy leaves."""
  builder = tfds.builder_from_directory(str(path))
  return [{"steps": list(episode["steps"].as_numpy_iterator()),
           "episode_metadata": tf.nest.map_structure(lambda t: t.numpy(), episode["episode_metadata"])}
          for episode in builder.as_dataset(split="train")]


def test_recorded_values_come_back_exactly(episodes, trial_dir):
  back = read_back(trial_dir)
  assert len(back) == len(episodes)
  for want, got in zip(episodes, back):
    steps = got["steps"]
    assert len(steps) == len(want["steps"]["action"])
    np.testing.assert_array_equal(np.stack([s["observation"]["image"] for s in steps]),
                                  want["steps"]["observation"]["image"])
    np.testing.assert_array_equal(np.stack([s["observation"]["state"] for s in steps]),
                                  want["steps"]["observation"]["state"])
    np.testing.assert_array_equal(np.stack([s["action"] for s in steps]), want["steps"]["action"])
    for key in ("reward", "discount", "is_first", "is_last", "is_terminal"):
      np.testing.assert_array_equal([s[key] for s in steps], want["steps"][key], err_msg=key)
    np.testing.assert_array_equal(np.stack([s["referents"]["position"] for s in steps]),
                                  want["steps"]["referents"]["position"])
    np.testing.assert_array_equal(np.stack([s["referents"]["attributes"]["valid"] for s in steps]),
                                  want["steps"]["referents"]["attributes"]["valid"])
    assert {s["language_instruction"].decode() for s in steps} == set(want["steps"]["language_instruction"])
    meta, want_meta = got["episode_metadata"], want["episode_metadata"]
    for key in ("seed", "episode_index", "success", "expert_seed"):
      assert meta[key] == want_meta[key], key
    assert meta["task_family"].decode() == want_meta["task_family"]
    for key, value in want_meta["trial"].items():
      stored = meta["trial"][key]
      if isinstance(value, str):
        assert stored.decode() == value, key
      else:
        np.testing.assert_array_equal(stored, value, err_msg=key)


def test_the_executed_actions_are_stored_and_the_last_step_holds_still(episodes, trial_dir):
  steps = read_back(trial_dir)[0]["steps"]
  actions = np.stack([s["action"] for s in steps])
  assert actions.shape == (LENGTHS[0] + 1, 3)
  np.testing.assert_array_equal(actions[-1], [0.0, 0.0, actions[-2][2]])
  assert steps[-1]["is_last"] and not any(s["is_last"] for s in steps[:-1])


def test_steps_have_the_builtin_schema_and_metadata_only_adds_the_trial_group():
  builtin, trial = tabletop_builder.features(IMAGE_SIZE), recording.trial_features(IMAGE_SIZE)
  assert trial["steps"].to_json() == builtin["steps"].to_json()
  assert set(trial["episode_metadata"].keys()) == set(builtin["episode_metadata"].keys()) | {"trial"}
  assert set(trial["episode_metadata"]["trial"].keys()) == set(recording.TRIAL_FIELDS)


def test_the_training_pipeline_trains_on_it_unchanged(trial_dir, tmp_path):
  config = pipeline.pipeline_config([recording.trial_spec(trial_dir, name="trials")], batch_size=4,
                                    image_size_px=(32, 32), num_referents=2, statistics_dir=str(tmp_path))
  config.augmentation.enabled = False
  train = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  batch = next(train)
  assert batch["observation"]["image_primary"].shape == (4, 2, 32, 32, 3)
  assert batch["action"].shape == (4, 4, 3) and batch["aux"]["referent_xy"].shape == (4, 2, 2)
  stats = train.statistics["trials"]
  assert stats["num_trajectories"] == len(LENGTHS)
  assert stats["num_transitions"] == sum(n + 1 for n in LENGTHS)


def test_the_dataset_summary_reads_it_too(trial_dir):
  summary = tabletop_builder.load_summary(trial_dir)
  assert summary["splits"]["train"]["episodes"] == len(LENGTHS)
  assert summary["splits"]["train"]["steps"] == sum(n + 1 for n in LENGTHS)
  assert json.loads((trial_dir / "metadata.json").read_text())["trial_config"] == {"control_hz": 20.0}


def test_an_existing_dataset_is_refused_unless_overwrite(episodes, tmp_path):
  first = recording.write_episodes(episodes[:1], tmp_path)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    recording.write_episodes(episodes, tmp_path)
  again = recording.write_episodes(episodes[1:], tmp_path, overwrite=True)
  assert again == first
  assert len(read_back(again)) == len(episodes) - 1
  assert [p.name for p in tmp_path.iterdir()] == [recording.DEFAULT_NAME]  # No temp or trash left.


def test_a_failed_write_leaves_nothing_that_looks_finished(episodes, tmp_path, monkeypatch):
  def broken(self):
    yield 0, episodes[0]
    raise RuntimeError("robot unplugged")

  monkeypatch.setattr(recording.TabletopTrials, "_generate_examples", broken)
  with pytest.raises(RuntimeError, match="unplugged"):
    recording.write_episodes(episodes, tmp_path)
  assert not recording.dataset_dir(tmp_path).exists()
  assert list(tmp_path.iterdir()) == []


def test_a_malformed_episode_is_refused_with_its_index_and_key(episodes, tmp_path):
  bad = {**episodes[1], "steps": {**episodes[1]["steps"], "action": episodes[1]["steps"]["action"][:, :2]}}
  with pytest.raises(ValueError, match=r"episode 1: steps/action is float32 \[4, 2\]; expected float32 \[4, 3\]"):
    recording.write_episodes([episodes[0], bad], tmp_path)
  with pytest.raises(ValueError, match="unknown fields"):
    recording.complete_trial_fields({"latency": 3})
