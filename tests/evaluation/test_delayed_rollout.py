"""Closed-loop rollouts under inference delay, for every execution strategy.

A fake policy whose chunk entry [n, h] is (0.01 · query, 0.01 · h, 0) makes the executed actions
say which chunk and index they came from; a recording env captures them.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.evaluation import evaluate as ev
from vla_jax.evaluation import policies, rollout
from tests.evaluation.test_evaluation import ChunkRecorder
from vla_jax.inference.execution import DelaySampler


class Recorder(ChunkRecorder):
  """ChunkRecorder's chunks, plus an observation window and the guided-sampling arguments of JaxPolicy."""

  def __init__(self, horizon: int):
    super().__init__(horizon)
    self.calls, self.pushed = [], []

  def reset(self, instructions, scenes):
    super().reset(instructions, scenes)
    self.calls, self.pushed = [], []

  def observe(self, obs):
    self.pushed.append(np.array(obs["state"]))

  def __call__(self, obs, scenes, *, guidance=None, prefix=None, weights=None):
    self.observe(obs)
    self.calls.append(dict(guidance=guidance, prefix=prefix, weights=weights))
    return super().__call__(obs, scenes)


@pytest.fixture
def executed(monkeypatch):
  """The actions env 0 executed, step by step, in the rollouts of the test."""
  actions: list[np.ndarray] = []

  class RecordingEnv(rollout.VectorTabletopEnv):
    def step(self, a):
      actions.append(np.array(a[0]))
      return super().step(a)

  monkeypatch.setattr(rollout, "VectorTabletopEnv", RecordingEnv)
  return actions


def run(policy, steps=12, **kwargs):
  return rollout.run_episodes(policy, [0, 1], family="pick", split="train", max_episode_steps=steps,
                              image_size=32, **kwargs)


def coded(query: int, index: int) -> list[float]:
  return [0.01 * query, 0.01 * index, 0.0]


