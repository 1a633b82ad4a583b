"""Parity: does an exported artifact compute what the JAX policy computes, on the same inputs and noise?

Errors are reported in normalised action units (an env-unit difference divided by the per-dim
scale of the baked-in un-normalisation, pass-through dims as they are), so one tolerance (1e-4 by
default) means the same thing for every dataset. The reference is the jitted policy function;
`reference_actions` is the independent check of its baked-in normalisation (numpy statistics
functions around the model), and `random_inputs` the inputs every parity batch is drawn from.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from vla_jax.data import statistics as stats_lib
from vla_jax.export.convert import ExportError
from vla_jax.inference.bundle import PolicyBundle
from vla_jax.inference.policy_fn import Affine, embodiment_index, input_specs, io_dims, normalisation
from vla_jax.models.backbone import language_input_keys
from vla_jax.models.heads import realtime


def compare(got: np.ndarray, expected: np.ndarray, action_norm: Affine) -> dict[str, float]:
  """{max_abs_error, mean_abs_error} in normalised units, plus max_abs_error_env in env units."""
  got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
  if got.shape != expected.shape:
    raise ExportError(f"exported model returned actions of shape {got.shape}, JAX returns {expected.shape}")
  if not np.all(np.isfinite(got)):
    raise ExportError(f"exported model returned non-finite actions ({int((~np.isfinite(got)).sum())} values)")
  if not np.all(np.isfinite(expected)):  # A NaN reference would make every comparison vacuous.
    raise ExportError(f"the JAX reference returned non-finite actions ({int((~np.isfinite(expected)).sum())} values)")
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


def reference_actions(bundle: PolicyBundle, inputs: dict[str, np.ndarray]) -> np.ndarray:
  """The policy function's computation with the numpy `normalize` / `unnormalize` of
  vla_jax.data.statistics around a jitted `sample_actions_from_noise`."""
  policy = bundle.policy
  cfg = policy.config
  observation = {f"image_{c}": inputs[f"image_{c}"] for c in cfg.cameras}
  observation["timestep_pad_mask"] = inputs["timestep_pad_mask"]
  if cfg.use_proprio:
    proprio = stats_lib.normalize(inputs["proprio"], bundle.proprio_stats, bundle.normalization)
    pad = int(cfg.proprio_dim) - proprio.shape[-1]  # A multi-embodiment model's smaller robot.
    observation["proprio"] = np.pad(proprio, [(0, 0), (0, 0), (0, pad)]) if pad else proprio
  task = {k: inputs[k] for k in language_input_keys(cfg.language)}
  embodiment = embodiment_index(bundle)
  if embodiment is not None:
    task["embodiment"] = np.full(inputs["timestep_pad_mask"].shape[:1], embodiment, np.int32)
  noise = {name: inputs[f"noise_{name}"] for name in policy.noise_shapes(1)}
  actions = np.asarray(jax.jit(policy.sample_actions_from_noise)(bundle.params, observation, task, noise))
  actions = actions[..., :io_dims(bundle)["action"]]
  return stats_lib.unnormalize(actions, bundle.action_stats, bundle.normalization)


def random_inputs(bundle: PolicyBundle, batch_size: int, seed: int = 0,
                  guidance: str | None = None) -> dict[str, np.ndarray]:
  """Random inputs that exercise the whole graph: every byte value, proprio spread past the
  statistics' range (so the bounds clip is hit), padded first frames, nonzero noise."""
  rng = np.random.default_rng(seed)
  out: dict[str, np.ndarray] = {}
  norm = normalisation(bundle)
  for spec in input_specs(bundle.policy, guidance, io_dims(bundle)):
    shape = spec.concrete(batch_size)
    if spec.name.startswith("image_"):
      out[spec.name] = rng.integers(0, 256, shape, dtype=np.uint8)
    elif spec.name == "proprio":
      p = norm["proprio"]
      out[spec.name] = (p.offset + np.maximum(p.scale, 1e-3) * 1.5 * rng.normal(size=shape)).astype(np.float32)
    elif spec.name == "timestep_pad_mask":
      mask = np.ones(shape, bool)
      mask[:, :-1] = rng.uniform(size=(shape[0], shape[1] - 1)) > 0.3  # The newest frame is always real.
      out[spec.name] = mask
    elif spec.name == "language_mask":
      lengths = rng.integers(2, shape[1] + 1, size=shape[0])
      out[spec.name] = np.arange(shape[1])[None, :] < lengths[:, None]
    elif spec.name == "language_tokens":
      tokens = rng.integers(1, int(bundle.model_config.language.vocab_size), shape).astype(np.int32)
      lengths = rng.integers(1, shape[1] + 1, size=shape[0])
      tokens[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
      out[spec.name] = tokens
    elif spec.name == "prefix_actions":  # A previous chunk in env units, partly past the bounds.
      a = norm["action"]
      out[spec.name] = (a.offset + np.maximum(a.scale, 1e-3) * rng.uniform(-1.2, 1.2, size=shape)).astype(np.float32)
    elif spec.name == "prefix_weights":  # A different delay and execution horizon per row.
      h = shape[1]
      out[spec.name] = np.stack([realtime.prefix_weights(h, rng.integers(0, h), rng.integers(1, h + 1), xp=np)
                                 for _ in range(shape[0])])
    else:  # language_embedding, noise_*
      out[spec.name] = rng.normal(size=shape).astype(np.float32)
  return out
