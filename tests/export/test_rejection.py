"""Exports that cannot be trusted are refused with a message that says why — never written."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto, helper

from vla_jax.export import ExportError, export_config, export_policy
from vla_jax.export import config as config_lib
from vla_jax.export import convert


def _graph_with(op_type: str, domain: str = ""):
  node = helper.make_node(op_type, ["x", "x"], ["y"], domain=domain)
  graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_onnx_graph_with_xla_op_is_rejected_naming_the_op():
  with pytest.raises(ExportError, match=r"unsupported ops \['XlaDotV2'\].*enable_xla=False"):
    convert.check_onnx_graph(_graph_with("XlaDotV2"))


def test_onnx_graph_with_leftover_tf_op_is_rejected():
  with pytest.raises(ExportError, match=r"unsupported ops \['PreventGradient'\]"):
    convert.check_onnx_graph(_graph_with("PreventGradient"))


def test_unsupported_op_inside_a_loop_body_is_found():
  body = helper.make_graph([helper.make_node("XlaGather", ["a"], ["b"])], "body", [], [])
  loop = helper.make_node("Loop", ["n", "c"], ["out"], body=body)
  model = _graph_with("Add")
  model.graph.node.append(loop)
  assert convert.unsupported_ops(model) == ["XlaGather"]


def test_standard_graph_passes_the_checks():
  convert.check_onnx_graph(_graph_with("Add"))


def test_native_serialization_is_rejected_before_tf2onnx():
  """What jax2tf produces without the TF-op lowering (one XlaCallModule) never reaches tf2onnx."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  f = jax2tf.convert(lambda x: jnp.sin(x) @ x, native_serialization=True)
  fn = tf.function(f, autograph=False).get_concrete_function(tf.TensorSpec((2, 2), tf.float32))
  with pytest.raises(ExportError, match="XlaCallModule.*native_serialization=False, enable_xla=False"):
    convert.check_tf_graph(fn)


@pytest.mark.parametrize("override, message", [
    (dict(opset=19), "opset=19 is not supported"),
    (dict(parity_batch_sizes=(1,)), "must include a batch size > 1"),
    (dict(variants=("int4",)), "unknown entries \\['int4'\\]"),
])
def test_export_config_errors_name_the_key(override, message):
  config = export_config()
  config.update(override)
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_existing_export_directory_is_not_replaced_without_overwrite(tiny_bundle, tmp_path):
  (tmp_path / "x").mkdir()
  with pytest.raises(FileExistsError, match="overwrite"):
    export_policy(tiny_bundle, tmp_path / "x")


@pytest.mark.slow
def test_failed_parity_aborts_and_leaves_no_directory(tiny_bundle, tmp_path, monkeypatch):
  from vla_jax.export import exporter

  real = exporter.run_fn
  monkeypatch.setattr(exporter, "run_fn", lambda session: (lambda inputs: real(session)(inputs) + np.float32(0.01)))
  config = export_config()
  config.variants = ()
  with pytest.raises(ExportError, match="parity check failed.*onnx"):
    export_policy(tiny_bundle, tmp_path / "bad", config, log=lambda *_: None)
  assert list(tmp_path.iterdir()) == []
