"""Serve a policy to a robot over websockets (openpi's policy-server protocol; see vla_jax/serving/).

  python -m experiments.serve --workdir runs/x                       # the run's latest checkpoint, JAX
  python -m experiments.serve --checkpoint runs/x/checkpoints/6000   # one checkpoint, JAX
  python -m experiments.serve --export_dir exports/x                 # an export, ONNX Runtime (no jit)
  python -m experiments.serve --untrained small                      # random weights: test the wiring
      [--host 127.0.0.1] [--port 8000] [--api_key KEY]  (or env VLA_JAX_API_KEY)

Prints the address and the metadata a client receives on connect, then serves until SIGTERM or
Ctrl-C (exit 0 after closing connections). Any client of openpi's `WebsocketClientPolicy` works:

  from openpi_client.websocket_client_policy import WebsocketClientPolicy
  WebsocketClientPolicy("127.0.0.1", 8000).infer({"image": ..., "state": ..., "prompt": "..."})["actions"]
"""

import os

from absl import flags

from experiments import cli

API_KEY_ENV = "VLA_JAX_API_KEY"

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory (.../checkpoints/<step>): JAX backend.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory: its latest checkpoint, JAX backend.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "An export directory (experiments.export): ONNX Runtime backend.")
_UNTRAINED = flags.DEFINE_string("untrained", None,
                                 "Serve an untrained policy of experiments/configs/tabletop.py:<arg> (e.g. 'small', "
                                 "'tiny') with synthetic statistics, to test a robot's connection: JAX backend.")
_DATASET = flags.DEFINE_string("dataset", None, "Whose statistics (checkpoints): default the run's eval_dataset.")
_MODEL_FILE = flags.DEFINE_string("model_file", None, "With --export_dir: which ONNX file (default policy.opt.onnx "
                                  "if the export has it, else policy.onnx).")
_THREADS = flags.DEFINE_integer("threads", 1, "With --export_dir: ONNX Runtime intra-op threads (0 = all cores). "
                                "Default 1: ORT's thread pool spins after every run, taking the CPU from the "
                                "server's event loop and the robot's own processes (on 2 busy cores the quickstart "
                                "policy also ran faster on 1 thread: ~4 ms vs 8-11 ms).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind; anything but loopback should set --api_key.")
_PORT = flags.DEFINE_integer("port", 8000, "TCP port (0: any free port).")
_API_KEY = flags.DEFINE_string("api_key", None, f"Require 'Authorization: Api-Key <key>' (default: ${API_KEY_ENV}, "
                               "which keeps the key out of the process list).")
_MAX_CONNECTIONS = flags.DEFINE_integer("max_connections", 16, "Connections served at once (more get HTTP 503).")
_MAX_MESSAGE_BYTES = flags.DEFINE_integer("max_message_bytes", None, "Largest request accepted (default ≥ 1 MiB).")
_PING_INTERVAL = flags.DEFINE_float("ping_interval_s", 20.0, "Keepalive: clients silent this long (twice) are dropped.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sampling noise (each connection starts from it).")


def main(argv):
  del argv
  import json
  import logging
  import sys

  sources = [f for f in (_CHECKPOINT, _WORKDIR, _EXPORT_DIR, _UNTRAINED) if f.value]
  if len(sources) != 1:  # Before importing JAX: a wrong command line fails in a second.
    sys.exit("error: pass exactly one of --checkpoint, --workdir, --export_dir or --untrained")

  from vla_jax.serving import PolicyServer, backends
  from vla_jax.training.checkpoint import latest_checkpoint
  logging.getLogger("vla_jax.serving").setLevel(logging.INFO)
  try:
    if _EXPORT_DIR.value:
      served = backends.from_export(_EXPORT_DIR.value, model_file=_MODEL_FILE.value, threads=_THREADS.value,
                                    seed=_SEED.value)
    elif _UNTRAINED.value:
      from experiments.configs import tabletop

      served = backends.from_random(tabletop.get_config(_UNTRAINED.value).model, seed=_SEED.value)
    else:
      ckpt = _CHECKPOINT.value or latest_checkpoint(_WORKDIR.value)
      served = backends.from_checkpoint(ckpt, dataset=_DATASET.value, seed=_SEED.value)
    server = PolicyServer(served, host=_HOST.value, port=_PORT.value,
                          api_key=_API_KEY.value or os.environ.get(API_KEY_ENV) or None,
                          max_message_bytes=_MAX_MESSAGE_BYTES.value, max_connections=_MAX_CONNECTIONS.value,
                          ping_interval_s=_PING_INTERVAL.value, ping_timeout_s=_PING_INTERVAL.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")

  def on_ready(s: PolicyServer) -> None:
    print(f"metadata: {json.dumps(s.metadata)}")
    auth = "API key required" if s.api_key else "no API key"
    print(f"serving {served.model_id} ({served.backend}) at {s.url} ({auth}); /healthz answers 200; "
          "SIGTERM or Ctrl-C stops", flush=True)

  try:
    server.run(on_ready)
  except OSError as e:  # Port in use, address not available.
    sys.exit(f"error: cannot listen on {_HOST.value}:{_PORT.value}: {e}")
  print("server stopped", flush=True)


if __name__ == "__main__":
  cli.run(main)