@pytest.mark.parametrize("strategy", ["sync", "naive_async", "receding"])
def test_at_delay_zero_sync_and_naive_async_execute_exactly_the_receding_actions(strategy, executed):
  key = "execution" if strategy == "receding" else "strategy"
  results = run(Recorder(4), **{key: strategy}, execute_steps=3)
  np.testing.assert_array_equal(np.stack(executed), np.float32([coded(t // 3, t % 3) for t in range(12)]))
  assert all(r.wait_steps == 0 and r.inferences == 4 and r.length == 12 for r in results)


def test_at_delay_zero_the_ensemble_averages_every_query_of_the_last_h_steps(executed):
  run(Recorder(4), strategy="ensemble", steps=8)
  for t, action in enumerate(executed):
    queries = range(max(0, t - 3), t + 1)
    want = np.mean([coded(q, t - q) for q in queries], axis=0, dtype=np.float32)
    np.testing.assert_allclose(action, want, rtol=1e-6, atol=1e-7)


def test_sync_stands_still_for_the_delay_and_counts_the_waits(executed):
  policy = Recorder(4)
  results = run(policy, strategy="sync", execute_steps=2, delay=3)
  np.testing.assert_array_equal(np.stack(executed), np.float32([coded(t // 2, t % 2) for t in range(12)]))
  for r in results:
    assert (r.length, r.inferences, r.wait_steps) == (12, 6, 18)  # Waits are not env steps.
  assert len(policy.pushed) == 12  # Each observation entered the window once, waits or not.


def test_naive_async_switches_to_the_new_chunk_when_it_arrives(executed):
  results = run(Recorder(4), strategy="naive_async", execute_steps=2, delay=1)
  # Requests at steps 0, 2, 4, ...; the chunk asked at step 2q arrives at step 2q + 1 and runs from
  # its index 1. The first chunk was waited for (1 tick) and runs from index 0.
  want = [coded(0, 0), coded(0, 1), coded(0, 2)] + [coded(t // 2 if t % 2 else t // 2 - 1, 1 if t % 2 else 2)
                                                     for t in range(3, 12)]
  np.testing.assert_array_equal(np.stack(executed), np.float32(want))
  for r in results:
    assert r.wait_steps == 1 and r.inferences == 6
    assert len(r.boundary_jumps) == 5  # Switches at steps 3, 5, 7, 9, 11.
    # Each switch goes from index 2 of one chunk to index 1 of the next: a jump of 0.01 in x and y.
    np.testing.assert_allclose(r.boundary_jumps, np.hypot(0.01, 0.01), rtol=1e-5)
    assert r.interior_steps == 11 - 5


@pytest.mark.parametrize("strategy", ["hard", "rtc", "conditioned"])
def test_hard_and_rtc_pass_the_plan_of_the_next_h_steps_as_prefix_with_the_soft_mask(strategy):
  from vla_jax.models.heads.realtime import prefix_weights

  policy = Recorder(8)
  run(policy, steps=20, strategy=strategy, execute_steps=4, delay=2)
  first, *rest = policy.calls
  assert first["guidance"] is None  # Nothing planned before the first chunk.
  assert len(rest) == 4  # Requests at steps 4, 8, 12, 16.
  for q, call in enumerate(rest, start=1):
    assert call["guidance"] == strategy
    # The plan asked 4 steps earlier (query q - 1) holds the next 4 steps at its indices 4..7.
    np.testing.assert_array_equal(call["prefix"][:, :4], np.broadcast_to(np.float32([coded(q - 1, 4 + i) for i in range(4)]), (2, 4, 3)))
    np.testing.assert_array_equal(call["prefix"][:, 4:], 0.0)
    np.testing.assert_array_equal(call["weights"], np.broadcast_to(prefix_weights(8, 2, 4, xp=np), (2, 8)))


def test_delay_distribution_is_drawn_per_inference_and_seeded():
  dist = ((0, 0.5), (3, 0.5))
  a = run(Recorder(4), strategy="sync", execute_steps=2, delay_distribution=dist, delay_seed=5)
  b = run(Recorder(4), strategy="sync", execute_steps=2, delay_distribution=dist, delay_seed=5)
  c = run(Recorder(4), strategy="sync", execute_steps=2, delay_distribution=dist, delay_seed=6)
  assert [r.wait_steps for r in a] == [r.wait_steps for r in b]
  for results, seed in ((a, 5), (c, 6)):
    sampler = DelaySampler(distribution=dist, seed=[seed, 0])  # (delay_seed, first seed of the batch).
    assert results[0].wait_steps == sum(sampler() for _ in range(results[0].inferences))
  [long] = rollout.run_episodes(Recorder(1), [0], family="pick", split="train", image_size=32, strategy="sync",
                                max_episode_steps=200, delay_distribution=dist)
  assert long.inferences == 200 and 70 <= long.wait_steps / 3 <= 130  # About half the draws are 3.


def test_strategies_needing_guidance_reject_a_policy_without_it_and_names_are_checked():
  with pytest.raises(ValueError, match="strategy='rtc' needs a policy whose __call__ takes guidance="):
    rollout.run_episodes(policies.ExpertPolicy(), [0], family="pick", split="train", strategy="rtc")
  with pytest.raises(ValueError, match="strategy='slow' is not valid"):
    rollout.run_episodes(policies.ExpertPolicy(), [0], family="pick", split="train", strategy="slow")
  with pytest.raises(ValueError, match="both given"):
    rollout.run_episodes(policies.ExpertPolicy(), [0], family="pick", split="train", strategy="sync",
                         execution="receding")
  with pytest.raises(ValueError, match="sum to 0.5"):
    rollout.run_episodes(policies.ExpertPolicy(), [0], family="pick", split="train", delay_distribution=((1, 0.5),))


def test_eval_config_runs_the_expert_under_delay_with_waits_reported():
  config = ev.eval_config(episodes_per_family=3)
  config.update(conditions=("seen",), strategy="sync", execute_steps=1, delay=2, videos_per_family=0)
  summary = ev.evaluate(policies.ExpertPolicy(), config)
  assert summary["conditions"]["seen"]["overall"]["success_rate"] >= 0.8
  for episode in summary["episodes"]:
    assert episode["wait_steps"] == 2 * episode["inferences"] == 2 * episode["length"]


@pytest.mark.slow  # Closed-loop episodes with a jitted guided sampler (~12 s).
def test_a_jax_policy_runs_hard_and_rtc_in_closed_loop_and_hard_keeps_the_frozen_actions():
  from vla_jax.inference.jax_policy import JaxPolicy
  from vla_jax.inference.testing import random_bundle
  from vla_jax.models import model_config

  config = model_config("tiny", "diffusion")
  config.image_size_px = 32
  config.head.diffusion.num_sample_steps = 3
  policy = JaxPolicy(random_bundle(config, seed=0), seed=1)
  calls = []

  class Recording:
    action_horizon = policy.action_horizon
    reset, observe = policy.reset, policy.observe

    def __call__(self, obs, scenes, *, guidance=None, prefix=None, weights=None):
      chunk = policy(obs, scenes, guidance=guidance, prefix=prefix, weights=weights)
      calls.append((guidance, prefix, weights, chunk))
      return chunk

  d = 1
  for strategy in ("hard", "rtc"):
    calls.clear()
    results = rollout.run_episodes(Recording(), [0, 1], family="push", split="train", image_size=32,
                                   max_episode_steps=8, strategy=strategy, execute_steps=2, delay=d)
    assert all(r.length == 8 and r.inferences == 4 for r in results)
    guided = [c for c in calls if c[0] == strategy]
    assert len(guided) == 3
    for _, prefix, weights, chunk in guided:
      assert np.isfinite(chunk).all()
      if strategy == "hard":  # The d frozen actions come back as they went in (env units, float32).
        np.testing.assert_allclose(chunk[:, :d], prefix[:, :d], atol=1e-5)
