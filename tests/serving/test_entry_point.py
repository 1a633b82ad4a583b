"""`python -m experiments.serve` on each kind of source: a trained checkpoint, an export, bad flags."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
import websockets

from tests.conftest import REPO
from tests.serving.conftest import PROMPTS, SEED, free_port, in_process_actions, observations, start_serve_process
from vla_jax.serving import PolicyClient


def _serve_and_compare(args: list[str], reference, log_path) -> dict:
  """Starts the entry point, runs one episode against `reference` (in process), then SIGTERM: the
  open connection is closed with 1001 and the process exits 0. Returns the metadata."""
  port = free_port()
  proc = start_serve_process(args, port, log_path)
  try:
    client = PolicyClient(f"ws://127.0.0.1:{port}")
    metadata = client.metadata
    frames = observations(_Spec(metadata["observation"]), 3, seed=40)
    expected = in_process_actions(reference, PROMPTS[0], frames)
    for step, (frame, want) in enumerate(zip(frames, expected)):
      np.testing.assert_allclose(client.infer({**frame, "prompt": PROMPTS[0]})["actions"], want, rtol=0, atol=1e-6,
                                 err_msg=f"step {step}")
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(websockets.ConnectionClosed) as closed:
      client.ws.recv(timeout=60)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # Going away.
    assert proc.wait(timeout=60) == 0
    output = log_path.read_text()
    assert f"at ws://127.0.0.1:{port}" in output and "server stopped" in output
    return metadata
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class _Spec:
  """The bits of a PolicySpec `observations` needs, from the metadata a client received."""

  def __init__(self, observation: dict):
    self.image_shape = tuple(observation["image"]["shape"])
    self.image_keys = tuple(k for k, v in observation.items() if isinstance(v, dict) and "camera" in v)
    self.state_dim = observation["state"]["shape"][0]


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of"),
    (["--untrained", "tiny", "--export_dir", "x"], "exactly one of"),
    (["--export_dir", "/nonexistent/export"], "error: /nonexistent/export is not a vla_jax export"),
])
def test_bad_command_lines_exit_with_one_line_naming_the_problem(args, message):
  proc = subprocess.run([sys.executable, "-m", "experiments.serve", *args], cwd=str(REPO), capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_serves_an_export_with_onnx_runtime(tiny_export, onnx_server, tmp_path):
  from vla_jax.inference.onnx_runtime import OnnxPolicy

  reference = OnnxPolicy(tiny_export, model_file="policy.opt.onnx", threads=1, noise="numpy", seed=SEED)
  metadata = _serve_and_compare(["--export_dir", str(tiny_export), "--seed", str(SEED)], reference,
                                tmp_path / "serve.log")
  assert metadata == onnx_server.metadata  # The same export, in a thread or from the command line.


@pytest.mark.slow  # ~25 s: a serving subprocess that loads JAX and compiles; CI runs the slow tests too.
def test_serves_a_run_directory_with_jax_and_exits_0_on_sigterm(tiny_run, tmp_path):
  from vla_jax.inference import jax_policy

  reference = jax_policy.load(tiny_run / "checkpoints" / "20", seed=0)
  metadata = _serve_and_compare(["--workdir", str(tiny_run)], reference, tmp_path / "serve.log")
  assert metadata["backend"] == "jax" and metadata["model_id"] == "tiny/checkpoints/20"
  assert metadata["source"]["kind"] == "checkpoint" and metadata["source"]["step"] == 20
