"""Meta-World closed-loop evaluation (vla_jax/evaluation/metaworld.py) through the shared harness."""

import numpy as np
import pytest

from vla_jax.envs import metaworld_tasks

pytest.importorskip("metaworld", reason="Meta-World is an optional extra: make metaworld-deps")

from vla_jax.evaluation import evaluate as ev  # noqa: E402
from vla_jax.evaluation import metaworld as mw_eval  # noqa: E402


def test_language_blind_instructions_belong_to_other_tasks():
  told = mw_eval.blind_instructions("push-v3", metaworld_tasks.MT10, 30)
  push = set(metaworld_tasks.INSTRUCTIONS["push-v3"])
  assert not push & set(told)
  assert len({metaworld_tasks.MT10[0]} | set(told)) > 9  # Cycles through the other nine tasks.


def test_a_bad_condition_is_named():
  config = mw_eval.eval_config(episodes_per_task=1, tasks=("reach-v3",))
  config.conditions = ("seen", "heldout_combo")
  with pytest.raises(ValueError, match="'heldout_combo' is not valid for Meta-World"):
    ev.evaluate(mw_eval.ExpertPolicy(), config)


@pytest.mark.slow
def test_the_experts_through_the_harness_succeed_and_conditions_change_only_the_words():
  config = mw_eval.eval_config(episodes_per_task=3, tasks=("reach-v3", "drawer-close-v3"))
  config.num_envs, config.num_workers, config.image_size = 3, 2, 64
  summary = ev.evaluate(mw_eval.ExpertPolicy(), config)
  for name, cond in summary["conditions"].items():
    # The privileged expert ignores language: every condition succeeds; the groups are computed.
    assert cond["overall"]["success_rate"] == 1.0, name
    assert cond["groups"]["easy"]["episodes"] == 6 and cond["group_mean_success_rate"] == 1.0
  episodes = {(e["condition"], e["family"], e["seed"]): e for e in summary["episodes"]}
  for (condition, task, seed), e in episodes.items():
    assert e["task_instruction"] in metaworld_tasks.instructions(task, "heldout_paraphrase" if condition ==
                                                                 "heldout_paraphrase" else "train")
    if condition == "language_blind":
      assert e["instruction"] not in metaworld_tasks.INSTRUCTIONS[task]
    else:
      assert e["instruction"] == e["task_instruction"]
    # Paired conditions: the same scene seeds and, for this deterministic expert, the same lengths.
    assert e["length"] == episodes[("seen", task, seed)]["length"]
  assert "scalars" not in summary and ev.scalars(summary)["seen/group_easy/success_rate"] == 1.0
  assert summary["videos"] and summary["videos"][0]["frames"][0].shape == (64, 64, 3)
  assert np.mean([e["length"] for e in summary["episodes"]]) < config.max_episode_steps
