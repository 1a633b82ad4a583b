"""Malformed traffic never takes the server down, and a good request afterwards gets the right answer.

Default suite: ~300 generated cases against the in-thread JAX server. Slow: ≥ 10 000 cases against
an `experiments.serve` subprocess whose resident memory must stay flat, then SIGTERM → exit 0.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import websockets

from tests.serving import fuzz
from tests.serving.conftest import free_port, in_process_actions, observations, start_serve_process
from vla_jax.serving import PolicyClient, wire

PROMPT = "push the red block to the left"


class FuzzDriver:
  """Plays fuzz cases against a server and checks every outcome; `good()` checks it still serves right."""

  def __init__(self, url: str, spec, expected_first_actions: np.ndarray, frame: dict, seed: int,
               max_message_bytes: int):
    self.url, self.spec = url, spec
    self.host, self.port = url.removeprefix("ws://").rsplit(":", 1)
    self.port = int(self.port)
    self.expected, self.frame = expected_first_actions, frame
    self.messages = fuzz.message_cases(spec, seed, max_message_bytes)
    self.raws = fuzz.raw_cases(seed, max_message_bytes)
    self.client = PolicyClient(url)
    self.outcomes: collections.Counter = collections.Counter()
    self.connections = 1
    self.slowest_close_s = 0.0

  def message(self) -> None:
    case = next(self.messages)
    try:
      self.client.ws.send(case.message)
      reply = self.client.ws.recv(timeout=10)
    except websockets.ConnectionClosed as e:
      assert case.expect == "<close>", f"{case.kind}: the server closed the connection ({e})"
      assert e.rcvd is None or e.rcvd.code == 1009, f"{case.kind}: closed with {e.rcvd}, expected 1009"
      self.outcomes[f"{case.kind}: closed"] += 1
      self.client = PolicyClient(self.url)
      self.connections += 1
      return
    assert case.expect != "<close>", f"{case.kind}: an oversized message was answered"
    if case.expect == "<ack>":
      assert isinstance(reply, bytes) and "__ack__" in wire.unpackb(reply), f"{case.kind}: {reply!r:.200}"
    else:
      assert isinstance(reply, str) and reply.startswith("error: "), f"{case.kind}: no error text: {reply!r:.200}"
      assert case.expect in reply, f"{case.kind}: error {reply!r} does not mention {case.expect!r}"
    self.outcomes[f"{case.kind}: {'ack' if case.expect == '<ack>' else 'error'}"] += 1

  def raw(self) -> None:
    case = next(self.raws)
    start = time.monotonic()
    # Generous: on a loaded machine an idle-priority server can be off the CPU for seconds.
    assert fuzz.run_raw_case(self.host, self.port, case, timeout_s=60), f"{case.kind}: the server left it open"
    self.slowest_close_s = max(self.slowest_close_s, time.monotonic() - start)
    self.outcomes[f"raw {case.kind}: closed"] += 1
    self.connections += 1

  def good(self) -> None:
    reply = self.client.infer({**self.frame, "prompt": PROMPT, "new_episode": True})
    np.testing.assert_allclose(reply["actions"], self.expected, rtol=0, atol=1e-6)
    self.outcomes["good: correct"] += 1

  def run(self, count: int, raw_every: int = 20, good_every: int = 50) -> None:
    for i in range(1, count + 1):
      self.raw() if i % raw_every == 0 else self.message()
      if i % good_every == 0:
        self.good()
    self.good()

  def close(self) -> None:
    self.client.close()


def _stalled_connections(host: str, port: int) -> list:
  """A frame cut off mid-way, and a handshake never finished: neither ever answers a ping."""
  mid_frame = fuzz.raw_open(host, port)
  mid_frame.sendall(fuzz.ws_frame(bytes(1000))[:300])
  no_handshake = fuzz.raw_open(host, port, handshake=False)
  no_handshake.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
  return [mid_frame, no_handshake]


def test_malformed_requests_get_errors_and_the_server_keeps_serving(jax_server, jax_reference):
  frame = observations(jax_server.served.spec, 1, seed=30)[0]
  expected = in_process_actions(jax_reference, PROMPT, [frame])[0]
  host, port = jax_server.address
  stalled = _stalled_connections(host, port)
  started = time.monotonic()
  driver = FuzzDriver(jax_server.url, jax_server.served.spec, expected, frame, seed=0,
                      max_message_bytes=jax_server.max_message_bytes)
  try:
    driver.run(300)
    # Keepalive (1 s + 1 s here) and the handshake timeout (2 s) drop the stalled peers on their own.
    for sock in stalled:
      assert fuzz.wait_closed_by_server(sock, timeout_s=max(1.0, 15 - (time.monotonic() - started)))
  finally:
    driver.close()
    for sock in stalled:
      sock.close()
  assert sum(driver.outcomes.values()) >= 300 + 300 // 50
  assert len({k.split(":")[0] for k in driver.outcomes}) >= 25, driver.outcomes  # Most kinds came up.


def test_a_stalled_client_does_not_hold_up_others(jax_server, jax_reference):
  frame = observations(jax_server.served.spec, 1, seed=31)[0]
  expected = in_process_actions(jax_reference, PROMPT, [frame])[0]
  host, port = jax_server.address
  stalled = _stalled_connections(host, port)
  with PolicyClient(jax_server.url) as client:
    start = time.monotonic()
    reply = client.infer({**frame, "prompt": PROMPT})
    assert time.monotonic() - start < 1.0
  np.testing.assert_allclose(reply["actions"], expected, rtol=0, atol=1e-6)
  for sock in stalled:
    sock.close()


def _rss_mb(pid: int) -> float:
  status = Path(f"/proc/{pid}/status").read_text()
  return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.mark.slow
def test_ten_thousand_malformed_requests_keep_memory_flat_and_sigterm_exits_cleanly(tmp_path):
  from experiments.configs import tabletop
  from vla_jax.serving import backends

  reference = backends.from_random(tabletop.get_config("tiny").model, seed=0)  # What the subprocess serves.
  frame = observations(reference.spec, 1, seed=32)[0]
  expected = in_process_actions(reference.policy, PROMPT, [frame])[0]
  port = free_port()
  proc = start_serve_process(["--untrained", "tiny", "--ping_interval_s", "1"], port, tmp_path / "serve.log")
  try:
    url = f"ws://127.0.0.1:{port}"
    max_bytes = PolicyClient(url).metadata["max_message_bytes"]
    driver = FuzzDriver(url, reference.spec, expected, frame, seed=1, max_message_bytes=max_bytes)
    driver.run(1000)  # Warm: allocator pools and caches reach their working size.
    rss_warm = _rss_mb(proc.pid)
    stalled = []
    for _ in range(9):
      stalled += _stalled_connections("127.0.0.1", port)
      driver.run(1000)
    driver.close()
    rss_end = _rss_mb(proc.pid)
    for sock in stalled:
      assert fuzz.wait_closed_by_server(sock, timeout_s=15)
    print(f"{sum(driver.outcomes.values())} cases over {driver.connections} connections; server RSS "
          f"{rss_warm:.1f} → {rss_end:.1f} MB; slowest raw-case close {driver.slowest_close_s:.2f} s")
    assert sum(driver.outcomes.values()) >= 10_000
    assert driver.connections >= 500
    # 10 000 requests of up to 1 MiB, > 500 connections: any per-request or per-connection leak
    # would show as tens of MB.
    assert rss_end - rss_warm < 20, f"server RSS grew {rss_warm:.0f} → {rss_end:.0f} MB"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
