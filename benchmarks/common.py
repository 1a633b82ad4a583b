"""Helpers shared by the benchmark programs: machine/version record, table printing, JSON output."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from vla_jax.io import write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info(packages: Sequence[str] = ("numpy", "jax", "jaxlib", "flax", "tensorflow-cpu", "gymnasium")) -> dict[str, Any]:
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
  return {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "versions": versions,
  }


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
