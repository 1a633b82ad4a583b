"""What an export directory holds, and reading its manifest — JAX- and TensorFlow-free.

The exporter writes these files; the ONNX runtime, the server and the edge benchmark read them.
`policy_control_rate` reads a checkpoint's or an export's run config alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "vla_jax.export/1"
MANIFEST = "manifest.json"
SAVEDMODEL = "savedmodel"
ONNX = "policy.onnx"
ONNX_OPTIMIZED = "policy.opt.onnx"
VARIANT_FILES = {"fp16": "policy.fp16.onnx", "int8": "policy.int8.onnx"}
GUIDED_FILES = {"rtc": "policy.rtc.onnx", "hard": "policy.hard.onnx", "conditioned": "policy.conditioned.onnx"}  # Real-time chunking samplers.


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
  """The export's manifest.json, checked to be one this version of vla_jax reads."""
  path = Path(export_dir) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{export_dir} is not a vla_jax export (no {MANIFEST})")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


def default_model_file(export_dir: str | Path) -> str:
  """policy.opt.onnx (rewritten for ONNX Runtime, the fast one) when the export has it, else policy.onnx."""
  return ONNX_OPTIMIZED if (Path(export_dir) / ONNX_OPTIMIZED).is_file() else ONNX


def policy_control_rate(policy: Any) -> int:
  """The simulator control rate a policy was trained and evaluated at: its training run's
  eval.control_rate (a JaxPolicy's bundle, an OnnxPolicy's manifest), 1 for policies without one
  (scripted ones, runs from before the knob)."""
  bundle = getattr(policy, "bundle", None)
  run = getattr(bundle, "run_config", None) or (getattr(policy, "manifest", None) or {}).get("run_config") or {}
  return int((run.get("eval") or {}).get("control_rate") or 1)
