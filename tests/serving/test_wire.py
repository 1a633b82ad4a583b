"""The msgpack-numpy codec: byte-compatible with openpi's, strict on what it accepts from the network."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from vla_jax.serving import wire

VALUES = [
    1, 1.5, "hello", [1, 2, 3], {"key": [1, 2]},
    np.bool_(True), np.int64(3), np.float32(2.5),
    np.array(1.0), np.array([1, 2, 3], np.int32), np.array([True, False]), np.array(["asdf", "qwer"]),
    np.zeros((0, 3), np.float32), np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    np.array([np.nan, np.inf, -np.inf]), np.arange(12, dtype=">f4").reshape(3, 4),
    {"actions": np.ones((4, 3), np.float32), "nested": {"x": np.arange(3, dtype=np.uint8)}},
]


def _assert_same(expected, actual):
  if isinstance(expected, dict):
    assert sorted(expected) == sorted(actual)
    for k in expected:
      _assert_same(expected[k], actual[k])
  elif isinstance(expected, (list, tuple)):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
      _assert_same(e, a)
  elif isinstance(expected, (np.ndarray, np.generic)):
    assert type(actual) is type(expected) and actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
  else:
    assert actual == expected and type(actual) is type(expected)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip_with_dtype_and_shape(value):
  _assert_same(value, wire.unpackb(wire.packb(value)))


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_bytes_equal_openpis_encoding_and_each_side_reads_the_other(value):
  from openpi_client import msgpack_numpy as openpi  # requirements-test-nodeps.txt
  assert wire.packb(value) == openpi.packb(value)
  _assert_same(value, openpi.unpackb(wire.packb(value)))
  _assert_same(value, wire.unpackb(openpi.packb(value)))


def _array_map(**overrides):
  fields = {b"__ndarray__": True, b"data": b"\0" * 12, b"dtype": "<f4", b"shape": [3]}
  fields.update({k.encode(): v for k, v in overrides.items()})
  return msgpack.packb({"image": fields}, use_bin_type=True)


@pytest.mark.parametrize("overrides, message", [
    (dict(dtype="|O"), "not allowed"),
    (dict(dtype="<c8", data=b"\0" * 24), "not allowed"),
    (dict(dtype="V4"), "not allowed"),
    (dict(dtype="not-a-dtype"), "not a numpy dtype"),
    (dict(dtype=7), "dtype string"),
    (dict(shape=[4]), "needs 16 bytes"),
    (dict(shape=[-3]), "non-negative"),
    (dict(shape=[2**40, 2**40]), "bytes"),
    (dict(shape="3"), "list"),
    (dict(shape=[1] * 9), "at most 8"),
    (dict(data="abc"), "bin"),
])
def test_malformed_array_maps_are_rejected_by_name(overrides, message):
  with pytest.raises(wire.WireError, match=message):
    wire.unpackb(_array_map(**overrides))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91" * 5000 + b"\xc0", b"\xdd\xff\xff\xff\xff", b"\x82\xa1a"],
                         ids=["empty", "never-used byte", "deep nesting", "huge array claim", "truncated map"])
def test_invalid_msgpack_is_a_wire_error(data):
  with pytest.raises(wire.WireError, match="not a valid msgpack"):
    wire.unpackb(data)


def test_object_arrays_are_never_sent():
  with pytest.raises(TypeError, match="cannot send"):
    wire.packb({"x": np.array([object()])})


def test_the_client_side_loads_neither_jax_nor_onnxruntime():
  """A robot-side script imports vla_jax.serving for the client and the codec only."""
  import subprocess
  import sys

  from tests.conftest import REPO

  code = ("import sys, vla_jax.serving, vla_jax.serving.protocol; "
          "print(sorted(m for m in ('jax', 'onnxruntime', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-1000:]
