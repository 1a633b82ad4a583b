"""Closed-loop check of an exported artifact: the ONNX policy vs the JAX policy in the simulator.

Both run through `vla_jax.evaluation.evaluate` on the same scene seeds with the same noise (the
`OnnxPolicy` reproduces `JaxPolicy`'s noise), so the comparison is paired: per condition, the
success rates, their difference in points, and how many episodes ended the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from vla_jax.evaluation import evaluate as ev
from vla_jax.inference import jax_policy
from vla_jax.inference.artifacts import ONNX, read_manifest
from vla_jax.inference.onnx_runtime import OnnxPolicy


def compare_closed_loop(export_dir: str | Path, config: ml_collections.ConfigDict, *,
                        checkpoint: str | Path | None = None, model_file: str = ONNX,
                        max_gap_points: float = 2.0) -> dict[str, Any]:
  """→ {"conditions": {name: {jax, onnx, gap_points, agreement}}, "passed": bool, ...}.

  checkpoint defaults to the export's source checkpoint (from its manifest).
  """
  manifest = read_manifest(export_dir)
  source = manifest["source"]
  checkpoint = checkpoint or source.get("path")
  if source.get("kind") != "checkpoint" and checkpoint is None:
    raise ValueError(f"export {export_dir} was not made from a checkpoint; pass the checkpoint to compare against")
  reference = jax_policy.load(checkpoint, dataset=source.get("dataset"), seed=config.seed)
  onnx_policy = OnnxPolicy(export_dir, model_file=model_file, noise="jax", seed=config.seed)
  summaries = {"jax": ev.evaluate(reference, config), "onnx": ev.evaluate(onnx_policy, config)}
  out: dict[str, Any] = {"checkpoint": str(checkpoint), "export": str(export_dir), "model_file": model_file,
                         "episodes_per_family": int(config.episodes_per_family), "conditions": {}}
  worst = 0.0
  for condition in summaries["jax"]["conditions"]:
    rates = {k: s["conditions"][condition]["overall"]["success_rate"] for k, s in summaries.items()}
    eps = {k: [e for e in s["episodes"] if e["condition"] == condition] for k, s in summaries.items()}
    agree = sum(a["success"] == b["success"] for a, b in zip(eps["jax"], eps["onnx"]))
    gap = 100.0 * (rates["onnx"] - rates["jax"])
    worst = max(worst, abs(gap))
    out["conditions"][condition] = {"jax_success": rates["jax"], "onnx_success": rates["onnx"],
                                    "gap_points": gap, "episodes": len(eps["jax"]), "same_outcome": agree}
  out["max_abs_gap_points"] = worst
  out["passed"] = worst <= max_gap_points
  return out


def markdown(result: dict[str, Any]) -> str:
  lines = ["| condition | JAX success | ONNX success | gap (points) | same outcome |", "|---|---|---|---|---|"]
  for name, c in result["conditions"].items():
    lines.append(f"| {name} | {100 * c['jax_success']:.1f} % | {100 * c['onnx_success']:.1f} % | "
                 f"{c['gap_points']:+.1f} | {c['same_outcome']}/{c['episodes']} |")
  return "\n".join(lines)
