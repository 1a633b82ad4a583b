"""Recovery demonstrations: the expert's deliberate premature gripper close, and its recovery."""

from __future__ import annotations

import numpy as np

from vla_jax.data.tabletop_episodes import rollout_episode
from vla_jax.envs import ScriptedExpert, TabletopEnv
from vla_jax.envs.tasks import FAMILIES


def _episodes(mistake_prob: float, n: int = 30) -> list[dict]:
  env = TabletopEnv()
  expert = ScriptedExpert(noise_std=0.1, mistake_prob=mistake_prob)
  return [rollout_episode(env, expert, 100 + i, 200 + i, FAMILIES[i % 3]) for i in range(n)]


def test_without_mistakes_demos_are_unchanged_and_unperturbed():
  """Mistakes draw from their own random stream: mistake_prob=0 gives the same demos as before."""
  env = TabletopEnv()
  for i, family in enumerate(FAMILIES):
    plain = rollout_episode(env, ScriptedExpert(noise_std=0.1), 5 + i, 9 + i, family)
    zero = rollout_episode(env, ScriptedExpert(noise_std=0.1, mistake_prob=0.0), 5 + i, 9 + i, family)
    np.testing.assert_array_equal(plain["steps"]["action"], zero["steps"]["action"])
    assert zero["episode_metadata"]["perturbation_step"] == -1


def test_episodes_get_one_premature_close_and_the_expert_recovers():
  episodes = _episodes(mistake_prob=1.0)
  perturbed = [ep for ep in episodes if ep["episode_metadata"]["perturbation_step"] >= 0]
  # Only an expert that reaches its grasp point in one step from farther than `mistake_at` skips it.
  assert len(perturbed) >= 0.8 * len(episodes)
  misses = recovered = 0
  for ep in perturbed:
    k = ep["episode_metadata"]["perturbation_step"]
    state = ep["steps"]["observation"]["state"]
    assert state[k, 2] == 0.0 and state[k + 1, 2] == 1.0  # The gripper was open and got closed...
    assert ep["steps"]["action"][k, 2] == 0.0  # ...while the recorded label says "keep it open".
    family = ep["episode_metadata"]["task_family"]
    # A missed grasp (not a lucky early one): the next label opens. (A push may instead go on
    # pushing with the early fist when it is already lined up behind the object.)
    if state[k + 1, 3] == 0.0 and family != "push":
      assert ep["steps"]["action"][k + 1, 2] == 0.0
      misses += 1
      recovered += ep["episode_metadata"]["success"]
  assert misses >= 0.5 * len(perturbed) and recovered == misses  # Real misses, all recovered.
  assert all(ep["episode_metadata"]["success"] for ep in episodes)


def test_a_held_premature_close_keeps_the_gripper_closed_for_mistake_steps_and_the_expert_recovers():
  """mistake_steps = 4 (the rate-4 dataset's): the executed close holds 4 steps, every label of
  them says "open", perturbation_step is the first, and the expert still succeeds."""
  env = TabletopEnv(control_rate=4)
  held = 0
  for i in range(24):
    expert = ScriptedExpert(noise_std=0.2, mistake_prob=1.0, mistake_steps=4)
    ep = rollout_episode(env, expert, 100 + i, 200 + i, FAMILIES[i % 3])
    assert ep["episode_metadata"]["success"]
    k = ep["episode_metadata"]["perturbation_step"]
    if k < 0:
      continue
    state, action = ep["steps"]["observation"]["state"], ep["steps"]["action"]
    assert state[k, 2] == 0.0 and np.all(state[k + 1 : k + 5, 2] == 1.0)  # Closed on 4 executed steps.
    if state[k + 1, 3] == 0.0 and ep["episode_metadata"]["task_family"] != "push":  # A missed grasp:
      assert np.all(action[k : k + 4, 2] == 0.0)  # every label of the hold says "open".
      held += 1
  assert held >= 8


def test_push_slips_use_their_own_stream_and_leave_the_rest_of_each_demo_unchanged():
  """slip_prob > 0 changes nothing before a push's first slipped step, and no place / pick demo."""
  env = TabletopEnv()
  compared = 0
  for i, family in enumerate(FAMILIES * 3):
    plain = rollout_episode(env, ScriptedExpert(noise_std=0.1, mistake_prob=0.3), 5 + i, 9 + i, family)
    slips = rollout_episode(env, ScriptedExpert(noise_std=0.1, mistake_prob=0.3, slip_prob=1.0), 5 + i, 9 + i, family)
    k = slips["episode_metadata"]["slip_step"]
    assert plain["episode_metadata"]["slip_step"] == -1
    if family != "push":
      assert k == -1, family  # Only pushes slip.
    upto = len(plain["steps"]["action"]) if k < 0 else k + 1  # Label k is chosen before the slip.
    np.testing.assert_array_equal(plain["steps"]["action"][:upto], slips["steps"]["action"][:upto])
    if k < 0:
      assert len(plain["steps"]["action"]) == len(slips["steps"]["action"])
    compared += k >= 0
  assert compared >= 2  # Some pushes really slipped (and still matched up to the slip).


def test_push_slip_turns_the_executed_motion_and_the_expert_recovers():
  env = TabletopEnv()
  episodes = [rollout_episode(env, ScriptedExpert(noise_std=0.1, slip_prob=1.0), 300 + i, 400 + i, "push")
              for i in range(30)]
  slipped = [ep for ep in episodes if ep["episode_metadata"]["slip_step"] >= 0]
  assert len(slipped) >= 0.8 * len(episodes)  # Only pushes solved within `slip_after` steps skip it.
  reopened = 0
  for ep in slipped:
    k = ep["episode_metadata"]["slip_step"]
    state, action = ep["steps"]["observation"]["state"], ep["steps"]["action"]
    assert state[k, 2] == 1.0 and action[k, 2] == 1.0  # A closed fist, meaning to push on...
    moved = state[k + 1, :2] - state[k, :2]  # ...moved
    label = action[k, :2]
    cos = moved @ label / (np.linalg.norm(moved) * np.linalg.norm(label) + 1e-9)
    assert cos < np.cos(np.radians(30)), (k, moved, label)  # ...well off its recorded label.
    reopened += bool((action[k:, 2] < 0.5).any())
  assert reopened >= 0.3 * len(slipped)  # Many slips lose the object: the demo opens, re-approaches.
  assert all(ep["episode_metadata"]["success"] for ep in episodes)


def test_bad_slip_settings_name_the_argument():
  import pytest

  with pytest.raises(ValueError, match="slip_prob=1.5"):
    ScriptedExpert(slip_prob=1.5)
  with pytest.raises(ValueError, match="slip_steps=\\(0, 2\\)"):
    ScriptedExpert(slip_steps=(0, 2))
  with pytest.raises(ValueError, match="slip_angle"):
    ScriptedExpert(slip_angle=(10.0, 200.0))
