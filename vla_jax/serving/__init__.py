"""Serving a policy to a robot: a websockets server wire-compatible with openpi's policy server.

Public API:
  backends.from_checkpoint(dir) / from_export(dir) / from_jax_policy(policy)  → ServedPolicy
  PolicyServer(served, host, port, api_key, ...).run()                         (server.py)
  serve_in_background(served)                       → a server on a thread, for tests and notebooks
  PolicyClient(url)                                 → the openpi-shaped client, with request ids,
                                                      observe-only frames and reconnect (client.py)
  chunking.ChunkExecutor(source, H, ChunkingConfig) → a robot loop's chunk execution: receding,
                                                      ensemble, async refill (chunking.py)
  trial.run_trial(config, url)                      → the simulator as the robot (trial.py)
  wire.packb / wire.unpackb                         → openpi-compatible msgpack-numpy (wire.py)

The messages are specified in protocol.py; the entry points are `python -m experiments.serve` and
`python -m experiments.robot_trial`. Importing this package loads neither JAX nor ONNX Runtime (a
robot-side client needs neither); `backends` loads the runtime of the policy it is asked for.
"""

from vla_jax.serving.client import ModelChangedError, PolicyClient, ServerError
from vla_jax.serving.server import PolicyServer, serve_in_background

__all__ = ["ModelChangedError", "PolicyClient", "PolicyServer", "ServerError", "serve_in_background"]
