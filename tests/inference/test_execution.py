"""Chunk execution strategies under inference delay (vla_jax/inference/execution.py).

The fake chunks encode what they are: entry [n, i] of the chunk requested at env step r is
(r + i, r, n) — the env step it is meant for, the request it came from, the robot. So "aligned"
means: the action executed at env step k has first component exactly k.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vla_jax.inference import execution
from vla_jax.inference.execution import ChunkExecution, DelaySampler

N = 3


def coded_chunk(step: int, horizon: int, n: int = N) -> np.ndarray:
  chunk = np.zeros((n, horizon, 3), np.float32)
  chunk[..., 0] = step + np.arange(horizon)
  chunk[..., 1] = step
  chunk[..., 2] = np.arange(n)[:, None]
  return chunk


def drive(strategy: str, horizon: int, execute_steps: int | None, delays, num_steps: int, decay: float = 0.0):
  """Runs the per-tick loop until `num_steps` actions executed; returns (execution, ticks, requests).

  ticks: one (env step before the tick, action or None, switched) per tick; requests: one dict per
  request (step, tick, delay, the Request)."""
  ex = ChunkExecution(strategy, horizon, execute_steps, decay)
  delays = iter(delays) if not isinstance(delays, int) else iter([delays] * 10_000)
  ticks, requests = [], []
  while ex.steps < num_steps:
    ex.receive()
    if ex.wants_chunk():
      d = next(delays)
      step, tick = ex.steps, ex.ticks
      request = ex.request(d)
      requests.append(dict(step=step, tick=tick, delay=d, request=request))
      ex.submit(coded_chunk(step, horizon))
    step = ex.steps
    action = ex.act()
    ticks.append((step, action, ex.switched if action is not None else None))
  return ex, ticks, requests


def executed(ticks):
  return [(step, a, sw) for step, a, sw in ticks if a is not None]


def arrived_source(requests, tick: int) -> int:
  """Request step of the newest chunk that has arrived by `tick` (for non-ensemble strategies)."""
  return max(r["step"] for r in requests if r["tick"] + r["delay"] <= tick)


@pytest.mark.parametrize("strategy", execution.STRATEGIES)
@pytest.mark.parametrize("delay", [0, 1, 2, 3, 5])
def test_every_strategy_executes_each_chunk_index_at_the_step_it_was_computed_for(strategy, delay):
  ex, ticks, _ = drive(strategy, horizon=8, execute_steps=4, delays=delay, num_steps=40)
  actions = executed(ticks)
  assert len(actions) == 40 and ex.steps == 40
  for step, action, _ in actions:
    np.testing.assert_array_equal(action[:, 0], step)  # Index i of the chunk asked at t runs at t + i.
    np.testing.assert_array_equal(action[:, 2], np.arange(N))  # Robots are not mixed up.


@pytest.mark.parametrize("delay", [0, 1, 3, 6])
def test_sync_waits_d_ticks_per_inference_and_executes_the_first_s_actions(delay):
  ex, ticks, requests = drive("sync", horizon=8, execute_steps=4, delays=delay, num_steps=20)
  assert [r["step"] for r in requests] == [0, 4, 8, 12, 16]
  assert ex.wait_steps == delay * len(requests) == sum(a is None for _, a, _ in ticks)
  assert ex.ticks == 20 + ex.wait_steps
  for step, action, switched in executed(ticks):
    assert action[0, 1] == 4 * (step // 4)  # Chunk of the last request, indices 0..3.
    assert switched == (step > 0 and step % 4 == 0)
  # The waits sit right after each request: the robot stands still while the model thinks.
  for r in requests:
    assert [a is None for _, a, _ in ticks[r["tick"]:r["tick"] + delay]] == [True] * delay


@pytest.mark.parametrize("strategy", ["naive_async", "hard", "rtc", "conditioned"])
@pytest.mark.parametrize("delay", [1, 2, 4])
def test_async_strategies_keep_executing_and_switch_to_the_new_chunk_on_arrival(strategy, delay):
  ex, ticks, requests = drive(strategy, horizon=8, execute_steps=4, delays=delay, num_steps=30)
  assert [r["step"] for r in requests] == list(range(0, 30, 4))  # Every s steps, from the current step.
  assert ex.wait_steps == delay  # Only the first chunk of the episode is waited for.
  switches = []
  for tick, (step, action, switched) in enumerate(ticks):
    if action is None:
      continue
    assert action[0, 1] == arrived_source(requests, tick)
    if switched:
      switches.append(step)
  assert switches == [r + delay for r in range(4, 30 - delay, 4)]  # On arrival: t + d.


def test_a_delay_longer_than_the_plan_makes_the_robot_wait_and_requests_stay_one_at_a_time():
  # H = 4, s = 2, d = 5: each chunk covers 4 steps, but the next one needs 5 ticks.
  ex, ticks, requests = drive("naive_async", horizon=4, execute_steps=2, delays=5, num_steps=16)
  for a, b in zip(requests, requests[1:]):
    assert b["tick"] >= a["tick"] + a["delay"]  # Never two inferences in flight.
  assert ex.wait_steps == sum(a is None for _, a, _ in ticks) > 5
  for step, action, _ in executed(ticks):
    assert action[0, 0] == step


def test_ensemble_under_delay_averages_the_arrived_predictions_for_the_step():
  ex, ticks, requests = drive("ensemble", horizon=6, execute_steps=None, delays=2, num_steps=20)
  for tick, (step, action, switched) in enumerate(ticks):
    if action is None:
      continue
    sources = [r["step"] for r in requests if r["tick"] + r["delay"] <= tick and 0 <= step - r["step"] < 6]
    np.testing.assert_allclose(action[:, 1], np.mean(sources), rtol=1e-6)
  # With d = 2 the model is busy for 2 ticks: after the first chunk (waited for at step 0), a
  # request from each new observation the model is free for — every 2 steps.
  assert [r["step"] for r in requests][:5] == [0, 1, 3, 5, 7] and ex.wait_steps == 2


def test_at_delay_zero_sync_and_naive_async_are_receding_horizon_and_ensemble_asks_every_step():
  sync = executed(drive("sync", 8, 3, 0, 24)[1])
  naive = executed(drive("naive_async", 8, 3, 0, 24)[1])
  for (step, a, sw), (_, b, sw2) in zip(sync, naive):
    np.testing.assert_array_equal(a, b)
    assert a[0, 1] == 3 * (step // 3) and sw == sw2
  ex, ticks, requests = drive("ensemble", 8, None, 0, 10)
  assert [r["step"] for r in requests] == list(range(10)) and ex.wait_steps == 0
  assert execution.check_strategy("receding") == "sync"


@pytest.mark.parametrize("strategy", execution.GUIDED)
@pytest.mark.parametrize("delay", [0, 2, 4])
def test_guided_requests_carry_the_plan_for_the_next_h_steps_and_the_soft_mask(strategy, delay):
  from vla_jax.models.heads.realtime import prefix_weights

  horizon, s = 16, 8
  _, _, requests = drive(strategy, horizon, s, delays=delay, num_steps=40)
  first = requests[0]["request"]
  assert first.guidance is None and first.policy_kwargs() == {}  # Nothing planned yet: plain sampling.
  for previous, r in zip(requests, requests[1:]):
    request = r["request"]
    assert request.guidance == strategy and request.delay == delay
    assert request.prefix.shape == (N, horizon, 3) and request.weights.shape == (N, horizon)
    planned = horizon - s  # The plan asked s steps ago covers the next H - s steps.
    np.testing.assert_array_equal(request.prefix[:, :planned, 0], np.broadcast_to(r["step"] + np.arange(planned), (N, planned)))
    np.testing.assert_array_equal(request.prefix[:, :planned, 1], previous["step"])
    np.testing.assert_array_equal(request.prefix[:, planned:], 0.0)
    want = prefix_weights(horizon, delay, s, xp=np)
    np.testing.assert_array_equal(request.weights, np.broadcast_to(want, (N, horizon)))
    assert (request.weights[:, :delay] == 1.0).all() and (request.weights[:, planned:] == 0.0).all()
    assert set(request.policy_kwargs()) == {"guidance", "prefix", "weights"}


def test_naive_async_requests_carry_nothing():
  _, _, requests = drive("naive_async", 8, 4, delays=2, num_steps=20)
  assert all(r["request"].policy_kwargs() == {} for r in requests)


def test_delay_sampler_is_fixed_or_draws_from_the_distribution_seeded():
  assert DelaySampler(4).fixed and [DelaySampler(4)() for _ in range(3)] == [4, 4, 4]
  dist = ((1, 0.2), (4, 0.5), (6, 0.3))
  draws = [DelaySampler(distribution=dist, seed=7) for _ in range(2)]
  a, b = ([s() for _ in range(5000)] for s in draws)
  assert a == b  # Same seed, same draws.
  assert a != [DelaySampler(distribution=dist, seed=8)() for _ in range(5000)]
  values, counts = np.unique(a, return_counts=True)
  assert values.tolist() == [1, 4, 6]
  np.testing.assert_allclose(counts / len(a), [0.2, 0.5, 0.3], atol=0.025)


@pytest.mark.parametrize("kwargs, message", [
    (dict(delay=-1), "delay=-1 is not valid"),
    (dict(delay=2, distribution=((1, 1.0),)), "are both set"),
    (dict(distribution=((1, 0.5), (2, 0.4))), "sum to 0.9"),
    (dict(distribution=((1.5, 1.0),)), r"entries \[\(1.5, 1.0\)\] are not valid"),
])
def test_delay_sampler_rejects_bad_settings_naming_them(kwargs, message):
  with pytest.raises(ValueError, match=message):
    DelaySampler(**kwargs)


def test_bad_strategy_settings_raise_clear_errors():
  with pytest.raises(ValueError, match=r"strategy='smooth' is not valid; expected one of \['sync'"):
    ChunkExecution("smooth", 4)
  with pytest.raises(ValueError, match="execute_steps=0 is not valid"):
    ChunkExecution("sync", 4, 0)
  ex = ChunkExecution("rtc", 4, 2)
  with pytest.raises(RuntimeError, match="call request"):
    ex.submit(coded_chunk(0, 4))
  ex.request(1)
  with pytest.raises(ValueError, match=r"chunk has shape \(3, 5, 3\); expected \[N, 4, A\]"):
    ex.submit(coded_chunk(0, 5))
  with pytest.raises(RuntimeError, match="already in flight"):
    ex.request(1)


def test_module_imports_without_jax():
  code = ("import sys; import vla_jax.inference.execution as e; "
          "e.ChunkExecution('ensemble', 4); assert 'jax' not in sys.modules, 'jax imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_every_layer_names_the_same_guided_samplers():
  """The model's guided samplers, the execution strategies that use them, the export config's
  choices and the ONNX file names are four tuples (the JAX-free layers must not import the model's);
  they must name the same modes."""
  from vla_jax.export.config import GUIDED_SAMPLERS
  from vla_jax.inference.artifacts import GUIDED_FILES
  from vla_jax.models.heads import realtime

  assert set(execution.GUIDED) == set(realtime.MODES) == set(GUIDED_SAMPLERS) == set(GUIDED_FILES)
