"""Fixtures for the server tests: one tiny untrained policy (and its ONNX export) per session.

The server never looks at the weights, so an untrained `tiny` policy on 32×32 images serves the
same messages as a trained one. The JAX policy costs a few seconds; the export ~30 s, so only the
tests that need the ONNX backend (or a server subprocess) ask for `tiny_export`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, write_untrained_checkpoint

SEED = 7
PROMPTS = ("push the red block to the left", "put the blue circle in the green zone")


def make_jax_policy(bundle, seed: int = SEED):
  """A fresh in-process `JaxPolicy` of the tiny bundle: the reference the server must equal."""
  from vla_jax.inference.jax_policy import JaxPolicy

  return JaxPolicy(bundle, seed=seed)


@pytest.fixture(scope="session")
def jax_reference(tiny_bundle):
  """The in-process policy the JAX server must equal (`in_process_actions` resets it per episode)."""
  return make_jax_policy(tiny_bundle)


@pytest.fixture(scope="session")
def jax_served(tiny_bundle):
  from vla_jax.serving import backends

  return backends.from_jax_policy(make_jax_policy(tiny_bundle), model_id="tiny-random")


@pytest.fixture(scope="session")
def jax_server(jax_served):
  """A JAX-backend server on a thread of the test process, for the whole session."""
  from vla_jax.serving import serve_in_background

  # Guided samplers are compiled by the tests that use them, not at start-up (test_guided_warm_up).
  with serve_in_background(jax_served, ping_interval_s=1.0, ping_timeout_s=1.0, open_timeout_s=2.0,
                           warm_up_guided=False) as server:
    yield server


@pytest.fixture(scope="session")
def tiny_export(tiny_export_and_manifest) -> Path:
  """The ONNX export of the tiny policy the export tests use too (tests/conftest.py)."""
  return tiny_export_and_manifest[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
  """A run directory with one checkpoint (`checkpoints/20`) of an untrained `tabletop:tiny` policy,
  written directly — no training run — with the items a trained run's checkpoint has: state
  (params, ema_params, step), the run config, the dataset statistics."""
  from experiments.configs import tabletop
  from vla_jax.inference.testing import synthetic_statistics

  config = tabletop.get_config("tiny")
  run = tmp_path_factory.mktemp("runs") / "tiny"
  write_untrained_checkpoint(run, config, {config.eval_dataset: synthetic_statistics(config.model, seed=1)})
  return run


@pytest.fixture(scope="session")
def onnx_server(tiny_export):
  """An ONNX Runtime-backend server of the tiny export (policy.opt.onnx, numpy noise)."""
  from vla_jax.serving import backends, serve_in_background

  with serve_in_background(backends.from_export(tiny_export, seed=SEED)) as server:
    yield server


def observations(spec, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """`count` single-robot observations (a uint8 [S, S, 3] frame per `spec.image_keys`, state float32
  [D]) with varied values."""
  rng = np.random.default_rng(seed)
  return [{**{k: rng.integers(0, 256, spec.image_shape, dtype=np.uint8) for k in spec.image_keys},
           "state": rng.normal(size=spec.state_dim).astype(np.float32)} for _ in range(count)]


def in_process_actions(policy, prompt: str, frames: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
  """One episode of `frames` through a fresh in-process policy: actions float32 [H, A] per step."""
  policy.reset([prompt], None)
  return [policy({k: v[None] for k, v in f.items()}, None)[0] for f in frames]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_serve_process(args: list[str], port: int, log_path: Path, timeout_s: float = 120.0) -> subprocess.Popen:
  """`python -m experiments.serve <args> --port <port>` at idle priority, output to `log_path` (a pipe
  nobody reads would fill up and block the server); returns once it accepts connections."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  with open(log_path, "w") as log:
    proc = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "experiments.serve", *args, "--port", str(port)],
                            cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"experiments.serve exited with {proc.returncode}:\n{Path(log_path).read_text()[-3000:]}")
    try:
      socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
      return proc
    except OSError:
      time.sleep(0.2)
  proc.kill()
  raise RuntimeError(f"experiments.serve did not listen on port {port} within {timeout_s} s")
