"""A minimal synchronous client for the policy server (tests, benchmarks, scripts).

    client = PolicyClient("ws://127.0.0.1:8000", api_key=None)
    client.metadata["action_horizon"]
    reply = client.infer({"image": uint8 [S, S, 3], "state": float32 [D], "prompt": "push the red block"})
    reply["actions"]                      # float32 [H, A], env units

It speaks exactly what openpi's `WebsocketClientPolicy` speaks (same frames, same encoding); the
difference is that a server error raises `ServerError` with the server's text. The robot-loop
client (chunk execution at a fixed rate, asynchronous refill, reconnect) belongs on top of this.
"""

from __future__ import annotations

from typing import Any

from websockets.sync.client import ClientConnection, connect

from vla_jax.serving import wire


class ServerError(RuntimeError):
  """The server answered a request with an error text frame (the message is that text)."""


class PolicyClient:
  """One websocket connection = one robot's episode stream (the server keeps its observation window)."""

  def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0, max_size: int | None = 2**24):
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    # legacy=True: a plain connection object (websockets 17 deprecates calling connect() without it).
    self.ws: ClientConnection = connect(url, compression=None, max_size=max_size, additional_headers=headers,
                                        open_timeout=timeout_s, proxy=None, legacy=True)
    self.timeout_s = timeout_s
    self.metadata: dict[str, Any] = wire.unpackb(self.ws.recv(timeout=timeout_s))

  def send(self, request: dict[str, Any]) -> None:
    self.ws.send(wire.packb(request))

  def receive(self) -> dict[str, Any]:
    frame = self.ws.recv(timeout=self.timeout_s)
    if isinstance(frame, str):
      raise ServerError(frame)
    return wire.unpackb(frame)

  def infer(self, request: dict[str, Any]) -> dict[str, Any]:
    """One observation → the reply map (actions, episode_step, server_timing, policy_timing)."""
    self.send(request)
    return self.receive()

  def close(self) -> None:
    self.ws.close()

  def __enter__(self) -> "PolicyClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
