"""A synchronous client for the policy server, with reconnect (robot loops, tests, benchmarks).

    client = PolicyClient("ws://127.0.0.1:8000", api_key=None)
    client.metadata["action_horizon"]
    reply = client.infer({"image": uint8 [S, S, 3], "state": float32 [D], "prompt": "push the red block"})
    reply["actions"]                      # float32 [H, A], env units
    client.observe({"image": ..., "state": ..., "prompt": ...})   # frame into the window, no actions

It speaks what openpi's `WebsocketClientPolicy` speaks (same frames, same encoding, `infer(obs)`
returning the reply map); the differences:
  - a server error raises `ServerError` with the server's text;
  - against a server that advertises them (this package's), every request carries a `request_id`,
    and a reply to an earlier request — one that arrived after its `infer` gave up on a timeout —
    is dropped instead of being returned as the answer to a later one (`late_replies_dropped`);
  - a dropped connection is reopened with bounded exponential backoff. The server kept this
    connection's observation window, so the client keeps the frames of the current episode the
    window can hold (the last T = metadata window_size) and replays them as observe-only requests,
    the first with `new_episode`, before retrying the request. The server must still serve the same
    model (model_id, normalization sha256 and artifact sha256 unchanged), else `ModelChangedError`.
    After a replay the server's `episode_step` counts from the replayed frames, and a JAX policy's
    noise counter restarts — the actions equal those of a policy that was reset and shown the
    replayed frames, not those the lost connection would have returned.

Not thread-safe: one thread owns a client (in `chunking.ChunkExecutor`, its worker thread).
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import time
from typing import Any

import numpy as np
import websockets
from websockets.sync.client import ClientConnection, connect

from vla_jax.serving import wire

logger = logging.getLogger(__name__)

# A connection that failed before or while a request was answered; a reply timeout is not one.
_CONNECTION_ERRORS = (websockets.ConnectionClosed, websockets.InvalidHandshake, OSError)
_ERROR_ID = re.compile(r"^error \[request_id=(-?\d+)\]")
# What must not change across a reconnect: the client's frames and actions mean the same thing.
_MODEL_KEYS = (("model_id",), ("normalization", "sha256"), ("artifact_sha256",))


class ServerError(RuntimeError):
  """The server answered a request with an error text frame (the message is that text)."""


class ModelChangedError(RuntimeError):
  """After a reconnect the server serves a different model than the one this client started with."""


def _lookup(metadata: dict[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    metadata = metadata.get(key) if isinstance(metadata, dict) else None
  return metadata


class PolicyClient:
  """One websocket connection = one robot's episode stream (the server keeps its observation window).

  Args:
    url: "ws://host:port".
    api_key: sent as `Authorization: Api-Key <key>`.
    timeout_s: for opening the connection and for each reply; a reply later than this raises
      TimeoutError (the connection stays open; the late reply is dropped when it comes).
    max_size: largest reply accepted.
    reconnect_attempts: connection attempts after a drop before giving up (0: never reconnect).
    reconnect_initial_delay_s, reconnect_max_delay_s: the backoff: no wait before the first
      attempt, then initial, 2 × initial, ... capped at max.
  """

  def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0, max_size: int | None = 2**24,
               reconnect_attempts: int = 8, reconnect_initial_delay_s: float = 0.2,
               reconnect_max_delay_s: float = 5.0):
    if reconnect_attempts < 0 or reconnect_initial_delay_s < 0 or reconnect_max_delay_s < reconnect_initial_delay_s:
      raise ValueError(f"reconnect_attempts={reconnect_attempts}, reconnect_initial_delay_s="
                       f"{reconnect_initial_delay_s}, reconnect_max_delay_s={reconnect_max_delay_s}: expected "
                       "attempts >= 0 and 0 <= initial delay <= max delay")
    self.url, self.timeout_s, self.max_size = url, timeout_s, max_size
    self._headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    self.reconnect_attempts = int(reconnect_attempts)
    self.reconnect_initial_delay_s, self.reconnect_max_delay_s = reconnect_initial_delay_s, reconnect_max_delay_s
    self.reconnects = 0  # Connections reopened after a drop.
    self.late_replies_dropped = 0  # Replies to earlier requests, received while waiting for a later one.
    self._ids = itertools.count(1)
    self._closed = False
    self.ws: ClientConnection | None = None
    self.metadata: dict[str, Any] = self._open()
    self._first_metadata = self.metadata
    window = self.metadata.get("window_size")
    # The frames of the current episode that the server's window may still hold: {image(s), state, prompt}.
    self._episode: collections.deque[dict[str, Any]] = collections.deque(maxlen=int(window) if window else 1)

  @property
  def supports_request_ids(self) -> bool:
    """Whether the server reads `request_id` and `infer` (its metadata lists them)."""
    observation = self.metadata.get("observation")
    return isinstance(observation, dict) and "request_id" in observation and "infer" in observation

  # ---- openpi's surface. -------------------------------------------------------------------------

  def infer(self, request: dict[str, Any]) -> dict[str, Any]:
    """One observation → the reply map (actions, episode_step, server_timing, policy_timing)."""
    return self._request(request)

  def observe(self, request: dict[str, Any]) -> dict[str, Any]:
    """One observation into the server's window, no inference → {observed, episode_step, new_episode}."""
    if not self.supports_request_ids:
      raise ServerError(f"the server at {self.url} ({self.metadata.get('protocol')}) does not take observe-only "
                        "requests (its metadata lists no 'infer' key)")
    return self._request({**request, "infer": False})

  def send(self, request: dict[str, Any]) -> None:
    """Low level: one frame out, no bookkeeping and no reconnect."""
    self.ws.send(wire.packb(request))

  def receive(self) -> dict[str, Any]:
    """Low level: the next frame in (`ServerError` for an error text)."""
    frame = self.ws.recv(timeout=self.timeout_s)
    if isinstance(frame, str):
      raise ServerError(frame)
    return wire.unpackb(frame)

  def close(self) -> None:
    self._closed = True
    if self.ws is not None:
      self.ws.close()

  def __enter__(self) -> "PolicyClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ---- Requests, reconnects. ---------------------------------------------------------------------

  def _request(self, request: dict[str, Any]) -> dict[str, Any]:
    """Sends one request and returns its reply, reconnecting (and replaying the window) on a drop."""
    is_observation = "__ctrl__" not in request
    if is_observation and self.supports_request_ids and "request_id" not in request:
      request = {**request, "request_id": next(self._ids)}
    if not is_observation or request.get("new_episode") or (
        self._episode and self._episode[-1]["prompt"] != request.get("prompt")):
      self._episode.clear()  # This request starts an episode (or ends one): nothing before it to replay.
    failures, delay = 0, self.reconnect_initial_delay_s
    while True:
      try:
        if self.ws is None:
          self._reopen()
        reply = self._exchange(request)
        break
      except _CONNECTION_ERRORS as e:
        if self._closed:
          raise ConnectionError(f"the client of {self.url} was closed") from e
        if isinstance(e, TimeoutError) and self.ws is not None and self.ws.state is websockets.State.OPEN:
          if is_observation:  # Sent: the server will push it into the window when it gets to it.
            self._remember(request)
          raise  # The server is slow, not gone: the caller decides.
        self._drop_connection()
        failures += 1
        if failures > self.reconnect_attempts:
          raise ConnectionError(f"lost the connection to {self.url} and {self.reconnect_attempts} reconnect "
                                f"attempts failed; last error: {type(e).__name__}: {e}") from e
        logger.warning("connection to %s lost (%s: %s); reconnect attempt %d of %d", self.url, type(e).__name__, e,
                       failures, self.reconnect_attempts)
        if failures > 1:
          time.sleep(delay)
          delay = min(2 * delay, self.reconnect_max_delay_s)
    if is_observation:
      self._remember(request)
    return reply

  def _remember(self, request: dict[str, Any]) -> None:
    """Keeps a frame the server's window now holds (copied: the caller may reuse its buffers)."""
    self._episode.append({**{k: np.array(v) for k, v in request.items() if k.startswith("image") or k == "state"},
                          "prompt": request["prompt"]})

  def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
    """Send, then receive until the reply to this request (earlier requests' replies are dropped)."""
    want = request.get("request_id")
    self.send(request)
    while True:
      frame = self.ws.recv(timeout=self.timeout_s)
      if isinstance(frame, str):
        match = _ERROR_ID.match(frame)
        if want is not None and match and int(match.group(1)) != want:
          self.late_replies_dropped += 1
          continue
        raise ServerError(frame)
      reply = wire.unpackb(frame)
      if want is not None and isinstance(reply, dict) and reply.get("request_id", want) != want:
        self.late_replies_dropped += 1
        continue
      return reply

  def _open(self) -> dict[str, Any]:
    # legacy=True: a plain connection object (websockets 17 deprecates calling connect() without it).
    self.ws = connect(self.url, compression=None, max_size=self.max_size, additional_headers=self._headers,
                      open_timeout=self.timeout_s, proxy=None, legacy=True)
    return wire.unpackb(self.ws.recv(timeout=self.timeout_s))

  def _drop_connection(self) -> None:
    if self.ws is not None:
      try:
        self.ws.close()
      except Exception:  # Already broken: nothing to close cleanly.
        pass
      self.ws = None

  def _reopen(self) -> None:
    """Opens a new connection, checks it serves the same model, replays the episode's frames."""
    metadata = self._open()
    for path in _MODEL_KEYS:
      before, now = _lookup(self._first_metadata, path), _lookup(metadata, path)
      if before != now:
        self._closed = True
        self._drop_connection()
        raise ModelChangedError(f"after reconnecting to {self.url} the server serves a different model: "
                                f"{'.'.join(path)} was {before!r}, is now {now!r}; this client's episode cannot "
                                "continue (start a new client for the new model)")
    self.metadata = metadata
    frames = list(self._episode)
    if frames and not self.supports_request_ids:
      logger.warning("the server at %s takes no observe-only requests: %d frames of the episode are not replayed",
                     self.url, len(frames))
      frames = []
    try:
      for i, frame in enumerate(frames):
        self._exchange({**frame, "infer": False, "new_episode": i == 0, "request_id": next(self._ids)})
    except BaseException:
      self._drop_connection()  # A half-replayed window is wrong: the next attempt starts over.
      raise
    self.reconnects += 1
    logger.info("reconnected to %s; replayed %d frame(s) of the episode", self.url, len(frames))
