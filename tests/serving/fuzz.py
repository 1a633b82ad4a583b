"""Generated malformed traffic for the server's robustness tests.

Two kinds of case:
  - a *message* case is one websocket message (binary or text) sent on an open connection; the
    server must answer with an "error: ..." text naming `expect` (or an ack for control maps), or —
    for an oversized message — close that connection with 1009;
  - a *raw* case writes bytes on a fresh TCP connection below the websocket layer (bad handshakes,
    unmasked / reserved-opcode / truncated / oversized frames, garbage); the server must close it.
Stalled connections (a frame cut off mid-way, a handshake never finished) are opened separately by
the tests, which check that the server keeps answering others and drops the stalled ones itself.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import struct
import time
from typing import Iterator

import msgpack
import numpy as np

from vla_jax.serving import protocol, wire


@dataclasses.dataclass
class MessageCase:
  kind: str
  message: bytes | str
  expect: str  # Substring of the error text; "" for any error; "<ack>" for an acknowledged control; "<close>".


@dataclasses.dataclass
class RawCase:
  kind: str
  payload: bytes  # Written after a completed handshake, unless `handshake` is False.
  handshake: bool = True


def good_request(spec: protocol.PolicySpec, rng: np.random.Generator) -> dict:
  return {**{k: rng.integers(0, 256, spec.image_shape, dtype=np.uint8) for k in spec.image_keys},
          "state": rng.normal(size=spec.state_dim).astype(np.float32), "prompt": "push the red block"}


def _wrong_shape(rng: np.random.Generator, good: tuple[int, ...]) -> tuple[int, ...]:
  options = [(1, *good), good[::-1] if len(good) > 1 else (good[0] + 1,), good[:-1], (*good, 1), (),
             tuple(d + int(rng.integers(1, 3)) for d in good), (0, *good[1:])]
  options = [s for s in options if s != good]
  return options[int(rng.integers(len(options)))]


def _array_map(dtype: str, shape, data: bytes) -> dict:
  return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def message_cases(spec: protocol.PolicySpec, seed: int, max_message_bytes: int) -> Iterator[MessageCase]:
  """An endless stream of malformed messages of every kind, in a seeded random order."""
  rng = np.random.default_rng(seed)

  def packed(request: dict) -> bytes:
    return msgpack.packb(request, default=wire._encode, use_bin_type=True)

  def with_key(key: str, value) -> bytes:
    return packed({**good_request(spec, rng), key: value})

  s = spec.image_size_px
  makers = {
      "garbage_bytes": lambda: MessageCase("garbage_bytes", rng.bytes(int(rng.integers(0, 300))), ""),
      "truncated_msgpack": lambda: (lambda b: MessageCase("truncated_msgpack", b[:int(rng.integers(0, len(b) - 1))],
                                                          ""))(packed(good_request(spec, rng))),
      "text_frame": lambda: MessageCase("text_frame", "".join(chr(int(c)) for c in rng.integers(32, 0x2FF, 40)),
                                        "text frame"),
      "not_a_map": lambda: MessageCase("not_a_map", msgpack.packb([None, 1, "x", [1, 2], 2.5, True][
          int(rng.integers(6))]), "must be a map"),
      "missing_key": lambda: (lambda drop: MessageCase("missing_key", packed(
          {k: v for k, v in good_request(spec, rng).items() if k != drop}), "request keys"))(
              spec.required_keys[int(rng.integers(len(spec.required_keys)))]),
      "unknown_key": lambda: MessageCase("unknown_key", with_key(["images", "observation/image", "reset", "Prompt"][
          int(rng.integers(4))], 1), "request keys"),
      "non_str_key": lambda: MessageCase("non_str_key", msgpack.packb({1: 2, "image": 3}), "msgpack"),
      "image_shape": lambda: MessageCase("image_shape", with_key("image", np.zeros(
          _wrong_shape(rng, spec.image_shape), np.uint8)), "key 'image'"),
      "image_dtype": lambda: MessageCase("image_dtype", with_key("image", np.zeros(spec.image_shape, [
          np.float32, np.int16, np.bool_, np.float64, np.int8][int(rng.integers(5))])), "key 'image'"),
      "image_list": lambda: MessageCase("image_list", with_key("image", np.zeros(spec.image_shape, np.uint8).tolist()),
                                        "key 'image'"),
      "image_scalar": lambda: MessageCase("image_scalar", with_key("image", np.uint8(7)), "key 'image'"),
      "state_shape": lambda: MessageCase("state_shape", with_key("state", np.zeros(
          _wrong_shape(rng, (spec.state_dim,)), np.float32)), "key 'state'"),
      "state_dtype": lambda: MessageCase("state_dtype", with_key("state", np.zeros(spec.state_dim, [
          np.int32, np.float16, np.int64, np.uint8, np.bool_][int(rng.integers(5))])), "key 'state'"),
      "state_nonfinite": lambda: MessageCase("state_nonfinite", with_key("state", _nonfinite(rng, spec.state_dim)),
                                             "non-finite"),
      "state_overflow": lambda: MessageCase("state_overflow", with_key("state", np.full(spec.state_dim, 1e300)),
                                            "non-finite"),
      "state_list": lambda: MessageCase("state_list", with_key("state", [0.0] * spec.state_dim), "key 'state'"),
      "prompt_type": lambda: MessageCase("prompt_type", with_key("prompt", [b"push", 3, None, ["a"], 1.5,
                                                                            np.array([1])][int(rng.integers(6))]),
                                         "key 'prompt'"),
      "prompt_length": lambda: MessageCase("prompt_length", with_key(
          "prompt", "x" * [0, protocol.MAX_PROMPT_CHARS + 1, 5000][int(rng.integers(3))]), "key 'prompt'"),
      "new_episode_type": lambda: MessageCase("new_episode_type", with_key("new_episode", ["yes", 1, None, 0.0][
          int(rng.integers(4))]), "key 'new_episode'"),
      "request_id_type": lambda: MessageCase("request_id_type", with_key("request_id", ["7", 1.5, True, [1], b"\x01"][
          int(rng.integers(5))]), "key 'request_id'"),
      "infer_type": lambda: MessageCase("infer_type", with_key("infer", ["no", 0, 1, None, 0.0][int(rng.integers(5))]),
                                        "key 'infer'"),
      "bad_array_map": lambda: _bad_array_map(rng, spec, packed),
      "bad_scalar_map": lambda: MessageCase("bad_scalar_map", packed({**good_request(spec, rng), "state": {
          b"__npgeneric__": True, b"data": [1, 2], b"dtype": ["|O", "<f4", "V8"][int(rng.integers(3))]}}), ""),
      "deep_nesting": lambda: MessageCase("deep_nesting", b"\x91" * int(rng.integers(2000, 20000)) + b"\xc0",
                                          "msgpack"),
      "huge_length_claim": lambda: MessageCase("huge_length_claim", [b"\xdd", b"\xdf", b"\xc6", b"\xdb"][
          int(rng.integers(4))] + b"\xff\xff\xff\xf0" + rng.bytes(8), "msgpack"),
      "ext_type": lambda: MessageCase("ext_type", packed({**good_request(spec, rng), "image": msgpack.ExtType(
          int(rng.integers(0, 127)), rng.bytes(16))}), "key 'image'"),
      "bad_control": lambda: MessageCase("bad_control", packed({"__ctrl__": [1, None, 2.5][int(rng.integers(3))]}),
                                         "__ctrl__"),
      "control": lambda: MessageCase("control", packed({"__ctrl__": ["episode_end", "episode_start", "nope"][
          int(rng.integers(3))]}), "<ack>"),
      "trailing_bytes": lambda: MessageCase("trailing_bytes", packed(good_request(spec, rng)) + rng.bytes(3),
                                            "msgpack"),
  }
  rare = {"oversized": lambda: MessageCase("oversized", b"\xc6" + struct.pack(">I", max_message_bytes)
                                           + bytes(max_message_bytes), "<close>")}
  common_kinds = sorted(makers)
  while True:
    if rng.uniform() < 0.01:
      yield rare["oversized"]()
    else:
      yield makers[common_kinds[int(rng.integers(len(common_kinds)))]]()


def _nonfinite(rng: np.random.Generator, dim: int) -> np.ndarray:
  state = rng.normal(size=dim).astype(np.float32)
  state[int(rng.integers(dim))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
  return state


def _bad_array_map(rng: np.random.Generator, spec: protocol.PolicySpec, packed) -> MessageCase:
  n = int(np.prod(spec.image_shape))
  bad = [
      _array_map("|O", list(spec.image_shape), bytes(8 * n)),
      _array_map("<c8", list(spec.image_shape), bytes(8 * n)),
      _array_map("[('a', '<f4')]", list(spec.image_shape), bytes(4 * n)),
      _array_map("|u1", list(spec.image_shape), bytes(n - 1)),
      _array_map("|u1", [-1, *spec.image_shape[1:]], bytes(n)),
      _array_map("|u1", [2**62, 2**62], bytes(n)),
      _array_map("|u1", "32,32,3", bytes(n)),
      _array_map("|u1", list(spec.image_shape), "text"),
      {b"__ndarray__": True, b"data": bytes(n)},
      {**_array_map("|u1", list(spec.image_shape), bytes(n)), b"extra": 1},
  ]
  return MessageCase("bad_array_map", packed({**good_request(spec, rng), "image": bad[int(rng.integers(len(bad)))]}),
                     "array")


# ---- Raw TCP / websocket-frame cases. ------------------------------------------------------------


def ws_frame(payload: bytes, *, opcode: int = 2, fin: bool = True, mask: bool = True, rsv: int = 0,
             claimed_length: int | None = None) -> bytes:
  """A client websocket frame (RFC 6455), with knobs to break it."""
  length = len(payload) if claimed_length is None else claimed_length
  head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
  mask_bit = 0x80 if mask else 0
  if length < 126:
    head += bytes([mask_bit | length])
  elif length < 2**16:
    head += bytes([mask_bit | 126]) + struct.pack(">H", length)
  else:
    head += bytes([mask_bit | 127]) + struct.pack(">Q", length)
  if not mask:
    return head + payload
  key = os.urandom(4)
  masked = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(key, np.uint8), len(payload))).tobytes()
  return head + key + masked


def raw_cases(seed: int, max_message_bytes: int) -> Iterator[RawCase]:
  rng = np.random.default_rng(seed)
  makers = [
      lambda: RawCase("garbage_after_handshake", rng.bytes(int(rng.integers(1, 200)))),
      lambda: RawCase("unmasked_frame", ws_frame(b"\x80", mask=False)),
      lambda: RawCase("reserved_opcode", ws_frame(b"\x80", opcode=int(rng.choice([3, 4, 5, 6, 7, 11, 12])))),
      lambda: RawCase("reserved_bits", ws_frame(b"\x80", rsv=int(rng.integers(1, 8)))),
      lambda: RawCase("truncated_frame_then_eof", ws_frame(rng.bytes(100), claimed_length=5000)[:60]),
      lambda: RawCase("oversized_by_header", ws_frame(b"", claimed_length=max_message_bytes + 1)),
      lambda: RawCase("fragmented_past_the_limit", b"".join(
          ws_frame(bytes(max_message_bytes // 3 + 1), opcode=2 if i == 0 else 0, fin=i == 3) for i in range(4))),
      lambda: RawCase("bad_close_frame", ws_frame(b"\x03", opcode=8)),
      lambda: RawCase("garbage_handshake", rng.bytes(int(rng.integers(1, 300))) + b"\r\n\r\n", handshake=False),
      lambda: RawCase("http_get_root", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", handshake=False),
  ]
  while True:
    yield makers[int(rng.integers(len(makers)))]()


def handshake_bytes(host: str, port: int, headers: dict[str, str] | None = None) -> bytes:
  key = base64.b64encode(os.urandom(16)).decode()
  lines = [f"GET / HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
           f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
  lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
  return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_open(host: str, port: int, handshake: bool = True, timeout_s: float = 5.0) -> socket.socket:
  """A TCP connection, upgraded to a websocket by hand (so that nothing answers the server's pings)."""
  sock = socket.create_connection((host, port), timeout=timeout_s)
  if handshake:
    sock.sendall(handshake_bytes(host, port))
    response = b""
    while b"\r\n\r\n" not in response:
      chunk = sock.recv(4096)
      if not chunk:
        raise ConnectionError("server closed during the handshake")
      response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
      raise ConnectionError(f"handshake refused: {response.splitlines()[0]!r}")
  return sock


def wait_closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
  """Reads (and discards) until the server closes the TCP connection; False if it is still open."""
  deadline = time.monotonic() + timeout_s
  try:
    while time.monotonic() < deadline:
      sock.settimeout(max(0.01, deadline - time.monotonic()))
      try:
        if not sock.recv(65536):
          return True
      except socket.timeout:
        return False
      except (ConnectionResetError, BrokenPipeError):
        return True
    return False
  finally:
    sock.close()


def run_raw_case(host: str, port: int, case: RawCase, timeout_s: float = 10.0) -> bool:
  """Sends one raw case and half-closes; True if the server then closed the connection."""
  sock = raw_open(host, port, handshake=case.handshake)
  try:
    sock.sendall(case.payload)
    sock.shutdown(socket.SHUT_WR)  # EOF: a frame cut short stays cut short.
  except (BrokenPipeError, ConnectionResetError):
    sock.close()
    return True
  return wait_closed_by_server(sock, timeout_s)
