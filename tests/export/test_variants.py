"""The optional fp16 and int8 ONNX variants load in ONNX Runtime and carry their accuracy figures.

The fp16 variant must also survive the activation scale training produces: the quickstart policy's
denoiser LayerNorm sums of squares passed fp16's 65504 by step 2000 (see variants.py).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from vla_jax.export import convert, parity
from vla_jax.inference.onnx_runtime import run_fn
from vla_jax.inference.artifacts import VARIANT_FILES

# The denoiser's residual stream ×100: its sums of squares over the hidden features reach ~1e5
# (the trained quickstart policy's reached 1.1e5), while its LayerNorms keep the function the same.
DENOISER_STREAM_SCALE = 100.0


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_quantised_variant_loads_and_runs_at_batch_1_and_4(tiny_export, tiny_bundle, variant):
  export_dir, _ = tiny_export
  run = run_fn(convert.ort_session(export_dir / VARIANT_FILES[variant]))
  for b in (1, 4):
    actions = run(parity.random_inputs(tiny_bundle, b, seed=b))
    assert actions.shape == (b, tiny_bundle.model_config.action_horizon, tiny_bundle.model_config.action_dim)
    assert actions.dtype == np.float32 and np.isfinite(actions).all()


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_manifest_reports_variant_accuracy(tiny_export, variant):
  _, manifest = tiny_export
  figures = manifest["variants"][variant]
  assert {"batch_1", "batch_4", "max_abs_error", "tolerance", "passed"} <= set(figures)
  assert manifest["artifacts"][f"onnx_{variant}"]["bytes"] > 0


def test_fp16_variant_stores_half_precision_weights(tiny_export):
  import onnx

  export_dir, _ = tiny_export
  model = onnx.load(str(export_dir / VARIANT_FILES["fp16"]))
  dtypes = {init.data_type for init in model.graph.initializer}
  assert onnx.TensorProto.FLOAT16 in dtypes


def _fp16_model(export_dir):
  import onnx

  return onnx.shape_inference.infer_shapes(onnx.load(str(export_dir / VARIANT_FILES["fp16"])))


def _with_denoiser_stream_scaled(params, factor: float):
  """params with the denoiser's input projection and residual-branch outputs scaled by `factor`."""
  import jax

  def scale(path, x):
    names = [str(getattr(k, "key", "")) for k in path]
    stream = names[0] == "head" and any(n == "input" or re.fullmatch(r"block_\d+_out", n) for n in names)
    return x * factor if stream else x

  return jax.tree_util.tree_map_with_path(scale, params)


@pytest.mark.slow  # A second export (~20 s); the default suite checks both variants on the shared one.
def test_fp16_variant_stays_within_budget_when_head_layer_norm_sums_of_squares_exceed_fp16_range(
    tiny_model_config, tmp_path):
  from vla_jax.export import export_config, export_policy
  from vla_jax.inference.testing import random_bundle

  bundle = random_bundle(tiny_model_config, seed=0, normalization="bounds")
  bundle = dataclasses.replace(bundle, params=_with_denoiser_stream_scaled(bundle.params, DENOISER_STREAM_SCALE))
  config = export_config()
  config.variants = ("fp16",)
  config.save_optimized_onnx = False
  manifest = export_policy(bundle, tmp_path / "export", config, log=lambda *_: None)
  figures = manifest["variants"]["fp16"]
  assert figures["passed"], figures  # Before the fix: 2.0 (LayerNorm → its bias), budget 0.1.


def test_fp16_variant_passes_values_between_fp32_nodes_without_fp16_round_trips(tiny_export):
  from onnx import TensorProto, helper

  model = _fp16_model(tiny_export[0])
  producer = {o: n for n in model.graph.node for o in n.output}
  fp32 = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT}
  cast_to = lambda n: helper.get_attribute_value(n.attribute[0]) if n and n.op_type == "Cast" else None  # noqa: E731
  round_trips = [n.name for n in model.graph.node if cast_to(n) == TensorProto.FLOAT
                 and cast_to(producer.get(n.input[0])) == TensorProto.FLOAT16
                 and producer[n.input[0]].input[0] in fp32]
  assert not round_trips, round_trips[:5]


def test_fp16_variant_computes_norm_squares_their_sums_and_means_in_fp32(tiny_export):
  from onnx import TensorProto

  model = _fp16_model(tiny_export[0])
  dtype = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
  consumers = {}
  for n in model.graph.node:
    for i in n.input:
      consumers.setdefault(i, []).append(n)

  def readers(name, op_types):  # Looking through the converter's Casts.
    found = []
    for c in consumers.get(name, []):
      found += readers(c.output[0], op_types) if c.op_type == "Cast" else [c] if c.op_type in op_types else []
    return found

  squares = [n for n in model.graph.node if n.op_type == "Mul" and n.input[0] == n.input[1]
             and readers(n.output[0], ("ReduceSum",))]
  assert len(squares) >= 2 * tiny_export[1]["model"]["config"]["transformer"]["depth"] + 1  # Backbone LayerNorms.
  for square in squares:
    means = [m for s in readers(square.output[0], ("ReduceSum",)) for m in readers(s.output[0], ("Mul", "Div"))]
    assert dtype[square.output[0]] == TensorProto.FLOAT, square.name
    assert means and all(dtype[m.output[0]] == TensorProto.FLOAT for m in means), square.name
