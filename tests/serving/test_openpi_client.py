"""The unmodified PyPI `openpi-client` talks to our server: metadata, action chunks, errors.

Installed with `pip install --no-deps -r requirements-test-nodeps.txt` (it declares numpy < 2 but
runs on numpy 2; its other dependencies — msgpack, websockets, pillow — are in requirements.txt,
and dm-tree is only needed by modules we do not import).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.conftest import PROMPTS, SEED, in_process_actions, observations

# openpi-client 0.1.2 calls websockets' connect() the way websockets 17 deprecates (still works).
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

from openpi_client import websocket_client_policy  # noqa: E402  (requirements-test-nodeps.txt, --no-deps)


def _openpi_client(server):
  host, port = server.address
  return websocket_client_policy.WebsocketClientPolicy(host, port)


def test_openpi_client_gets_our_metadata_and_in_process_actions(jax_server, jax_reference):
  frames = observations(jax_server.served.spec, 4, seed=20)
  expected = in_process_actions(jax_reference, PROMPTS[1], frames)
  client = _openpi_client(jax_server)
  try:
    assert client.get_server_metadata() == jax_server.metadata
    for step, (frame, want) in enumerate(zip(frames, expected)):
      reply = client.infer({**frame, "prompt": PROMPTS[1]})
      np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6, err_msg=f"step {step}")
      assert {"infer_ms"} <= set(reply["server_timing"]) and {"infer_ms"} <= set(reply["policy_timing"])
  finally:
    client._ws.close()


def test_openpi_client_raises_our_error_text_and_keeps_the_connection(jax_server):
  frame = observations(jax_server.served.spec, 1)[0]
  client = _openpi_client(jax_server)
  try:
    with pytest.raises(RuntimeError, match=r"key 'state': expected float32 \[5\], got int64 \[5\]"):
      client.infer({**frame, "state": np.arange(5), "prompt": PROMPTS[0]})
    assert client.infer({**frame, "prompt": PROMPTS[0]})["actions"].shape == (4, 3)
  finally:
    client._ws.close()


@pytest.mark.slow  # Builds the tiny ONNX export (~20-40 s): kept out of the default suite's budget.
def test_openpi_client_on_the_onnx_backend_gets_in_process_actions(onnx_server, tiny_export):
  from vla_jax.inference.onnx_runtime import OnnxPolicy

  reference = OnnxPolicy(tiny_export, model_file="policy.opt.onnx", threads=1, noise="numpy", seed=SEED)
  frames = observations(onnx_server.served.spec, 3, seed=21)
  expected = in_process_actions(reference, PROMPTS[0], frames)
  client = _openpi_client(onnx_server)
  try:
    assert client.get_server_metadata()["backend"] == "onnxruntime"
    for frame, want in zip(frames, expected):
      np.testing.assert_allclose(client.infer({**frame, "prompt": PROMPTS[0]})["actions"], want, rtol=0, atol=1e-6)
  finally:
    client._ws.close()
