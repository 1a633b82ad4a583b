"""The optional fp16 and int8 ONNX variants load in ONNX Runtime and carry their accuracy figures."""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.export import convert, serving
from vla_jax.export.exporter import VARIANT_FILES


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_quantised_variant_loads_and_runs_at_batch_1_and_4(tiny_export, tiny_bundle, variant):
  export_dir, _ = tiny_export
  run = convert.onnx_run_fn(convert.ort_session(export_dir / VARIANT_FILES[variant]))
  for b in (1, 4):
    actions = run(serving.random_inputs(tiny_bundle, b, seed=b))
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
