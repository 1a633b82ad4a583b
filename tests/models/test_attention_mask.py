"""The block-wise attention mask really blocks what it should.

Checked end to end on the backbone's outputs: changing something a token must not see leaves that
token's output bit-for-bit unchanged (up to float noise), while changing something it should see
does change it (so the tests cannot pass vacuously).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch
from vla_jax.models.backbone import block_attention_mask


def _close(a, b):
  return np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.fixture(scope="module")
def setup(make_tiny_config, jit):
  config = make_tiny_config()
  config.window_size = 3
  config.num_readout_tokens = 2
  policy = Policy(config)
  batch = example_batch(config, batch_size=2, seed=0)
  params = jit(policy.init)(jax.random.key(0), batch)
  outputs = jit(policy.backbone_outputs)
  return policy, params, batch, outputs


def test_static_mask_layout_matches_the_spec():
  # 1 task token, 2 timesteps × 2 obs tokens, 2 readouts.
  m = block_attention_mask(num_task=1, window=2, tokens_per_step=2, num_readout=2).astype(int)
  expected = np.array([
      # task  o0 o0  o1 o1  r  r
      [1,     0, 0,  0, 0,  0, 0],  # task
      [1,     1, 1,  0, 0,  0, 0],  # obs t=0
      [1,     1, 1,  0, 0,  0, 0],
      [1,     1, 1,  1, 1,  0, 0],  # obs t=1
      [1,     1, 1,  1, 1,  0, 0],
      [1,     1, 1,  1, 1,  1, 0],  # readouts: context + self only
      [1,     1, 1,  1, 1,  0, 1],
  ])
  np.testing.assert_array_equal(m, expected)


def test_readout_tokens_are_never_attended(setup):
  policy, params, batch, outputs = setup
  before = outputs(params, batch["observation"], batch["task"])
  changed = jax.tree_util.tree_map(lambda x: x, params)
  changed["backbone"]["readout_embedding"] = params["backbone"]["readout_embedding"] + 1.0
  after = outputs(changed, batch["observation"], batch["task"])
  assert _close(before["task"], after["task"])
  assert _close(before["observation"], after["observation"])
  assert not _close(before["readout"], after["readout"])


def test_a_readout_does_not_see_the_other_readouts(setup):
  policy, params, batch, outputs = setup
  before = outputs(params, batch["observation"], batch["task"])
  changed = jax.tree_util.tree_map(lambda x: x, params)
  changed["backbone"]["readout_embedding"] = params["backbone"]["readout_embedding"].at[1].add(1.0)
  after = outputs(changed, batch["observation"], batch["task"])
  assert _close(before["readout"][:, 0], after["readout"][:, 0])
  assert not _close(before["readout"][:, 1], after["readout"][:, 1])


def test_future_timestep_does_not_change_earlier_outputs(setup):
  policy, params, batch, outputs = setup
  before = outputs(params, batch["observation"], batch["task"])
  obs = dict(batch["observation"])
  obs["image_primary"] = obs["image_primary"].copy()
  obs["image_primary"][:, 2] = 255 - obs["image_primary"][:, 2]
  obs["proprio"] = obs["proprio"].copy()
  obs["proprio"][:, 2] += 1.0
  after = outputs(params, obs, batch["task"])
  assert _close(before["task"], after["task"])
  assert _close(before["observation"][:, :2], after["observation"][:, :2])
  assert not _close(before["observation"][:, 2], after["observation"][:, 2])
  assert not _close(before["readout"], after["readout"])


def test_observations_never_change_task_tokens_but_the_task_changes_observations(setup):
  policy, params, batch, outputs = setup
  before = outputs(params, batch["observation"], batch["task"])
  task = {"language_tokens": batch["task"]["language_tokens"].copy()}
  task["language_tokens"][:, 0] = (task["language_tokens"][:, 0] % 200) + 3
  after = outputs(params, batch["observation"], task)
  assert not _close(before["observation"][:, 0], after["observation"][:, 0])


def test_padded_timesteps_are_invisible_to_the_readouts(setup):
  policy, params, batch, outputs = setup
  obs = dict(batch["observation"])
  obs["timestep_pad_mask"] = np.array([[False, True, True]] * 2)
  before = outputs(params, obs, batch["task"])
  obs2 = dict(obs)
  obs2["image_primary"] = obs["image_primary"].copy()
  obs2["image_primary"][:, 0] = 0
  after = outputs(params, obs2, batch["task"])
  assert _close(before["readout"], after["readout"])
  assert _close(before["observation"][:, 1:], after["observation"][:, 1:])


def test_language_padding_is_invisible(setup):
  policy, params, batch, outputs = setup
  tokens = batch["task"]["language_tokens"]
  assert (tokens[:, 8:] == 0).all()  # example_batch fills the first half only.
  before = outputs(params, batch["observation"], batch["task"])
  shorter = tokens.copy()
  shorter[:, 4:] = 0  # Drop the second real token group: readouts must notice.
  after = outputs(params, batch["observation"], {"language_tokens": shorter})
  assert not _close(before["readout"], after["readout"])
  # The position embedding of padded groups is never seen: perturbing it changes nothing.
  changed = jax.tree_util.tree_map(lambda x: x, params)
  pos = params["backbone"]["language_tokenizer"]["position_embedding"]
  changed["backbone"]["language_tokenizer"]["position_embedding"] = pos.at[2:].add(1.0)
  after = outputs(changed, batch["observation"], batch["task"])
  assert _close(before["readout"], after["readout"])


def test_readout_only_fast_path_matches_the_full_backbone(setup, jit):
  # `embed` (used by loss and sampling) skips the last block's work for non-readout tokens.
  policy, params, batch, outputs = setup
  full = outputs(params, batch["observation"], batch["task"])["readout"]
  fast = jit(policy.embed)(params, batch["observation"], batch["task"])
  np.testing.assert_allclose(np.asarray(fast), np.asarray(full), atol=1e-5)
