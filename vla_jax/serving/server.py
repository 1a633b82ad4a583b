"""The policy server: websockets + msgpack-numpy, wire-compatible with openpi's policy server.

    served = backends.from_checkpoint("runs/x/checkpoints/6000")   # or backends.from_export(dir)
    PolicyServer(served, port=8000).run()                          # until SIGTERM / Ctrl-C

On connect the server sends one binary frame, the metadata map (`ServedPolicy.metadata`); then
each binary frame from the client is one observation and gets one reply (protocol.py): an action
chunk, or for an observe-only request (`infer: false`) just the episode step. Failures of a request
are text frames "error: ..." and the connection stays usable — openpi's client raises them as
RuntimeError. This is openpi's `WebsocketPolicyServer` protocol, so
`openpi_client.WebsocketClientPolicy` works unmodified.

What keeps it safe to leave running next to a robot:
  - binds 127.0.0.1 unless told otherwise; with `api_key` the opening handshake must carry
    `Authorization: Api-Key <key>` (else HTTP 401, before any websocket exists);
  - bounded memory: incoming messages ≤ `max_message_bytes` (bigger ones close the connection with
    1009), at most `MAX_QUEUED_FRAMES` frames buffered per connection, at most `max_connections`
    connections (more get HTTP 503), and per-connection state is one observation window that goes
    away with the connection;
  - clients that stall (mid-frame or between frames) are dropped by websocket keepalive pings
    (`ping_interval_s` / `ping_timeout_s`); handshakes that stall, after `open_timeout_s`;
  - inference runs on one worker thread, off the event loop: the loop keeps answering pings,
    /healthz and malformed requests while a chunk is computed. One thread: concurrent calls would
    only queue for the same cores, and the instruction encoders' caches expect one caller at a time;
  - `GET /healthz` answers 200 "ok" (no key needed: it says nothing about the model);
  - SIGTERM / SIGINT close every connection with 1001 (going away), let a running inference
    finish, and return, so the process exits 0.

Timing fields of each reply (milliseconds): server_timing.infer_ms — from the request frame's
arrival to the reply being ready (decode + checks + waiting for the worker + the policy);
decode_ms, queue_ms (waiting for the worker thread), prev_total_ms (the previous inference request's
arrival → reply sent, as openpi reports it); policy_timing.infer_ms — the policy call alone
(window update, sampling, un-normalisation), reset_ms when the request started an episode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterator

import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from vla_jax.serving import protocol, wire

if TYPE_CHECKING:  # Not at run time: a client importing vla_jax.serving should not load JAX.
  from vla_jax.serving.backends import ServedPolicy, Session

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_QUEUED_FRAMES = 4  # Requests and replies alternate: a well-behaved client has one in flight.
HEALTH_PATH = "/healthz"
OPENPI_CONTROLS = ("episode_start", "episode_end")


def default_max_message_bytes(spec: protocol.PolicySpec) -> int:
  """Room for a well-formed request and then some (≥ 1 MiB); anything bigger is not an observation."""
  return max(2**20, 2 * spec.request_bytes())


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


class PolicyServer:
  """Serves one `ServedPolicy` over websockets (see the module docstring).

  Args:
    served: the policy (`vla_jax.serving.backends.from_checkpoint` / `from_export` / `from_jax_policy`).
    host, port: where to listen; port 0 picks a free port (see `address` once serving).
    api_key: if set, handshakes without `Authorization: Api-Key <api_key>` are refused (HTTP 401).
    max_message_bytes: largest accepted request (default `default_max_message_bytes(spec)`).
    max_connections: connections served at once; further handshakes get HTTP 503.
    ping_interval_s, ping_timeout_s: keepalive; a client silent for longer is disconnected.
    open_timeout_s: time allowed for the opening handshake.
  """

  def __init__(self, served: ServedPolicy, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
               api_key: str | None = None, max_message_bytes: int | None = None, max_connections: int = 16,
               ping_interval_s: float = 20.0, ping_timeout_s: float = 20.0, open_timeout_s: float = 10.0,
               warm_up_guided: bool = True):
    if api_key is not None and not api_key:
      raise ValueError("api_key is empty; pass None for no key")
    self.served = served
    self.warm_up_guided = bool(warm_up_guided)  # Also compile the real-time chunking samplers before listening.
    self.host, self.port = host, int(port)
    self.api_key = api_key
    self.max_message_bytes = int(max_message_bytes or default_max_message_bytes(served.spec))
    if self.max_message_bytes < served.spec.request_bytes():
      raise ValueError(f"max_message_bytes={self.max_message_bytes} is smaller than one request of this policy "
                       f"(~{served.spec.request_bytes()} bytes)")
    self.max_connections = int(max_connections)
    self.ping_interval_s, self.ping_timeout_s, self.open_timeout_s = ping_interval_s, ping_timeout_s, open_timeout_s
    self.metadata = served.metadata(self.max_message_bytes)
    self._metadata_frame = wire.packb(self.metadata)
    self.address: tuple[str, int] | None = None  # (host, port) once listening.
    self.active_connections = 0
    self.connections_served = 0
    self._loop: asyncio.AbstractEventLoop | None = None
    self._stop: asyncio.Event | None = None
    self._executor: ThreadPoolExecutor | None = None

  @property
  def url(self) -> str:
    if self.address is None:
      raise RuntimeError("the server is not listening yet")
    return f"ws://{self.address[0]}:{self.address[1]}"

  # ---- Lifecycle. -------------------------------------------------------------------------------

  async def serve(self, on_ready: Callable[["PolicyServer"], None] | None = None) -> None:
    """Serves until `request_stop()`; then closes connections (1001) and waits for their handlers."""
    self._loop = asyncio.get_running_loop()
    self._stop = asyncio.Event()
    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla-serving-inference")
    if not is_loopback(self.host) and self.api_key is None:
      logger.warning("serving on %s without an API key: anyone who can reach this port can drive the policy",
                     self.host)
    try:
      # On the inference thread itself, before listening: a robot's first request is then not a compile.
      warm_up_ms = await self._loop.run_in_executor(self._executor, self.served.warm_up, self.warm_up_guided)
      logger.info("warm-up request took %.0f ms", warm_up_ms)
      async with serve(self._handle, self.host, self.port, compression=None, max_size=self.max_message_bytes,
                       max_queue=MAX_QUEUED_FRAMES, ping_interval=self.ping_interval_s,
                       ping_timeout=self.ping_timeout_s, open_timeout=self.open_timeout_s,
                       process_request=self._process_request, server_header=None) as server:
        self.address = server.sockets[0].getsockname()[:2]
        logger.info("serving %s (%s) on %s", self.served.model_id, self.served.backend, self.url)
        if on_ready is not None:
          on_ready(self)
        await self._stop.wait()
        logger.info("stopping: closing %d connection(s)", self.active_connections)
    finally:
      self._executor.shutdown(wait=True)

  def request_stop(self) -> None:
    """Thread-safe: makes `serve()` close every connection and return."""
    if self._loop is not None and self._stop is not None:
      with contextlib.suppress(RuntimeError):  # The loop has already finished.
        self._loop.call_soon_threadsafe(self._stop.set)

  def run(self, on_ready: Callable[["PolicyServer"], None] | None = None) -> None:
    """Blocking: serves until SIGTERM or SIGINT, then shuts down gracefully (for entry points)."""

    async def main() -> None:
      loop = asyncio.get_running_loop()
      for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, self.request_stop)
      await self.serve(on_ready)

    asyncio.run(main())

  # ---- Handshake. -------------------------------------------------------------------------------

  def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
    """Before the websocket exists: /healthz, the API key, the connection limit."""
    if request.path == HEALTH_PATH:
      return connection.respond(http.HTTPStatus.OK, "ok\n")
    if self.api_key is not None:
      given = request.headers.get_all("Authorization")
      expected = f"Api-Key {self.api_key}".encode()
      if len(given) != 1 or not hmac.compare_digest(given[0].encode(), expected):
        return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                  "missing or wrong API key: send the header 'Authorization: Api-Key <key>'\n")
    if self.active_connections >= self.max_connections:
      return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                f"the server already serves {self.max_connections} connections\n")
    return None

  # ---- One connection. --------------------------------------------------------------------------

  async def _handle(self, ws: ServerConnection) -> None:
    if self.active_connections >= self.max_connections:  # Handshakes that raced past _process_request.
      await ws.close(websockets.CloseCode.TRY_AGAIN_LATER, "too many connections")
      return
    self.active_connections += 1
    self.connections_served += 1
    session = self.served.new_session()
    peer = ws.remote_address
    logger.info("connection from %s opened", peer)
    try:
      await ws.send(self._metadata_frame)
      prev_total_ms: float | None = None
      async for message in ws:
        received = time.perf_counter()
        reply, inferred = await self._reply(session, message, received, prev_total_ms)
        await ws.send(reply)
        if inferred:  # prev_total_ms times the previous *inference*, not observe-only frames or errors.
          prev_total_ms = (time.perf_counter() - received) * 1e3
    except websockets.ConnectionClosed:
      pass
    finally:
      self.active_connections -= 1
      logger.info("connection from %s closed (%s)", peer, ws.close_code)

  async def _reply(self, session: Session, message: bytes | str, received: float,
                   prev_total_ms: float | None) -> tuple[bytes | str, bool]:
    """One request → (the reply frame: msgpack bytes or an "error: ..." text, whether it ran an inference)."""
    try:
      request = protocol.parse_request(message, self.served.spec)
    except protocol.RequestError as e:
      return protocol.error_text(str(e), e.request_id), False
    decoded = time.perf_counter()
    if isinstance(request, protocol.Control):
      if request.kind in OPENPI_CONTROLS:  # Either way, the next observation starts a new episode.
        session.end_episode()
      return wire.packb({"__ack__": request.kind if request.kind in OPENPI_CONTROLS else "ignored"}), False
    echo = {} if request.request_id is None else {"request_id": request.request_id}
    # Observe-only requests go through the worker too: they may reset the episode (the instruction
    # encoder expects one caller), and they must stay in order with this connection's inferences.
    work = _infer_on_worker if request.infer else _observe_on_worker
    try:
      result, fields, queue_ms = await asyncio.get_running_loop().run_in_executor(
          self._executor, work, session, request, decoded)
    except Exception as e:  # The policy failed on this input: report it, keep serving.
      logger.exception("inference failed" if request.infer else "observe-only request failed")
      what = "inference" if request.infer else "observe"
      return protocol.error_text(f"{what} failed ({type(e).__name__}: {str(e)[:300]}); the next request starts "
                                 "a new episode", request.request_id), False
    if not request.infer:
      return wire.packb({**fields, **echo}), False
    server_timing = {"infer_ms": (time.perf_counter() - received) * 1e3, "decode_ms": (decoded - received) * 1e3,
                     "queue_ms": queue_ms}
    if prev_total_ms is not None:
      server_timing["prev_total_ms"] = prev_total_ms
    return wire.packb({"actions": result, **fields, "server_timing": server_timing, **echo}), True


def _infer_on_worker(session: Session, request: protocol.Request, submitted: float) -> tuple[Any, dict, float]:
  queue_ms = (time.perf_counter() - submitted) * 1e3
  actions, fields = session.infer(request)
  return actions, fields, queue_ms


def _observe_on_worker(session: Session, request: protocol.Request, submitted: float) -> tuple[None, dict, float]:
  queue_ms = (time.perf_counter() - submitted) * 1e3
  return None, session.observe(request), queue_ms


@contextlib.contextmanager
def serve_in_background(served: ServedPolicy, *, port: int = 0, startup_timeout_s: float = 300.0,
                        **kwargs: Any) -> Iterator[PolicyServer]:
  """Runs a `PolicyServer` on a thread of this process (tests, notebooks, benchmarks):

      with serve_in_background(served) as server:
        client = PolicyClient(server.url)

  startup_timeout_s bounds the warm-up before listening: compiling the plain and the real-time
  chunking samplers of the small_h16 policy took over 30 s on 2 shared cores.
  """
  server = PolicyServer(served, port=port, **kwargs)
  ready = threading.Event()
  failure: list[BaseException] = []

  def target() -> None:
    try:
      asyncio.run(server.serve(on_ready=lambda _: ready.set()))
    except BaseException as e:  # Reported to the caller below.
      failure.append(e)
      ready.set()

  thread = threading.Thread(target=target, name="vla-serving-loop", daemon=True)
  thread.start()
  if not ready.wait(startup_timeout_s) or failure:
    server.request_stop()
    raise RuntimeError(f"policy server did not start: {failure[0] if failure else 'timeout'}")
  try:
    yield server
  finally:
    server.request_stop()
    thread.join(timeout=30)
