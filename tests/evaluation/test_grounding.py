"""The grounding check: where a policy's target token looks on simulator scenes (evaluation/grounding)."""

import json

import numpy as np
import pytest

from vla_jax.envs import tabletop
from vla_jax.evaluation import evaluate as ev
from vla_jax.evaluation import grounding, policies
from vla_jax.inference.testing import random_bundle
from vla_jax.models import model_config


def test_expected_positions_follow_the_peak_of_the_map():
  logits = np.full((2, 8, 8), -30.0)
  logits[0, 1, 6] = 0.0  # Row 1 (y), column 6 (x).
  logits[1, 5, 2] = 0.0
  xy = grounding.expected_positions(logits)
  np.testing.assert_allclose(xy, [[6.5 / 8, 1.5 / 8], [2.5 / 8, 5.5 / 8]], atol=1e-6)
  uniform = grounding.expected_positions(np.zeros((1, 8, 8)))
  np.testing.assert_allclose(uniform, [[0.5, 0.5]], atol=1e-6)


@pytest.mark.parametrize("family", ["push", "pick"])
def test_classify_names_the_nearest_object_by_its_relation_to_the_target(family):
  env = tabletop.TabletopEnv(image_size=32)
  env.reset(seed=3, options={"task_family": family, "split": "heldout_combo"})
  s = env.scene
  colour, shape = s.obj_colour[s.target], s.obj_shape[s.target]
  same_colour = next(i for i in range(len(s.obj_pos)) if i not in (s.target, s.ref) and s.obj_colour[i] == colour)
  same_shape = next(i for i in range(len(s.obj_pos)) if i not in (s.target, s.ref) and s.obj_shape[i] == shape)
  assert grounding.classify(s, s.obj_pos[s.target] + 0.01) == "target"
  assert grounding.classify(s, s.obj_pos[same_colour]) == "same colour"
  assert grounding.classify(s, s.obj_pos[same_shape]) == "same shape"
  if family == "push":
    assert grounding.classify(s, s.obj_pos[s.ref]) == "reference"


def _one_episode_config():
  config = ev.eval_config(episodes_per_family=1)
  config.conditions, config.videos_for = ("seen",), ()
  return config


def _tiny_referent_config(referent_weight=1.0):
  config = model_config("tiny", "diffusion")
  config.image_size_px = 32
  config.image.num_learned_tokens = 4
  config.referent_loss.weight = referent_weight
  return config


def test_report_scores_each_condition_that_tells_its_own_instruction(tmp_path):
  bundle = random_bundle(_tiny_referent_config())
  assert grounding.applies(bundle.model_config)
  splits = ev.grounding_splits(("seen", "heldout_combo", "language_blind"))
  assert splits == {"seen": "train", "heldout_combo": "heldout_combo"}  # language_blind: another scene's words.
  report = grounding.grounding_report(bundle, splits, families=("place", "push"), scenes_per_family=6)
  assert list(report) == ["seen", "heldout_combo"]
  for families in report.values():
    assert list(families) == ["place", "push"]
    for r in families.values():
      assert r["scenes"] == 6 and sum(r["counts"].values()) == 6
      assert r["ci95_low"] <= r["target_rate"] <= r["ci95_high"] and r["median_error"] >= 0
  table = ev.grounding_table(report)
  assert table.count("\n| heldout_combo | ") == 2 and "6 scenes per family" in table
  assert "| on target | reference | same colour | same shape | other |" in table
  summary = ev.evaluate(policies.ExpertPolicy(), _one_episode_config())
  summary["grounding"] = report
  paths = ev.write_artifacts(summary, tmp_path)
  assert "## Where the target token looks" in paths["markdown"].read_text()
  assert json.loads(paths["json"].read_text())["grounding"] == json.loads(json.dumps(report))
  with pytest.raises(ValueError, match="eval condition 'unseen' is unknown"):
    ev.grounding_splits(("unseen",))


def test_only_policies_with_a_trained_target_token_are_checked():
  assert not grounding.applies(_tiny_referent_config(referent_weight=0.0))
  no_tokens = _tiny_referent_config()
  no_tokens.image.num_learned_tokens = 0
  assert not grounding.applies(no_tokens)
  with pytest.raises(ValueError, match="num_learned_tokens is 0"):
    bundle = random_bundle(no_tokens)
    grounding.grounding_report(bundle, {"seen": "train"}, scenes_per_family=1)
