"""The training/validation iterators on synthetic datasets with known contents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_jax.data import language, pipeline, spec as spec_lib, statistics
from tests.data.conftest import TOY_LENGTHS


def _config(specs, stats_dir, **overrides):
  overrides.setdefault("batch_size", 8)
  overrides.setdefault("window", 2)
  overrides.setdefault("action_horizon", 4)
  config = pipeline.pipeline_config(list(specs), statistics_dir=stats_dir, **overrides)
  config.augmentation.enabled = False
  return config


def _train(config, **kwargs):
  return pipeline.make_train_iterator(config, process_index=kwargs.pop("process_index", 0),
                                      process_count=kwargs.pop("process_count", 1), **kwargs)


def _ids(batch):
  """(episode id [B, T], step [B, T]) read back from the synthetic images' pixel values."""
  pixel = batch["observation"]["image_primary"][:, :, 0, 0, :].astype(np.int64)
  return pixel[..., 1], pixel[..., 0]


def _assert_equal_batches(a, b):
  flat_a, flat_b = _flatten(a), _flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = v
  return out


def test_batch_has_the_documented_keys_shapes_and_dtypes(toy_spec, stats_dir):
  batch = next(_train(_config([toy_spec], stats_dir, window=3, action_horizon=5, max_language_tokens=16)))
  obs = batch["observation"]
  assert obs["image_primary"].shape == (8, 3, 64, 64, 3) and obs["image_primary"].dtype == np.uint8
  assert obs["proprio"].shape == (8, 3, 5) and obs["proprio"].dtype == np.float32
  assert obs["timestep_pad_mask"].shape == (8, 3) and obs["timestep_pad_mask"].dtype == bool
  assert batch["task"]["language_tokens"].shape == (8, 16) and batch["task"]["language_tokens"].dtype == np.int32
  assert batch["action"].shape == (8, 5, 3) and batch["action"].dtype == np.float32
  assert batch["action_pad_mask"].shape == (8, 5) and batch["action_pad_mask"].dtype == bool
  assert batch["dataset_index"].shape == (8,) and batch["dataset_index"].dtype == np.int32
  assert batch["action_dim_mask"].shape == (8, 3) and batch["action_dim_mask"].all()


def test_a_dataset_without_proprio_gives_empty_proprio_and_the_same_samples(toy_spec, stats_dir):
  no_proprio = spec_lib.dataset_spec(**{**toy_spec.to_dict(), "proprio_key": None, "proprio_dim": 0,
                                        "cameras": dict(toy_spec.cameras)})
  without = next(_train(_config([no_proprio], stats_dir)))
  with_proprio = next(_train(_config([toy_spec], stats_dir)))
  assert without["observation"]["proprio"].shape == (8, 2, 0)
  np.testing.assert_array_equal(_ids(without)[0], _ids(with_proprio)[0])
  np.testing.assert_array_equal(without["action"], with_proprio["action"])


