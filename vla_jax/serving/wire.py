"""msgpack with numpy arrays, byte-compatible with openpi's `openpi_client.msgpack_numpy`.

openpi's policy server and client exchange msgpack maps in which every numpy array is replaced by
a map with *bytes* keys (msgpack bin type):

    ndarray  → {b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": "<f4", b"shape": [d0, d1, ...]}
    np.generic (a numpy scalar) → {b"__npgeneric__": True, b"data": <python int/float/bool>, b"dtype": "<i8"}

This module writes that same layout and reads it back, so `openpi_client.WebsocketClientPolicy`
talks to our server unmodified. It is our own implementation, and stricter on the way in because
the server decodes bytes from the network: a dtype outside `ALLOWED_DTYPE_KINDS` (objects, voids,
complex), a shape that is not a list of non-negative ints, or a shape that disagrees with the
byte count is a `WireError` naming what was wrong. Nothing is ever pickled or unpickled.

Decoded arrays are read-only views of the message buffer (no copy, as openpi's are).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

ARRAY_TAG = b"__ndarray__"
SCALAR_TAG = b"__npgeneric__"
# bool, signed / unsigned int, float, and fixed-width unicode / bytes strings (openpi's own tests
# round-trip string arrays). Never "O" (Python objects), "V" (void / structured), "c" (complex).
ALLOWED_DTYPE_KINDS = frozenset("biufUS")
MAX_NDIM = 8


class WireError(ValueError):
  """A message that is not valid msgpack-numpy (the text says what and where)."""


def _check_dtype(descr: Any) -> np.dtype:
  if not isinstance(descr, str) or len(descr) > 16:
    raise WireError(f"array dtype must be a numpy dtype string such as '<f4', got {descr!r:.40}")
  try:
    dtype = np.dtype(descr)
  except (TypeError, ValueError) as e:
    raise WireError(f"array dtype {descr!r} is not a numpy dtype ({e})") from None
  if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
    raise WireError(f"array dtype {descr!r} (kind {dtype.kind!r}) is not allowed; expected bool, int, uint, "
                    "float or fixed-width string")
  return dtype


def _encode(obj: Any) -> Any:
  """msgpack's `default` hook: numpy arrays and scalars as openpi's tagged maps."""
  if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in ALLOWED_DTYPE_KINDS:
    raise TypeError(f"cannot send a numpy {obj.dtype} value: only {sorted(ALLOWED_DTYPE_KINDS)} dtype kinds")
  if isinstance(obj, np.ndarray):
    return {ARRAY_TAG: True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
            b"shape": list(obj.shape)}
  if isinstance(obj, np.generic):
    return {SCALAR_TAG: True, b"data": obj.item(), b"dtype": obj.dtype.str}
  raise TypeError(f"cannot send a {type(obj).__name__} over msgpack-numpy")


def _decode(obj: dict) -> Any:
  """msgpack's `object_hook`: tagged maps back to numpy, every other map unchanged."""
  if ARRAY_TAG in obj:
    if set(obj) != {ARRAY_TAG, b"data", b"dtype", b"shape"}:
      raise WireError(f"array map must have keys __ndarray__, data, dtype, shape; got {sorted(map(repr, obj))}")
    dtype = _check_dtype(obj[b"dtype"])
    shape, data = obj[b"shape"], obj[b"data"]
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
      raise WireError(f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r:.80}")
    if not isinstance(data, bytes):
      raise WireError(f"array data must be msgpack bin (bytes), got {type(data).__name__}")
    if math.prod(shape) * dtype.itemsize != len(data):
      raise WireError(f"array of dtype {dtype.str} and shape {shape} needs {math.prod(shape) * dtype.itemsize} bytes, "
                      f"the message holds {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)
  if SCALAR_TAG in obj:
    if set(obj) != {SCALAR_TAG, b"data", b"dtype"}:
      raise WireError(f"scalar map must have keys __npgeneric__, data, dtype; got {sorted(map(repr, obj))}")
    dtype = _check_dtype(obj[b"dtype"])
    value = obj[b"data"]
    if not isinstance(value, (bool, int, float, str, bytes)):
      raise WireError(f"numpy scalar data must be a plain number or string, got {type(value).__name__}")
    try:
      return dtype.type(value)
    except (TypeError, ValueError, OverflowError) as e:
      raise WireError(f"numpy scalar {value!r:.40} does not fit dtype {dtype.str} ({e})") from None
  return obj


def packb(obj: Any) -> bytes:
  """Any nesting of dicts / lists / str / numbers / numpy arrays and scalars → msgpack bytes."""
  return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes) -> Any:
  """msgpack bytes → Python / numpy values. Raises `WireError` for anything malformed."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise WireError(f"expected bytes, got {type(data).__name__}")
  try:
    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
  except WireError:
    raise
  except Exception as e:  # msgpack raises ExtraData, FormatError, StackError, ValueError, TypeError, ...
    raise WireError(f"not a valid msgpack message ({type(e).__name__}: {str(e)[:120]})") from None
