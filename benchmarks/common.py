"""Helpers shared by the benchmark programs: machine/version record (with a measured f32 matmul
peak, so every result says how fast its machine was), table printing, JSON output."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from vla_jax.io import write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """f32 FLOP/s of a jitted n×n matmul (median of `repeats` after a warm-up): the practical peak of
  this machine's default JAX device."""
  import jax  # Here, not at import: benchmarks that never measure the peak need no JAX.
  import jax.numpy as jnp
  import numpy as np

  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / float(np.median(times))


def machine_info(packages: Sequence[str] = ("numpy", "jax", "jaxlib", "flax", "tensorflow-cpu", "gymnasium"),
                 measure_peak: bool = True) -> dict[str, Any]:
  """CPU, versions and (a second or two at 2048², unless `measure_peak=False`) the matmul peak.

  Called after a benchmark's own measurements, so the peak's matmul never competes with them.
  """
  versions = {}
  for name in packages:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  info = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "versions": versions,
  }
  if measure_peak:
    info["matmul_peak_gflop_s"] = matmul_peak(repeats=5) / 1e9
    # A benchmark pinned to fewer cores (env_speed.py: one) measures the peak of those cores only.
    info["matmul_peak_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return info


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
  widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
  print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
  print("-|-".join("-" * w for w in widths))
  for r in rows:
    print(" | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
  return str(v)


def write_results(name: str, payload: dict[str, Any]) -> Path:
  """Writes benchmarks/results/<name>.json atomically (temp file, then rename)."""
  RESULTS_DIR.mkdir(parents=True, exist_ok=True)
  return write_json_atomic(RESULTS_DIR / f"{name}.json", payload, indent=2)
