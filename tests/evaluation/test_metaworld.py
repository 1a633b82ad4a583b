"""Meta-World closed-loop evaluation (vla_jax/evaluation/metaworld.py) through the shared harness."""

import json

import numpy as np
import pytest

from vla_jax.envs import metaworld_tasks

pytest.importorskip("metaworld", reason="Meta-World is an optional extra: make metaworld-deps")

from vla_jax.evaluation import evaluate as ev  # noqa: E402
from vla_jax.evaluation import metaworld as mw_eval  # noqa: E402
from vla_jax.evaluation import rollout  # noqa: E402


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


FAILURE_KEYS = [f"{key}_{q}" for key in ("closest_to_goal_m", "hand_to_object_m") for q in ("q25", "median", "q75")]


def _episode(task: str, success: bool, goal: float, hand: float) -> rollout.EpisodeResult:
  return rollout.EpisodeResult(seed=0, family=task, split="train", instruction="", task_instruction="",
                               success=success, length=10,
                               diagnostics={"closest_to_goal_m": goal, "hand_to_object_m": hand})


def _one_task_table(task: str, failures: dict) -> str:
  """results.md of a one-task, one-condition summary whose failures are `failures`."""
  rate = {"episodes": 4, "success_rate": 0.25, "ci95_low": 0.05, "ci95_high": 0.7}
  return mw_eval.markdown_table({"conditions": {"seen": {
      "families": {task: {**rate, "failures": failures}}, "groups": {}, "overall": rate,
      "group_mean_success_rate": 0.25}}})


def test_failures_are_summarised_by_how_close_they_came():
  results = [_episode("push-v3", False, g, h) for g, h in ((0.10, 0.02), (0.20, 0.04), (0.30, 0.30))]
  results.append(_episode("push-v3", True, 0.01, 0.03))  # Successes are not failures.
  summary = mw_eval.failure_summary(results)
  assert summary["episodes"] == 3
  assert summary["closest_to_goal_m_median"] == pytest.approx(0.20)
  assert summary["closest_to_goal_m_q25"] == pytest.approx(0.15) and summary["closest_to_goal_m_q75"] == pytest.approx(0.25)
  assert summary["hand_to_object_m_median"] == pytest.approx(0.04)
  assert mw_eval.failure_summary(results[3:]) == {"episodes": 0, **dict.fromkeys(FAILURE_KEYS)}
  table = _one_task_table("push-v3", summary)
  assert "| push-v3 | 3 | 20.0 [15.0, 25.0] | 4.0 [3.0, 17.0] |" in table
  # Reach has no task object: its failures have no approach distance, and the cell stays empty.
  reach = mw_eval.failure_summary([_episode("reach-v3", False, 0.07, None), _episode("reach-v3", False, 0.06, None)])
  assert reach["closest_to_goal_m_median"] == pytest.approx(0.065) and reach["hand_to_object_m_median"] is None
  table = _one_task_table("reach-v3", reach)
  assert "| reach-v3 | 2 | 6.5 [6.2, 6.8] |  |" in table


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
  assert all(row["failures"] == {"episodes": 0, **dict.fromkeys(FAILURE_KEYS)} for cond in summary["conditions"].values()
             for row in cond["families"].values())
  for e in summary["episodes"]:  # Successes end near the goal (reach: within its 5 cm radius).
    assert e["diagnostics"]["closest_to_goal_m"] < (0.05 if e["family"] == "reach-v3" else 0.08), e
  assert "scalars" not in summary and ev.scalars(summary)["seen/group_easy/success_rate"] == 1.0
  assert summary["videos"] and summary["videos"][0]["frames"][0].shape == (64, 64, 3)
  assert np.mean([e["length"] for e in summary["episodes"]]) < config.max_episode_steps


def _run_trained_on(tmp_path, env: dict, cameras=("primary",)) -> str:
  """A run's config.json (a model reading `cameras`) whose one dataset was generated with
  generation_config.env = `env`."""
  data = tmp_path / "data" / "metaworld_mt10" / "1.0.0"
  data.mkdir(parents=True)
  (data / "metadata.json").write_text(json.dumps({"generation_config": {"env": env}}))
  run = tmp_path / "config.json"
  run.write_text(json.dumps({"model": {"cameras": list(cameras)},
                             "data": {"datasets": {"metaworld": {"builder_dir": str(data)}}}}))
  return str(run)


def test_evaluating_on_another_view_than_the_training_data_is_refused(tmp_path):
  config = mw_eval.eval_config()
  config.camera_fovy = 45.0
  same = {"image_size": config.image_size, "camera": config.camera, "camera_fovy": 45.0}
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "a", same))
  for key, value in (("camera_fovy", None), ("image_size", 64), ("camera", "corner2")):
    # camera_fovy None: a dataset rendered with the camera's own field of view (or written before the key).
    run = _run_trained_on(tmp_path / key, {**same, key: value} if value is not None else
                          {k: v for k, v in same.items() if k != key})
    with pytest.raises(ValueError, match=f"eval.{key}=.*env.{key}={value!r}.*--config.eval.{key}="):
      mw_eval.check_view_matches_data(config, run)
  # The defaults (the camera's own view) match a dataset written before camera_fovy existed.
  config.camera_fovy = None
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "old", {"image_size": 96, "camera": "corner4"}))
  # Datasets that are not Meta-World's, or a run without config.json, are not checked.
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "tabletop", {"image_size": 64}))
  mw_eval.check_view_matches_data(config, tmp_path / "missing.json")


def test_extra_views_are_checked_for_the_policies_that_read_them(tmp_path):
  config = mw_eval.eval_config()
  view = {"image_size": config.image_size, "camera": config.camera, "extra_cameras": ["gripperPOV"]}
  two, one, none = ("primary", "wrist"), ("primary",), ()
  with pytest.raises(ValueError, match=r"eval.extra_cameras=\(\).*\['gripperPOV'\].*--config.eval.extra_cameras="):
    mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "two", view, two))
  config.extra_cameras = ("gripperPOV",)
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "two_ok", view, two))
  config.extra_cameras = ()
  # A one-camera policy may come from data with more views; a state-only policy reads none at all.
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "one", view, one))
  mw_eval.check_view_matches_data(config, _run_trained_on(tmp_path / "none", {**view, "image_size": 64}, none))
