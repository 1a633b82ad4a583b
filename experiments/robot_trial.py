"""Trial runner: the built-in simulator plays "the robot", driven through the policy server.

  python -m experiments.robot_trial --config.url=ws://127.0.0.1:8000          # a running server
  python -m experiments.robot_trial --config.workdir=runs/tabletop            # serves it in this process
  python -m experiments.robot_trial --config.export_dir=exports/tabletop --config.control_hz=20
  python -m experiments.robot_trial --config.untrained=tiny --config.episodes_per_family=1  # the wiring
      [--config.name=x] [--config.episodes_per_family=N] [--config.chunking.mode=async] ...
      [--config.chunking.guidance=rtc]   # async with real-time chunking (hard | rtc | conditioned)
      (every knob: experiments/configs/robot_trial.py; the key: --config.api_key or env VLA_JAX_API_KEY)

The control loop, its timing model and what a trial writes (runs/trials/<name>/summary.json and
the episodes as RLDS): vla_jax/serving/trial.py.

Latency with an in-process server (checkpoint / workdir / export_dir / untrained) includes
sharing this process (and its GIL) with the server; for a robot's numbers run the server apart.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from absl import flags
from ml_collections import config_flags

from experiments import cli
from vla_jax.serving import trial

DEFAULT_CONFIG = "experiments/configs/robot_trial.py"


@contextlib.contextmanager
def policy_server(config) -> Iterator[tuple[str, str | None]]:
  """(url, api key) of the server to use: `config.url`, or one served on a thread of this process."""
  if config.url:
    yield config.url, config.api_key or os.environ.get(trial.API_KEY_ENV) or None
    return
  from vla_jax.serving import backends, serve_in_background
  from vla_jax.training.checkpoint import latest_checkpoint

  if config.export_dir:
    served = backends.from_export(config.export_dir, threads=config.onnx_threads, seed=config.policy_seed)
  elif config.untrained:
    from experiments.configs import tabletop

    served = backends.from_random(tabletop.get_config(config.untrained).model, seed=config.policy_seed)
  else:
    checkpoint = config.checkpoint or latest_checkpoint(config.workdir)
    served = backends.from_checkpoint(checkpoint, dataset=config.statistics_dataset or None, seed=config.policy_seed)
  with serve_in_background(served) as server:
    yield server.url, None


def main(argv):
  del argv
  import sys

  config = flags.FLAGS.config
  try:
    trial.check_config(config)
  except ValueError as e:
    sys.exit(f"error: {e}")
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()  # Our own per-episode bar and lines say more.
  try:
    trial.check_out_dir(config)  # Before loading a policy.
    with policy_server(config) as (url, api_key):
      trial.run_trial(config, url, api_key)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Defined here, not at import: tests import this module, and a config-file flag parses the
  # command line's overrides as soon as it is defined (a bad key would raise a traceback here).
  try:
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Trial config.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise SystemExit(f"error: {cli.config_error_message(e)}") from None
  cli.run(main)
