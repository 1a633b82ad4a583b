"""Multi-host start-up: `jax.distributed.initialize()` when the environment asks for it.

Set JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on
every process (or the matching config.distributed keys); on managed clusters (SLURM, Cloud TPU)
set config.distributed.auto=True and JAX discovers them itself. On CPU, collectives go through
gloo, so several processes on one machine form a real multi-process run (the tests do this).
"""

from __future__ import annotations

import os

import jax
import ml_collections


def maybe_initialize(config: ml_collections.ConfigDict) -> bool:
  """Initialises jax.distributed if configured; returns whether this is a multi-process run.

  Must run before anything touches a JAX device.
  """
  address = config.get("coordinator_address") or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address and not config.get("auto", False):
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if address:
    num = config.get("num_processes") or os.environ.get("JAX_NUM_PROCESSES")
    pid = config.get("process_id")
    pid = os.environ.get("JAX_PROCESS_ID") if pid is None else pid
    if num is None or pid is None:
      raise ValueError(
          f"coordinator address {address!r} is set but not the process count/id: set JAX_NUM_PROCESSES and "
          "JAX_PROCESS_ID (or config.distributed.num_processes / process_id)"
      )
    jax.distributed.initialize(coordinator_address=address, num_processes=int(num), process_id=int(pid))
  else:
    jax.distributed.initialize()
  return jax.process_count() > 1
