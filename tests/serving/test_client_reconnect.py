"""PolicyClient survives a server restart: it reconnects with backoff, refuses a different model,
replays the episode's window, and drops replies to earlier requests by request id (the one place
replies can arrive out of order: one connection is answered in order, so a reply comes late only
after its request was given up on)."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from tests.serving.conftest import PROMPTS, observations
from vla_jax.serving import PolicyClient, serve_in_background
from vla_jax.serving.client import ModelChangedError

FAST_BACKOFF = {"reconnect_attempts": 30, "reconnect_initial_delay_s": 0.05, "reconnect_max_delay_s": 0.2}


class RestartableServer:
  """A background server that can be stopped and started again on the same port."""

  def __init__(self, served, port: int = 0):
    self.served, self.port = served, port
    self._context = None

  def start(self, served=None) -> "RestartableServer":
    self._context = serve_in_background(served or self.served, port=self.port)
    server = self._context.__enter__()
    self.port = server.address[1]
    return self

  def start_later(self, delay_s: float, served=None) -> threading.Thread:
    def target() -> None:
      time.sleep(delay_s)
      self.start(served)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread

  def stop(self) -> None:
    if self._context is not None:
      context, self._context = self._context, None
      context.__exit__(None, None, None)

  @property
  def url(self) -> str:
    return f"ws://127.0.0.1:{self.port}"


@pytest.fixture
def restartable(jax_served):
  server = RestartableServer(jax_served).start()
  yield server
  server.stop()


def _frame(frame, prompt=PROMPTS[0]):
  return {**frame, "prompt": prompt}


def test_reconnects_after_a_restart_and_replays_the_window_before_the_next_inference(restartable, jax_served,
                                                                                     jax_reference):
  frames = observations(jax_served.spec, 5, seed=50)
  window = jax_served.spec.window_size
  assert window == 2  # The replay below is the last T = 2 frames.
  # After the restart the server has seen only the replayed frames 1, 2 (as a new episode) and then 3.
  jax_reference.reset([PROMPTS[0]], None)
  for f in frames[1:3]:
    jax_reference.observe({"image": f["image"][None], "state": f["state"][None]})
  want = jax_reference({"image": frames[3]["image"][None], "state": frames[3]["state"][None]}, None)[0]

  with PolicyClient(restartable.url, **FAST_BACKOFF) as client:
    for f in frames[:3]:
      client.infer(_frame(f))
    restartable.stop()
    restarted = restartable.start_later(0.3)  # The first attempts are refused; backoff until it is back.
    start = time.monotonic()
    reply = client.infer(_frame(frames[3]))
    waited_s = time.monotonic() - start
    restarted.join(30)
    assert client.reconnects == 1 and waited_s >= 0.3
    np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6)
    assert (reply["episode_step"], reply["new_episode"]) == (window + 1, False)
    assert client.infer(_frame(frames[4]))["episode_step"] == window + 2  # And on it goes, same connection.


def test_a_restarted_server_with_a_different_model_is_refused_by_name(restartable, jax_served):
  frame = observations(jax_served.spec, 1, seed=51)[0]
  with PolicyClient(restartable.url, **FAST_BACKOFF) as client:
    client.infer(_frame(frame))
    restartable.stop()
    restartable.start(dataclasses.replace(jax_served, model_id="tiny-other"))
    with pytest.raises(ModelChangedError, match="model_id was 'tiny-random', is now 'tiny-other'"):
      client.infer(_frame(frame))


def test_gives_up_after_the_configured_attempts_naming_the_server(restartable, jax_served):
  frame = observations(jax_served.spec, 1, seed=52)[0]
  client = PolicyClient(restartable.url, reconnect_attempts=3, reconnect_initial_delay_s=0.05,
                        reconnect_max_delay_s=0.1)
  client.infer(_frame(frame))
  restartable.stop()
  start = time.monotonic()
  with pytest.raises(ConnectionError, match=f"lost the connection to {restartable.url} and 3 reconnect attempts "
                                            "failed"):
    client.infer(_frame(frame))
  assert time.monotonic() - start < 5  # Bounded: 0 + 0.05 + 0.1 s of backoff, plus refused connects.
  client.close()


def test_a_late_reply_to_an_earlier_request_is_dropped_not_returned(jax_server):
  frames = observations(jax_server.served.spec, 2, seed=53)
  with PolicyClient(jax_server.url) as client:
    # Replies the client no longer waits for (as after a timed-out infer): an inference and an error.
    client.send({**_frame(frames[0]), "request_id": 10_000})
    client.send({**_frame(frames[0]), "state": np.zeros(2, np.float32), "request_id": 10_001})
    reply = client.infer(_frame(frames[1]))
    assert reply["request_id"] < 10_000 and reply["episode_step"] == 2
    assert client.late_replies_dropped == 2


def test_after_a_reply_timeout_the_late_reply_is_not_taken_for_the_next_one(jax_server):
  frames = observations(jax_server.served.spec, 2, seed=54)
  with PolicyClient(jax_server.url) as client:
    client.timeout_s = 1e-6  # No inference is that fast.
    with pytest.raises(TimeoutError):
      client.infer(_frame(frames[0]))
    client.timeout_s = 30.0
    reply = client.infer(_frame(frames[1]))
  assert client.late_replies_dropped == 1 and reply["episode_step"] == 2  # The first frame did reach the window.
