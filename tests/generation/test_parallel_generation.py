"""Specification of rolling out the built-in dataset's episodes in worker processes (`num_workers`)."""

import json

import ml_collections
import numpy as np
import pytest

from experiments.configs import tabletop_data
from vla_jax.data import tabletop_builder, tabletop_episodes, worker_pool
from vla_jax.envs import TabletopEnv


def tiny_config(data_dir="/unused", **overrides):
  config = tabletop_data.get_config("tiny")
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def one_attempt_at_a_time(config, split):
  """The generation rule, stated plainly: attempt after attempt, each as the family of the next
  episode to write, keeping the successful ones."""
  env, expert = TabletopEnv(**config.env.to_dict()), tabletop_episodes.make_expert(config)
  count = config[f"num_{split}_episodes"]
  schedule = tabletop_episodes.family_schedule(env.families, config.family_weights, count)
  episodes, index = [], 0
  while len(episodes) < count:
    env_seed, expert_seed = tabletop_episodes.episode_seeds(config.seed, split, index)
    episode = tabletop_episodes.rollout_episode(env, expert, env_seed, expert_seed, schedule[len(episodes)])
    episode["episode_metadata"]["episode_index"] = index
    if episode["episode_metadata"]["success"]:
      episodes.append((index, episode))
    index += 1
  return episodes


def assert_same_episodes(actual, expected):
  assert [key for key, _ in actual] == [key for key, _ in expected]
  for (key, a), (_, b) in zip(actual, expected):
    assert a["episode_metadata"] == b["episode_metadata"], key
    flat_a, flat_b = _flatten(a["steps"]), _flatten(b["steps"])
    assert flat_a.keys() == flat_b.keys()
    for name in flat_a:
      np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=f"episode {key}: steps/{name}")


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def test_episodes_do_not_depend_on_the_number_of_workers_even_when_attempts_fail():
  # Short episodes: about 4 in 10 attempts fail, and each failure passes its family to the next
  # attempt, which the workers had already rolled out as another family.
  config = tiny_config(num_train_episodes=10)
  config.env.max_episode_steps = 20
  expected = one_attempt_at_a_time(config, "train")
  assert expected[-1][0] >= 14  # Failures were skipped.
  for num_workers in (1, 2):
    config.num_workers = num_workers
    actual = list(tabletop_episodes.generate_episodes(config, "train", progress=False))
    assert_same_episodes(actual, expected)


def test_a_dataset_written_by_two_workers_is_byte_identical_to_one_written_in_process(tmp_path):
  # Both in this process: tf.Example maps serialize in a per-process order, so even two in-process
  # runs of the CLI write different bytes (the same decoded episodes; see the test above).
  paths = {w: tabletop_builder.write_dataset(
      tiny_config(tmp_path / f"w{w}", num_workers=w, num_train_episodes=6, num_val_episodes=2), progress=False)
      for w in (1, 2)}
  files = sorted(p.name for p in paths[1].iterdir() if "tfrecord" in p.name)
  assert len(files) >= 2 and files == sorted(p.name for p in paths[2].iterdir() if "tfrecord" in p.name)
  for name in [*files, "features.json"]:
    assert (paths[1] / name).read_bytes() == (paths[2] / name).read_bytes(), name
  stored = [json.loads((paths[w] / "metadata.json").read_text())["generation_config"] for w in (1, 2)]
  assert "num_workers" not in stored[0]
  assert {**stored[0], "data_dir": None} == {**stored[1], "data_dir": None}


@pytest.mark.parametrize("stored_num_workers", [None, 2])
def test_a_dataset_written_with_other_or_no_num_workers_is_not_stale(tmp_path, stored_num_workers):
  """generate_data reuses it: the worker count decides how fast a dataset is written, not what it holds."""
  stored = tiny_config().to_dict()
  del stored["num_workers"]
  if stored_num_workers is not None:  # Meta-World datasets store theirs.
    stored["num_workers"] = stored_num_workers
  (tmp_path / "metadata.json").write_text(json.dumps({"generation_config": stored, "schema": tabletop_builder.SCHEMA}))
  for num_workers in (0, 1, 3):
    assert tabletop_builder.config_differences(tmp_path, tiny_config(num_workers=num_workers)) == []
  assert tabletop_builder.config_differences(tmp_path, tiny_config(num_workers=3, seed=7)) == ["seed"]


def test_an_error_in_a_worker_reaches_the_caller_with_the_workers_traceback():
  config = tiny_config(num_workers=2)  # Unchecked (write_dataset would refuse it before any work):
  config.expert.push.stiffness = 1.0  # only the workers build the expert.
  with pytest.raises(worker_pool.WorkerError) as error:
    list(tabletop_episodes.generate_episodes(config, "train", progress=False))
  message = str(error.value)
  assert "failed in worker process" in message and "Traceback" in message
  assert "in make_expert" in message and "config.expert.push has keys" in message


@pytest.mark.parametrize("value", [-1, 1.5, "2", True, None])
def test_bad_num_workers_names_the_key(tmp_path, value):
  config = tiny_config(tmp_path).to_dict()
  config["num_workers"] = value  # Past ConfigDict's type check, as a hand-built config would be.
  with pytest.raises(ValueError, match=r"config\.num_workers=.* is not valid; expected an int >= 0"):
    tabletop_builder.write_dataset(ml_collections.ConfigDict(config))
  assert not tmp_path.joinpath("tabletop_tiny").exists()
