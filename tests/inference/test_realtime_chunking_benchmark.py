"""benchmarks/realtime_chunking.py: how its rows pool episodes, and how it judges its targets.

The rollouts themselves are tested in tests/evaluation/test_delayed_rollout.py; here fake episode
results stand in for them, so the aggregation the README's real-time chunking figures come from is
checked number by number.
"""

import argparse

import pytest

from vla_jax.evaluation import evaluate as ev
from vla_jax.evaluation.rollout import EpisodeResult
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
  return load_benchmark("realtime_chunking")


def _episode(family, success, length, waits, jumps, interior=(0.0, 0.0, 0)):
  return EpisodeResult(seed=0, family=family, split="train", instruction="x", task_instruction="x",
                       success=success, length=length, wait_steps=waits, inferences=len(jumps) + 1,
                       boundary_jumps=list(jumps), interior_jump_sum=interior[0], interior_jump_max=interior[1],
                       interior_steps=interior[2])


def test_a_row_averages_families_and_pools_jumps_over_every_episode(bench, monkeypatch):
  fake = {  # family -> episodes: pick 1 of 2, place 2 of 2, push 0 of 2.
      "pick": [_episode("pick", True, 10, 2, [0.1, 0.3], (1.0, 0.5, 8)), _episode("pick", False, 30, 4, [0.2])],
      "place": [_episode("place", True, 20, 0, [0.6]), _episode("place", True, 12, 6, [])],
      "push": [_episode("push", False, 30, 0, [], (0.6, 0.9, 4)), _episode("push", False, 30, 0, [0.4])],
  }
  calls = []

  def run_episodes(policy, seeds, *, family, **kwargs):
    calls.append((family, list(seeds), kwargs["strategy"], kwargs["delay"]))
    return fake[family]

  monkeypatch.setattr(bench.rollout, "run_episodes", run_episodes)
  config = ev.eval_config(episodes_per_family=2)
  config.control_rate = 1
  args = argparse.Namespace(episodes_per_family=2, num_envs=2, execute_steps=4)
  row = bench.run_condition(None, "rtc", 4, args, config)

  assert [c[0] for c in calls] == list(config.families) and all(c[2:] == ("rtc", 4) for c in calls)
  assert len({s for c in calls for s in c[1]}) == 2 * len(calls)  # Each family its own scenes.
  assert row["success"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # Mean over families.
  assert row["boundary_jump"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.6 + 0.4) / 5)
  assert row["boundary_jump_max"] == pytest.approx(0.6) and row["boundary_switches"] == 5
  assert row["interior_jump"] == pytest.approx(1.6 / 12) and row["interior_jump_max"] == pytest.approx(0.9)
  assert row["steps_to_success"] == pytest.approx((12 + 20 + 18) / 3)  # Waits count: sync stands still.
  assert row["env_steps_to_success"] == pytest.approx((10 + 20 + 12) / 3)
  assert row["waits_per_episode"] == pytest.approx(12 / 6)
  assert row["per_family"]["place"]["steps_to_success"] == pytest.approx(19.0)
  assert row["per_family"]["push"]["steps_to_success"] is None


def _row(strategy, delay, success, jump):
  return {"strategy": strategy, "delay": delay, "success": success, "boundary_jump": jump}


def test_targets_say_met_or_not_met_against_sync_and_naive_async(bench):
  latency = {"plain": {"head_ms": 10.0, "call_ms": 20.0}, "rtc": {"head_ms": 15.0, "call_ms": 25.0}}
  rows = [_row("sync", 0, 0.95, 0.1), _row("naive_async", 4, 0.80, 0.40), _row("rtc", 4, 0.93, 0.18)]
  lines = bench.targets(rows, latency)
  assert lines == [
      "RTC success at d = 4 is +2.0 points below sync at d = 0 (target ≤ 3): met",
      "RTC boundary jump at d = 4 is 0.45× naive async's (target ≤ 0.5): met",
      "RTC sampling latency 1.50× plain (head only; whole call 1.25×) (target ≤ 1.6): met"]
  rows[2] = _row("rtc", 4, 0.90, 0.25)
  latency["rtc"]["head_ms"] = 17.0
  assert [line.rsplit(": ", 1)[1] for line in bench.targets(rows, latency)] == ["NOT met"] * 3
  rows[2] = _row("rtc", 4, 0.97, 0.1)  # Better than sync at d = 0: a negative gap, never "-0.0".
  assert bench.targets(rows, latency)[0].startswith("RTC success at d = 4 is -2.0 points")
  # Without the rows a target compares, it is not judged at all.
  assert bench.targets([_row("rtc", 4, 0.9, 0.1)], {"plain": latency["plain"]}) == []