def test_every_sample_respects_episode_boundaries(toy_spec, stats_dir):
  """Over two epochs: windows pad with the first frame, chunks stop at the episode end."""
  window, horizon = 3, 4
  it = _train(_config([toy_spec], stats_dir, window=window, action_horizon=horizon, batch_size=5))
  stats = it.statistics["toy"]["action"]
  lengths = TOY_LENGTHS["train"]
  seen = []
  for _ in range(2 * sum(lengths) // 5):
    batch = next(it)
    episode, step = _ids(batch)
    action = statistics.unnormalize(batch["action"], stats, "gaussian")
    for b in range(5):
      e, t = int(episode[b, -1]), int(step[b, -1])
      seen.append((e, t))
      length = lengths[e]
      assert (episode[b] == e).all()
      np.testing.assert_array_equal(step[b], np.maximum(np.arange(t - window + 1, t + 1), 0))
      np.testing.assert_array_equal(batch["observation"]["timestep_pad_mask"][b], np.arange(t - window + 1, t + 1) >= 0)
      np.testing.assert_allclose(action[b, :, 0], np.minimum(np.arange(t, t + horizon), length - 1), atol=1e-4)
      np.testing.assert_allclose(action[b, :, 1], e, atol=1e-4)  # Never the next episode's actions.
      np.testing.assert_array_equal(batch["action_pad_mask"][b], np.arange(t, t + horizon) < length)
  # Every step of every episode appears exactly once per epoch.
  assert sorted(seen) == sorted([(e, t) for e, n in enumerate(lengths) for t in range(n)] * 2)


def test_gripper_dims_are_not_normalised(toy_spec, stats_dir):
  batch = next(_train(_config([toy_spec], stats_dir)))
  assert set(np.unique(batch["action"][..., 2])) <= {0.0, 1.0}


def test_language_tokens_are_the_byte_tokenizer_of_the_instruction(toy_spec, stats_dir):
  batch = next(_train(_config([toy_spec], stats_dir)))
  episode, _ = _ids(batch)
  texts = language.detokenize(batch["task"]["language_tokens"])
  assert texts == [f"task {e}" for e in episode[:, -1]]


def test_same_seed_gives_same_batches_and_other_seed_differs(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, seed=3)
  config.augmentation.enabled = True
  a, b = _train(config), _train(config)
  for _ in range(4):
    _assert_equal_batches(next(a), next(b))
  other = _config([toy_spec], stats_dir, seed=4)
  other.augmentation.enabled = True
  c = _train(other)
  a = _train(config)
  orders = [(_ids(next(a))[0].tolist(), _ids(next(c))[0].tolist()) for _ in range(3)]
  assert any(x != y for x, y in orders)


@pytest.mark.parametrize("consumed", [1, 7])  # 7 batches of 8 > one epoch of 25 samples.
def test_restored_iterator_gives_the_same_next_batch(toy_spec, stats_dir, consumed):
  config = _config([toy_spec], stats_dir, seed=1)
  config.augmentation.enabled = True
  it = _train(config)
  for _ in range(consumed):
    next(it)
  state = json.loads(json.dumps(it.state()))  # The state is plain JSON.
  expected = [next(it) for _ in range(3)]
  restored = _train(config, state=state)
  for want in expected:
    _assert_equal_batches(next(restored), want)


def test_restore_refuses_a_different_config(toy_spec, stats_dir):
  it = _train(_config([toy_spec], stats_dir))
  next(it)
  with pytest.raises(ValueError, match="different data config"):
    _train(_config([toy_spec], stats_dir, batch_size=4), state=it.state())


def test_mixture_weights_are_honoured(toy_spec, second_dir, stats_dir):
  second = spec_lib.dataset_spec(name="second", builder_dir=second_dir, cameras={"primary": "image"},
                                 proprio_key="state", proprio_dim=5, action_dim=3,
                                 action_dim_kinds=("relative", "relative", "gripper"), weight=1.0)
  first = toy_spec.copy_and_resolve_references()
  first.weight = 3.0
  it = _train(_config([first, second], stats_dir, batch_size=50))
  counts = np.zeros(2)
  for _ in range(40):
    counts += np.bincount(next(it)["dataset_index"], minlength=2)
  assert it.dataset_names == ["second", "toy"]  # dataset_index follows the (sorted) config keys.
  fraction = counts[1] / counts.sum()
  assert abs(fraction - 0.75) < 0.03, fraction
  assert it.state()["samples_per_dataset"] == [int(c) for c in counts]


def test_mixture_restore_gives_the_same_next_batch(toy_spec, second_dir, stats_dir):
  second = spec_lib.dataset_spec(name="second", builder_dir=second_dir, cameras={"primary": "image"},
                                 proprio_key="state", proprio_dim=5, action_dim=3,
                                 action_dim_kinds=("relative", "relative", "gripper"))
  config = _config([toy_spec, second], stats_dir, batch_size=8)
  it = _train(config)
  for _ in range(9):
    next(it)
  state = it.state()
  want = next(it)
  _assert_equal_batches(next(_train(config, state=state)), want)


def test_each_process_reads_a_disjoint_shard(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, batch_size=1, sample_shuffle_buffer=1)
  per_process = []
  for index in range(2):
    it = _train(config, process_index=index, process_count=2)
    per_process.append({int(_ids(next(it))[0][0, -1]) for _ in range(40)})
  assert not per_process[0] & per_process[1]
  assert per_process[0] | per_process[1] == set(range(len(TOY_LENGTHS["train"])))


def test_validation_iterates_val_episodes_once_in_order(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, batch_size=3, val_drop_remainder=False)
  batches = list(pipeline.make_val_iterator(config, process_index=0, process_count=1))
  episode = np.concatenate([_ids(b)[0][:, -1] for b in batches])
  step = np.concatenate([_ids(b)[1][:, -1] for b in batches])
  first_val = len(TOY_LENGTHS["train"])
  want = [(first_val + i, t) for i, n in enumerate(TOY_LENGTHS["val"]) for t in range(n)]
  assert list(zip(episode.tolist(), step.tolist())) == want


def test_split_by_episode_with_split_slicing(toy_spec, stats_dir):
  spec = toy_spec.copy_and_resolve_references()
  spec.train_split, spec.val_split = "train[:50%]", "train[50%:]"
  config = _config([spec], stats_dir, batch_size=1, val_drop_remainder=False)
  train_it = _train(config)
  train_eps = {int(_ids(next(train_it))[0][0, -1]) for _ in range(40)}
  val_eps = {int(_ids(b)[0][0, -1]) for b in pipeline.make_val_iterator(config, process_index=0, process_count=1)}
  assert train_eps and val_eps and not train_eps & val_eps


def test_goal_relabelling_picks_a_future_frame_of_the_same_episode(toy_spec, stats_dir):
  batch = next(_train(_config([toy_spec], stats_dir, goal_relabeling=True)))
  episode, step = _ids(batch)
  goal = batch["task"]["image_goal"][:, 0, 0, :].astype(np.int64)
  assert batch["task"]["image_goal"].shape == (8, 64, 64, 3)
  np.testing.assert_array_equal(goal[:, 1], episode[:, -1])
  assert (goal[:, 0] >= step[:, -1]).all()


def test_augmentation_is_off_for_validation_and_changes_training_images(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, batch_size=8)
  config.augmentation.enabled = True
  val = next(pipeline.make_val_iterator(config, process_index=0, process_count=1))
  images = val["observation"]["image_primary"]
  assert (images == images[:, :, :1, :1, :]).all()  # Synthetic frames are flat colours, untouched.
  train = next(_train(config))["observation"]["image_primary"].astype(np.int64)
  plain = next(_train(_config([toy_spec], stats_dir, batch_size=8)))["observation"]["image_primary"]
  assert np.abs(train - plain).max() > 0


def test_thread_settings_do_not_change_the_batches_or_the_resume_state(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, num_threads=2, num_parallel_calls=2)
  config.augmentation.enabled = True
  fast = _train(config)
  for _ in range(3):
    next(fast)
  slow_config = _config([toy_spec], stats_dir, num_threads=1, num_parallel_calls=1, prefetch_batches=1)
  slow_config.augmentation.enabled = True
  slow = _train(slow_config, state=fast.state())
  _assert_equal_batches(next(slow), next(fast))


def test_in_memory_cache_does_not_change_the_batches(toy_spec, stats_dir):
  cached = _config([toy_spec], stats_dir, cache=True)
  streaming = _config([toy_spec], stats_dir, cache=False)
  a, b = _train(cached), _train(streaming)
  for _ in range(8):  # Crosses epoch boundaries (25 samples per epoch).
    _assert_equal_batches(next(a), next(b))
  state = a.state()
  _assert_equal_batches(next(_train(streaming, state=state)), next(a))


def test_a_pipeline_read_alone_without_a_batch_size_says_which_key_to_set(toy_spec, stats_dir):
  config = _config([toy_spec], stats_dir, batch_size=None)
  with pytest.raises(ValueError, match=r"config.batch_size of the data pipeline is None"):
    _train(config)
