"""The manifest describes the model that is actually on disk."""

from __future__ import annotations

import onnx
import pytest

from vla_jax.export import convert
from vla_jax.inference import policy_fn
from vla_jax.inference.artifacts import ONNX, read_manifest

ONNX_DTYPES = {"uint8": onnx.TensorProto.UINT8, "float32": onnx.TensorProto.FLOAT, "int32": onnx.TensorProto.INT32,
               "bool": onnx.TensorProto.BOOL}


def _onnx_signature(values):
  out = {}
  for v in values:
    dims = ["batch" if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
    out[v.name] = (dims, v.type.tensor_type.elem_type)
  return out


def test_manifest_inputs_and_outputs_match_the_onnx_graph(tiny_export):
  export_dir, manifest = tiny_export
  model = onnx.load(str(export_dir / ONNX))
  declared_in = {s["name"]: (s["shape"], ONNX_DTYPES[s["dtype"]]) for s in manifest["inputs"]}
  declared_out = {s["name"]: (s["shape"], ONNX_DTYPES[s["dtype"]]) for s in manifest["outputs"]}
  assert _onnx_signature(model.graph.input) == declared_in
  assert _onnx_signature(model.graph.output) == declared_out


def test_manifest_inputs_follow_the_model_config(tiny_export, tiny_bundle):
  _, manifest = tiny_export
  cfg = tiny_bundle.model_config
  shapes = {s["name"]: s["shape"] for s in manifest["inputs"]}
  assert shapes == {
      "image_primary": ["batch", cfg.window_size, 32, 32, 3],
      "proprio": ["batch", cfg.window_size, cfg.proprio_dim],
      "timestep_pad_mask": ["batch", cfg.window_size],
      "language_tokens": ["batch", 16],
      "noise_initial": ["batch", cfg.action_horizon, cfg.action_dim],
  }
  assert manifest["outputs"][0]["shape"] == ["batch", cfg.action_horizon, cfg.action_dim]
  assert manifest["model"]["num_params"] == tiny_bundle.num_params()
  assert manifest["model"]["steps_inside_graph"] == cfg.head.diffusion.num_sample_steps == 3


def test_manifest_records_normalisation_source_and_versions(tiny_export, tiny_bundle):
  export_dir, manifest = tiny_export
  norm = manifest["normalization"]
  assert norm["method"] == tiny_bundle.normalization
  assert norm["statistics"]["action"] == tiny_bundle.action_stats
  expected = policy_fn.normalisation(tiny_bundle)
  assert norm["action"]["mask"] == expected["action"].mask.tolist()
  assert norm["proprio"]["offset"] == pytest.approx(expected["proprio"].offset.tolist())
  assert manifest["source"]["kind"] == "random"
  assert {"jax", "tf2onnx", "onnx", "onnxruntime"} <= set(manifest["versions"])
  assert manifest["export_config"]["opset"] <= 18
  assert read_manifest(export_dir) == manifest


def test_manifest_file_entries_match_the_files(tiny_export):
  export_dir, manifest = tiny_export
  for name, entry in manifest["artifacts"].items():
    path = export_dir / entry["path"]
    assert path.exists(), name
    if path.is_file():
      assert entry["bytes"] == path.stat().st_size
      assert entry["sha256"] == convert.file_digest(path)
  assert not any(op.startswith("Xla") for op in manifest["artifacts"]["onnx"]["op_types"])
