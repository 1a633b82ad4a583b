"""The device mesh and the shardings of batches and parameters (the modern pjit).

One `jax.sharding.Mesh` with named axes ("data", "fsdp") covers every setting: one CPU
(1 x 1), simulated devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), one GPU host, or
many hosts after `jax.distributed.initialize()`. The batch is split over both axes. Parameters and
optimizer state are either replicated (DP) or each array is split along its largest dimension that
the "fsdp" axis divides (FSDP); XLA inserts the all-gathers and reduce-scatters.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")  # The batch dimension is sharded over both mesh axes.
STRATEGIES = ("dp", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, num_devices: int = -1) -> Mesh:
  """A (data, fsdp) mesh over the first `num_devices` devices (-1: all); `data=-1` takes what `fsdp` leaves."""
  devices = jax.devices()
  if num_devices != -1:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"config.mesh.num_devices={num_devices} is not valid: {len(devices)} devices are available")
    if jax.process_count() > 1:
      raise ValueError("config.mesh.num_devices must be -1 (all devices) in a multi-process run")
    devices = devices[:num_devices]
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} is not valid: it must divide the {n} available devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(
        f"config.mesh.data={data} x config.mesh.fsdp={fsdp} = {data * fsdp} devices, but {n} are available"
    )
  grid = np.array(devices).reshape(data, fsdp)
  return Mesh(grid, ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device; the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
  """Shard the largest dimension divisible by the fsdp axis; small arrays stay replicated."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, strategy: str, min_size: int = 2**12) -> Any:
  """NamedShardings for every leaf of a (params / optimizer / train) state pytree."""
  if strategy not in STRATEGIES:
    raise ValueError(f"config.mesh.strategy={strategy!r} is not valid; expected one of {list(STRATEGIES)}")
  fsdp_size = mesh.shape["fsdp"]

  def leaf(x):
    shape = tuple(getattr(x, "shape", ()))
    if strategy == "dp" or not shape:
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(shape, fsdp_size, min_size))

  return jax.tree.map(leaf, abstract_state)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Process-local numpy batch -> global jax.Arrays sharded over the mesh's batch axes.

  Each process passes only its own rows (its shard of the global batch), as the input pipeline
  produces them; with one process this is a plain device_put.
  """
  sharding = batch_sharding(mesh)
  n_shards = mesh.shape["data"] * mesh.shape["fsdp"]

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:
      raise ValueError("shard_batch: every batch entry needs a leading batch dimension, got a scalar")
    if (x.shape[0] * jax.process_count()) % n_shards:
      raise ValueError(
          f"global batch {x.shape[0] * jax.process_count()} is not divisible by the {n_shards} devices of the mesh"
      )
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)
