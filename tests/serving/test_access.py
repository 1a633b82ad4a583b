"""Who may connect and how the server is watched: API key, /healthz, loopback by default, connection limit."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import websockets

from tests.serving.conftest import PROMPTS, observations
from vla_jax.serving import PolicyClient, PolicyServer, serve_in_background

KEY = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def keyed_server(jax_served):
  with serve_in_background(jax_served, api_key=KEY) as server:
    yield server


@pytest.mark.parametrize("api_key", [None, "wrong-key", KEY[:-1]], ids=["no key", "wrong key", "key prefix"])
def test_handshake_without_the_right_api_key_is_refused(keyed_server, api_key):
  with pytest.raises(websockets.InvalidStatus) as refused:
    PolicyClient(keyed_server.url, api_key=api_key)
  assert refused.value.response.status_code == 401
  assert b"Api-Key" in refused.value.response.body


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_the_right_api_key_is_served_by_our_client_and_openpis(keyed_server):
  frame = {**observations(keyed_server.served.spec, 1)[0], "prompt": PROMPTS[0]}
  with PolicyClient(keyed_server.url, api_key=KEY) as client:
    ours = client.infer(frame)["actions"]
  from openpi_client import websocket_client_policy as openpi  # requirements-test-nodeps.txt
  host, port = keyed_server.address
  client = openpi.WebsocketClientPolicy(host, port, api_key=KEY)
  try:
    np.testing.assert_array_equal(client.infer(frame)["actions"], ours)
  finally:
    client._ws.close()  # openpi's client has no close().


@pytest.mark.parametrize("which", ["open", "keyed"])
def test_healthz_answers_200_without_a_key(jax_server, keyed_server, which):
  server = {"open": jax_server, "keyed": keyed_server}[which]
  host, port = server.address
  with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
    assert response.status == 200 and response.read() == b"ok\n"


def test_binds_loopback_by_default(jax_served, jax_server):
  assert PolicyServer(jax_served).host == "127.0.0.1"
  assert jax_server.address[0] == "127.0.0.1"


def test_connections_beyond_the_limit_get_503_and_others_are_unaffected(jax_served):
  with serve_in_background(jax_served, max_connections=2) as server:
    with PolicyClient(server.url) as a, PolicyClient(server.url) as b:
      with pytest.raises(websockets.InvalidStatus) as refused:
        PolicyClient(server.url)
      assert refused.value.response.status_code == 503
      frame = {**observations(server.served.spec, 1)[0], "prompt": PROMPTS[0]}
      np.testing.assert_array_equal(a.infer(frame)["actions"], b.infer(frame)["actions"])
    with PolicyClient(server.url) as c:  # Slots are freed when connections close.
      assert c.metadata["backend"] == "jax"
