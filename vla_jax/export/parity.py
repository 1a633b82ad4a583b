"""Parity: does an exported artifact compute what the JAX policy computes, on the same inputs and noise?

Errors are reported in normalised action units (an env-unit difference divided by the per-dim
scale of the baked-in un-normalisation, pass-through dims as they are), so one tolerance (1e-4 by
default) means the same thing for every dataset.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vla_jax.export.convert import ExportError
from vla_jax.export.serving import Affine


def compare(got: np.ndarray, expected: np.ndarray, action_norm: Affine) -> dict[str, float]:
  """{max_abs_error, mean_abs_error} in normalised units, plus max_abs_error_env in env units."""
  got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
  if got.shape != expected.shape:
    raise ExportError(f"exported model returned actions of shape {got.shape}, JAX returns {expected.shape}")
  if not np.all(np.isfinite(got)):
    raise ExportError(f"exported model returned non-finite actions ({int((~np.isfinite(got)).sum())} values)")
  diff = np.abs(got - expected)
  normalised = diff / action_norm.error_scale()
  return {"max_abs_error": float(normalised.max()), "mean_abs_error": float(normalised.mean()),
          "max_abs_error_env": float(diff.max())}


def check_parity(runners: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]],
                 reference: Callable[[dict[str, np.ndarray]], np.ndarray],
                 make_inputs: Callable[[int], dict[str, np.ndarray]],
                 batch_sizes: tuple[int, ...], action_norm: Affine,
                 tolerance: float | dict[str, float | None]) -> dict[str, dict[str, Any]]:
  """Runs every artifact at every batch size against the reference.

  tolerance: one bound for all, or {artifact: bound or None (report only)}.
  Returns {artifact: {"batch_<B>": figures, "max_abs_error": worst, "tolerance", "passed"}}; raises
  ExportError listing every artifact that fails a bound, after measuring them all.
  """
  results: dict[str, dict[str, Any]] = {name: {} for name in runners}
  for b in batch_sizes:
    inputs = make_inputs(b)
    expected = reference(inputs)
    for name, run in runners.items():
      results[name][f"batch_{b}"] = compare(run(inputs), expected, action_norm)
  failures = []
  for name, res in results.items():
    bound = tolerance.get(name) if isinstance(tolerance, dict) else tolerance
    worst = max(v["max_abs_error"] for k, v in res.items() if k.startswith("batch_"))
    res.update(max_abs_error=worst, tolerance=bound, passed=bound is None or worst <= bound)
    if not res["passed"]:
      per_batch = ", ".join(f"B={k[6:]}: {v['max_abs_error']:.2e}" for k, v in res.items() if k.startswith("batch_"))
      failures.append(f"{name} ({per_batch}; tolerance {bound:.0e})")
  if failures:
    raise ExportError("parity check failed — max abs error vs JAX in normalised action units: " + "; ".join(failures))
  return results
