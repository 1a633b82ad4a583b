"""Chunk execution for a robot loop (vla_jax/serving/chunking.py) and the protocol keys it uses.

The synchronous modes must execute exactly what the in-process rollout executes; the async mode is
driven by a fake source whose replies the test releases, so alignment, stale replies, starvation
and shutdown are checked without timing luck.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.serving.conftest import PROMPTS, SEED, make_jax_policy, observations
from vla_jax.serving import PolicyClient, wire
from vla_jax.serving.chunking import ChunkExecutor, ChunkingConfig, LocalSource, RemoteSource

H = 4  # The fake source's chunk length (the tiny policy's too).


# ---- The protocol's optional keys: request_id and infer. ---------------------------------------------


def test_metadata_lists_request_id_and_infer_as_optional_keys(jax_server):
  observation = jax_server.metadata["observation"]
  assert observation["request_id"]["optional"] and observation["infer"] == {"dtype": "bool", "optional": True,
                                                                              "default": True}


def test_request_id_is_echoed_in_replies_and_in_error_texts(jax_server):
  frame = observations(jax_server.served.spec, 1, seed=40)[0]
  with PolicyClient(jax_server.url) as client:
    client.send({**frame, "prompt": PROMPTS[0], "request_id": 7})
    assert client.receive()["request_id"] == 7
    client.send({**frame, "prompt": PROMPTS[0], "request_id": 8, "infer": False})
    assert client.receive() == {"observed": True, "episode_step": 2, "new_episode": False, "request_id": 8}
    client.send({**frame, "state": np.arange(5), "prompt": PROMPTS[0], "request_id": 9})
    assert client.ws.recv(timeout=10).startswith("error [request_id=9]: key 'state': expected float32 [5]")
    client.send({**frame, "prompt": PROMPTS[0], "request_id": "9"})
    assert client.ws.recv(timeout=10).startswith("error: key 'request_id': expected an int, got str")
    client.send({**frame, "prompt": PROMPTS[0]})  # Without an id: openpi's reply, nothing added.
    assert "request_id" not in client.receive()


def test_observe_only_then_infer_equals_in_process_policy_that_observed_the_same_frames(jax_server, jax_reference):
  frames = observations(jax_server.served.spec, 4, seed=41)
  jax_reference.reset([PROMPTS[1]], None)
  for frame in frames[:-1]:
    jax_reference.observe({"image": frame["image"][None], "state": frame["state"][None]})
  want = jax_reference({"image": frames[-1]["image"][None], "state": frames[-1]["state"][None]}, None)[0]
  with PolicyClient(jax_server.url) as client:
    client.infer({**frames[0], "prompt": PROMPTS[0]})  # Another episode first: the prompt change resets.
    observed = [client.observe({**f, "prompt": PROMPTS[1]}) for f in frames[:-1]]
    reply = client.infer({**frames[-1], "prompt": PROMPTS[1]})
  assert [(o["observed"], o["episode_step"], o["new_episode"]) for o in observed] == [
      (True, 1, True), (True, 2, False), (True, 3, False)]
  assert "actions" not in observed[0] and reply["episode_step"] == 4 and not reply["new_episode"]
  np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6)


def test_malformed_infer_flag_is_an_error_naming_the_key(jax_server):
  frame = observations(jax_server.served.spec, 1, seed=42)[0]
  with PolicyClient(jax_server.url) as client:
    client.send({**frame, "prompt": PROMPTS[0], "infer": 0, "request_id": 3})
    assert client.ws.recv(timeout=10) == "error [request_id=3]: key 'infer': expected a bool, got int"


@pytest.mark.parametrize("change, message", [
    ({"prefix_weights": None}, r"keys \['guidance', 'prefix_actions'\] given without \['prefix_weights'\]"),
    ({"guidance": "soft"}, r"key 'guidance': expected one of \['rtc', 'hard'\] \(what this policy can sample\), got 'soft'"),
    ({"prefix_actions": np.zeros((4, 4), np.float32)}, r"key 'prefix_actions': expected float32 \[4, 3\], got float32 \[4, 4\]"),
    ({"prefix_weights": np.full(4, np.nan, np.float32)}, r"key 'prefix_weights': non-finite values"),
    ({"prefix_weights": np.full(4, 1.5, np.float32)}, r"key 'prefix_weights': expected values in \[0, 1\]"),
    ({"infer": False}, r"an observe-only request \(infer: false\) cannot carry guidance"),
])
def test_guidance_keys_are_checked_and_errors_name_the_key(change, message):
  from vla_jax.serving import protocol

  spec = protocol.PolicySpec(image_size_px=8, state_dim=5, action_horizon=4, action_dim=3, window_size=1,
                             image_keys=("image",), cameras=("primary",), guidance=("rtc", "hard"))
  request = {"image": np.zeros((8, 8, 3), np.uint8), "state": np.zeros(5, np.float32), "prompt": "p",
             "guidance": "rtc", "prefix_actions": np.ones((4, 3), np.float64), "prefix_weights": np.ones(4, np.float32)}
  parsed = protocol.parse_request(wire.packb(request), spec)
  assert parsed.guidance == "rtc" and parsed.prefix_actions.dtype == np.float32 and parsed.prefix_weights.shape == (4,)
  bad = {k: v for k, v in {**request, **change}.items() if v is not None}
  with pytest.raises(protocol.RequestError, match=message):
    protocol.parse_request(wire.packb(bad), spec)


# ---- Configuration. -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "open_loop"}, "mode='open_loop' is not valid; expected one of"),
    ({"execute_steps": 0}, "execute_steps=0 is not valid"),
    ({"refill_threshold": -1}, "refill_threshold=-1 is not valid"),
    ({"ensemble_decay": float("nan")}, "ensemble_decay=nan is not valid"),
    ({"ensemble_decay": -0.5}, "ensemble_decay=-0.5 is not valid"),
    ({"mode": "async", "guidance": "soft"}, "guidance='soft' is not valid with mode='async'"),
    ({"guidance": "rtc"}, "guidance='rtc' is not valid with mode='receding'; expected None, or one of"),
    ({"mode": "async", "guidance": "rtc", "guided_delay": -1}, "guided_delay=-1 is not valid"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ChunkingConfig(**kwargs)


def test_executor_rejects_a_threshold_that_is_not_below_the_horizon_and_a_mismatched_horizon():
  with pytest.raises(ValueError, match="refill_threshold=4 is not valid for chunks of 4 actions"):
    ChunkExecutor(FakeSource(), H, ChunkingConfig(mode="async", refill_threshold=4))
  with pytest.raises(ValueError, match="action_horizon=8, but the source returns chunks of 4 actions"):
    ChunkExecutor(FakeSource(), 8, ChunkingConfig())


def test_act_needs_a_reset_and_an_image_and_state():
  with ChunkExecutor(FakeSource(), H, ChunkingConfig()) as executor:
    with pytest.raises(RuntimeError, match=r"reset\(prompt\) before the first act"):
      executor.act(_obs(0))
    executor.reset("p")
    with pytest.raises(ValueError, match=r"expected a dict with keys \['image', 'state'\], got \['image'\]"):
      executor.act({"image": _obs(0)["image"]})


# ---- Synchronous modes: the same actions as the in-process rollout. -----------------------------------


@pytest.mark.parametrize("config", [ChunkingConfig("receding", execute_steps=3),
                                    ChunkingConfig("ensemble", ensemble_decay=0.3)], ids=["receding", "ensemble"])
def test_synchronous_modes_execute_exactly_what_run_episodes_executes(config, tiny_bundle, monkeypatch):
  from vla_jax.envs import VectorTabletopEnv
  from vla_jax.evaluation import rollout

  executed: list[np.ndarray] = []

  class RecordingEnv(VectorTabletopEnv):
    def step(self, actions):
      executed.append(np.array(actions[0]))
      return super().step(actions)

  monkeypatch.setattr(rollout, "VectorTabletopEnv", RecordingEnv)
  policy = make_jax_policy(tiny_bundle)
  env_kwargs = {"task_family": "push", "split": "train", "image_size": 32, "max_episode_steps": 9}
  [result] = rollout.run_episodes(policy, [SEED], family="push", split="train", num_envs=1, image_size=32,
                                  max_episode_steps=9, execution=config.mode, execute_steps=config.execute_steps,
                                  ensemble_decay=config.ensemble_decay)
  expected, executed[:] = list(executed), []

  venv = RecordingEnv(1, **env_kwargs)
  obs, infos = venv.reset([SEED])
  with ChunkExecutor(LocalSource(policy), policy.action_horizon, config) as executor:
    executor.reset(infos[0]["instruction"])
    while not venv.done.all():
      obs, *_ = venv.step(executor.act({"image": obs["image"][0], "state": obs["state"][0]})[None])
    stats = executor.stats()
  assert len(executed) == len(expected) == result.length == 9
  np.testing.assert_array_equal(np.stack(executed), np.stack(expected))
  queries = 3 if config.mode == "receding" else 9
  assert (stats["requests"], stats["observed"], stats["ticks"]) == (queries, 9 - queries, 9)


def test_remote_source_executes_what_a_local_source_executes(jax_server, tiny_bundle):
  frames = observations(jax_server.served.spec, 7, seed=43)
  config = ChunkingConfig("receding", execute_steps=3)
  actions = {}
  for name, source in (("local", LocalSource(make_jax_policy(tiny_bundle))),
                       ("remote", RemoteSource(PolicyClient(jax_server.url)))):
    with ChunkExecutor(source, H, config) as executor:
      executor.reset(PROMPTS[0])
      actions[name] = np.stack([executor.act(f) for f in frames])
  assert actions["remote"].dtype == np.float32 and actions["remote"].shape == (7, 3)
  np.testing.assert_allclose(actions["remote"], actions["local"], rtol=0, atol=1e-6)


def test_async_over_the_server_feeds_every_frame_to_the_window_once(jax_server):
  frames = observations(jax_server.served.spec, 10, seed=44)
  source = RemoteSource(PolicyClient(jax_server.url))
  with ChunkExecutor(source, H, ChunkingConfig("async", refill_threshold=1)) as executor:
    executor.reset(PROMPTS[1])
    for frame in frames:
      assert executor.act(frame).shape == (3,)
      time.sleep(0.005)
    _wait_until(lambda: executor.stats()["requests"] + executor.stats()["observed"] == 10)
    stats = executor.stats()
    # The worker is idle now: one more frame on the same connection tells how many the server saw.
    check = source.client.observe({**frames[0], "prompt": PROMPTS[1]})
  assert (check["episode_step"], check["new_episode"]) == (11, False)
  assert stats["stale_replies_dropped"] == 0 and stats["ticks"] == 10 and stats["requests"] >= 10 // H
  assert len(stats["request_latency_ms"]) == stats["requests"] and stats["source"]["reconnects"] == 0


# ---- Async mode with a fake source whose replies the test releases. ------------------------------------


class FakeSource:
  """Chunks that say where they come from: action i of the chunk for the frame of tick t in episode
  e is e * 1000 + t * 10 + i (a frame's state[0] carries its tick). Inference call n (0-based)
  blocks while n is in `hold`, until `release(n)`."""

  action_horizon = H

  def __init__(self, hold=(), fail_at: int | None = None):
    self.released = {n: threading.Event() for n in hold}
    self.entered = {n: threading.Event() for n in hold}
    self.fail_at = fail_at
    self.calls: list[tuple] = []
    self.guided: list[dict] = []  # Each inference call's real-time chunking fields ({} for none).
    self.episode = self.infers = 0
    self.closed = False

  def reset(self, prompt):
    self.episode += 1
    self.calls.append(("reset", prompt))

  def observe(self, observation):
    self.calls.append(("observe", self.episode, int(observation["state"][0])))

  def infer(self, observation, **guided):
    n, t, episode = self.infers, int(observation["state"][0]), self.episode
    self.infers += 1
    self.calls.append(("infer", episode, t))
    self.guided.append(guided)
    if n == self.fail_at:
      raise ConnectionError("the fake server went away")
    if n in self.released:
      self.entered[n].set()
      assert self.released[n].wait(10), f"inference call {n} was never released"
    return (episode * 1000 + t * 10 + np.arange(H, dtype=np.float32))[:, None]

  def release(self, n: int) -> None:
    self.released[n].set()

  def close(self):
    self.closed = True
    for event in self.released.values():
      event.set()


def _obs(tick: int) -> dict[str, np.ndarray]:
  return {"image": np.zeros((2, 2, 3), np.uint8), "state": np.array([tick], np.float32)}


def _wait_until(condition, timeout_s: float = 10.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.001)


def _act_in_thread(executor: ChunkExecutor, observation) -> tuple[threading.Thread, list]:
  out: list = []
  thread = threading.Thread(target=lambda: out.append(executor.act(observation)), daemon=True)
  thread.start()
  return thread, out


def _async(source, refill_threshold: int) -> ChunkExecutor:
  return ChunkExecutor(source, H, ChunkingConfig(mode="async", refill_threshold=refill_threshold))


def test_async_chunk_is_aligned_to_the_tick_of_its_observation():
  source = FakeSource(hold={1})
  with _async(source, refill_threshold=1) as executor:
    executor.reset("p")
    assert executor.act(_obs(0))[0] == 1000  # Starved: waits for the chunk of frame 0.
    assert [executor.act(_obs(t))[0] for t in (1, 2)] == [1001, 1002]  # 1 left after tick 2: asks with frame 2.
    assert source.entered[1].wait(10)
    assert executor.act(_obs(3))[0] == 1003  # Still the first chunk; frame 3 waits to be sent.
    source.release(1)
    _wait_until(lambda: executor.stats()["requests"] == 2)
    # The chunk of frame 2 arrives when tick 4 is next: its actions for ticks 2 and 3 are skipped.
    assert executor.act(_obs(4))[0] == 1022  # 1 left after tick 4: asks with frame 4.
    _wait_until(lambda: executor.stats()["requests"] == 3)
    assert [executor.act(_obs(t))[0] for t in (5, 6)] == [1041, 1042]  # Frame 4's chunk, from index 1.
    _wait_until(lambda: executor.stats()["requests"] == 4)
    stats = executor.stats()
  assert source.calls == [("reset", "p"), ("infer", 1, 0), ("observe", 1, 1), ("infer", 1, 2), ("observe", 1, 3),
                          ("infer", 1, 4), ("observe", 1, 5), ("infer", 1, 6)]  # Every frame once, in order.
  assert (stats["ticks"], stats["starved_ticks"], stats["stale_replies_dropped"]) == (7, 1, 0)


def test_async_chunk_arriving_with_few_actions_left_asks_again_with_the_newest_frame():
  source = FakeSource(hold={1})
  with _async(source, refill_threshold=2) as executor:
    executor.reset("p")
    executor.act(_obs(0))
    executor.act(_obs(1))  # 2 left after tick 1: asks with frame 1.
    assert source.entered[1].wait(10)
    executor.act(_obs(2))
    source.release(1)  # Frame 1's chunk lands with 2 actions left (ticks 3, 4): frame 2, unsent, is asked.
    _wait_until(lambda: executor.stats()["requests"] == 3)
    assert executor.act(_obs(3))[0] == 1021  # Frame 2's chunk replaced frame 1's, at index 3 - 2.
    _wait_until(lambda: executor.stats()["requests"] == 4)  # 2 left after tick 3: asks with frame 3.
  assert source.calls == [("reset", "p"), ("infer", 1, 0), ("infer", 1, 1), ("infer", 1, 2), ("infer", 1, 3)]


def test_async_reply_for_an_episode_ended_by_reset_is_never_executed():
  source = FakeSource(hold={1})
  executor = _async(source, refill_threshold=2)
  try:
    executor.reset("p")
    executor.act(_obs(0))
    executor.act(_obs(1))  # Asks with frame 1; the reply is held.
    assert source.entered[1].wait(10)
    executor.act(_obs(2))
    executor.reset("q")
    thread, out = _act_in_thread(executor, _obs(0))  # Starves: the worker is still in the old request.
    time.sleep(0.05)
    assert thread.is_alive()
    source.release(1)
    thread.join(10)
    assert out[0][0] == 2000  # Episode 2's own chunk, not the old one's 1010 + ...
    assert [executor.act(_obs(t))[0] // 1000 for t in range(1, 6)] == [2] * 5
    stats = executor.stats()
  finally:
    executor.close()
  assert stats["stale_replies_dropped"] == 1 and stats["dropped"] == {"previous_episode": 1}
  # Frame 2 of the ended episode was never sent: its window was about to be reset anyway.
  assert source.calls[:5] == [("reset", "p"), ("infer", 1, 0), ("infer", 1, 1), ("reset", "q"), ("infer", 2, 0)]


def test_async_starved_tick_waits_for_the_reply_in_flight_and_is_counted():
  source = FakeSource(hold={1})
  with _async(source, refill_threshold=0) as executor:
    executor.reset("p")
    assert [executor.act(_obs(t))[0] for t in range(4)] == [1000, 1001, 1002, 1003]  # Asks with frame 3.
    thread, out = _act_in_thread(executor, _obs(4))
    time.sleep(0.1)
    source.release(1)
    thread.join(10)
    stats = executor.stats()
  assert out[0][0] == 1031  # Frame 3's chunk, index 4 - 3.
  assert stats["starved_ticks"] == 2 and stats["starved_wait_ms"][-1] >= 90
  assert stats["requests"] == 2 and len(stats["request_latency_ms"]) == 2 and stats["request_latency_ms"][1] >= 90


def test_async_close_stops_the_worker_even_while_a_reply_is_in_flight():
  source = FakeSource(hold={1})
  executor = _async(source, refill_threshold=2)
  executor.reset("p")
  executor.act(_obs(0))
  executor.act(_obs(1))
  assert source.entered[1].wait(10)
  executor.close()
  assert source.closed and not executor._worker.is_alive()
  assert not any(t.name == "vla-chunk-executor" for t in threading.enumerate())
  with pytest.raises(RuntimeError, match="closed"):
    executor.act(_obs(2))
  executor.close()  # Idempotent.


def test_async_source_failure_is_raised_by_the_next_act():
  source = FakeSource(fail_at=1)
  with _async(source, refill_threshold=2) as executor:
    executor.reset("p")
    executor.act(_obs(0))
    executor.act(_obs(1))  # Asks with frame 1: that call fails on the worker.
    _wait_until(lambda: executor._error is not None)
    with pytest.raises(RuntimeError, match="chunk source failed .*the fake server went away"):
      executor.act(_obs(2))


def test_async_with_guidance_sends_the_queued_plan_frozen_for_the_measured_delay():
  """Real-time chunking from the robot's side: each request after the first carries the queue's plan
  aligned to the request's tick (as the simulator's strategies build it) and the soft mask whose
  frozen part is the largest delay measured so far — ticks executed while a reply was computed."""
  from vla_jax.models.heads.realtime import prefix_weights

  source = FakeSource(hold={1, 2})
  config = ChunkingConfig(mode="async", refill_threshold=2, guidance="hard")
  with ChunkExecutor(source, H, config) as executor:
    executor.reset("p")
    executor.act(_obs(0))  # Starved for the first chunk (no plan yet: plain sampling).
    executor.act(_obs(1))  # 2 left after tick 1: asks with frame 1; its reply is held ...
    assert source.entered[1].wait(10)
    executor.act(_obs(2))
    source.release(1)  # ... until tick 2 has executed: a delay of 2 ticks.
    _wait_until(lambda: executor.stats()["requests"] == 2)
    _wait_until(lambda: source.entered[2].is_set())  # Frame 2 (unsent, 2 left) is asked next.
    source.release(2)
    _wait_until(lambda: executor.stats()["requests"] == 3)
    stats = executor.stats()
  assert source.guided[0] == {}
  first, second = source.guided[1], source.guided[2]
  # Frame 1's request: the first chunk (1000 + i) from index 1 on, frozen for 1 tick (nothing
  # measured before it but the starved first reply, delay 0: at least 1, the request's own tick).
  assert first["guidance"] == "hard"
  np.testing.assert_array_equal(first["prefix"][:, 0], [1001, 1002, 1003, 0])
  np.testing.assert_array_equal(first["weights"], prefix_weights(H, 1, 1, xp=np))
  # Frame 2's request: frame 1's chunk (1010 + i) from index 1, frozen for the 2 measured ticks.
  assert stats["delay_ticks"][:2] == [0, 2]
  np.testing.assert_array_equal(second["prefix"][:, 0], [1011, 1012, 1013, 0])
  np.testing.assert_array_equal(second["weights"], prefix_weights(H, 2, 1, xp=np))


def test_guided_requests_through_the_server_keep_the_prefix_and_unsupported_modes_are_refused(jax_server):
  """Over the wire: the server lists the modes its policy can sample, a "hard" request returns the
  frozen actions exactly as sent (env units), and a mode it cannot sample is refused — by the server
  naming the choices, and by the executor before anything is sent."""
  spec = jax_server.served.spec
  observation = jax_server.metadata["observation"]
  assert observation["guidance"]["choices"] == ["rtc", "hard"]  # The tiny test policy has no prefix conditioning.
  frame = observations(spec, 1, seed=43)[0]
  from vla_jax.inference.policy_fn import normalisation

  a = normalisation(jax_server.served.policy.bundle)["action"]  # A prefix inside the bounds: not clipped.
  unit = np.linspace(-0.9, 0.9, spec.action_horizon * spec.action_dim).reshape(spec.action_horizon, spec.action_dim)
  prefix = (a.offset + a.scale * unit).astype(np.float32)
  weights = np.zeros(spec.action_horizon, np.float32)
  weights[:2] = 1.0
  with PolicyClient(jax_server.url) as client:
    reply = client.infer({**frame, "prompt": PROMPTS[0], "guidance": "hard", "prefix_actions": prefix,
                          "prefix_weights": weights})
    np.testing.assert_allclose(reply["actions"][:2], prefix[:2], atol=1e-5)
    client.send({**frame, "prompt": PROMPTS[0], "guidance": "conditioned", "prefix_actions": prefix,
                 "prefix_weights": weights, "request_id": 5})
    assert client.ws.recv(timeout=10) == ("error [request_id=5]: key 'guidance': expected one of ['rtc', 'hard'] "
                                          "(what this policy can sample), got 'conditioned'")
    with pytest.raises(ValueError, match=r"guidance='conditioned', but the policy server can sample only \['rtc', 'hard'\]"):
      ChunkExecutor(RemoteSource(client), spec.action_horizon, ChunkingConfig(mode="async", guidance="conditioned"))


@pytest.mark.slow  # Compiles the tiny policy's RTC and hard samplers (~5 s).
def test_guided_warm_up_compiles_every_listed_sampler_before_the_first_request(tiny_bundle):
  """A server warms the samplers it lists, so a guided client does not measure a compile as its
  inference delay (and freeze too long a prefix for its next requests)."""
  from vla_jax.serving import backends

  served = backends.from_jax_policy(make_jax_policy(tiny_bundle), model_id="tiny-random")
  served.warm_up(guided=False)
  assert set(served.policy._samplers) == {None}
  served.warm_up()
  assert set(served.policy._samplers) == {None, "rtc", "hard"} == {None, *served.spec.guidance}
