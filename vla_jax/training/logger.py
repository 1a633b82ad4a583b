"""Run logging: a tqdm bar with loss and steps/s, TensorBoard scalars, and a JSON-lines file.

TensorBoard event files are written with `tf.summary` (TensorFlow is already a dependency for
the data pipeline); view them with any TensorBoard. Only process 0 writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tqdm


class MetricsLogger:
  def __init__(self, workdir: str | Path, total_steps: int, initial_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = Path(workdir)
    self._writer = None
    self._jsonl = None
    self.bar = tqdm.tqdm(total=total_steps, initial=initial_step, disable=not self.enabled, unit="step", dynamic_ncols=True)
    self._last_time = time.perf_counter()
    self._last_step = initial_step
    if self.enabled:
      import tensorflow as tf  # Local: keeps `import vla_jax.training` light.

      self._writer = tf.summary.create_file_writer(str(self.workdir / "tensorboard"))
      self._jsonl = open(self.workdir / "metrics.jsonl", "a")

  def rate(self, step: int) -> float:
    """Steps/s since the previous call."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    return rate

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    scalars = {f"{prefix}{k}": float(np.asarray(v)) for k, v in metrics.items()}
    if not self.enabled:
      return scalars
    import tensorflow as tf

    with self._writer.as_default(step=step):
      for k, v in scalars.items():
        tf.summary.scalar(k, v)
    self._writer.flush()
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    return scalars

  def progress(self, step: int, postfix: dict[str, float]) -> None:
    self.bar.update(step - self.bar.n)
    self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

  def print(self, message: str) -> None:
    if self.enabled:
      self.bar.write(message)

  def close(self) -> None:
    self.bar.close()
    if self._writer is not None:
      self._writer.close()
    if self._jsonl is not None:
      self._jsonl.close()
