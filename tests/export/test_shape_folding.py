"""Folding batch-only values: static shapes where the batch allows, nothing that reads input values."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vla_jax.export import convert, shape_folding
from vla_jax.inference.artifacts import ONNX, ONNX_OPTIMIZED


def _model(nodes, inputs, outputs, initializers=()):
  graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, feeds):
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, feeds)[0]


def _ops(model) -> collections.Counter:
  return collections.Counter(n.op_type for n in model.graph.node)


def _float(name, shape):
  return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _jax2tf_style_reshape():
  """x [b, 2, 3] → Reshape(x, Concat(Shape(x)[0:1], [6])), as jax2tf writes x.reshape(b, 6)."""
  nodes = [helper.make_node("Shape", ["x"], ["s"]),
           helper.make_node("Slice", ["s", "zero", "one"], ["b"]),
           helper.make_node("Concat", ["b", "six"], ["target"], axis=0),
           helper.make_node("Reshape", ["x", "target"], ["y"])]
  inits = [("zero", np.array([0])), ("one", np.array([1])), ("six", np.array([6]))]
  return _model(nodes, [_float("x", ["batch", 2, 3])], [_float("y", ["batch", 6])], inits)


def test_reshape_target_computed_from_the_batch_becomes_a_static_target_with_minus_one():
  model = _jax2tf_style_reshape()
  stats = shape_folding.fold_batch_only_values(model)
  assert stats["reshapes_made_static"] == 1
  assert _ops(model) == {"Reshape": 1}
  target = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == model.graph.node[0].input[1]))
  assert target.tolist() == [-1, 6]
  for b in (1, 7):  # Still dynamic, including a batch size the probes never used.
    x = np.arange(b * 6, dtype=np.float32).reshape(b, 2, 3)
    np.testing.assert_array_equal(_run(model, {"x": x}), x.reshape(b, 6))


def test_constant_broadcast_to_the_batch_is_folded_where_the_consumer_broadcasts_anyway():
  """x · Expand(c, Shape(x)) → x · c: the Expand only re-created the broadcast Mul does itself."""
  nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Expand", ["c", "s"], ["cb"]),
           helper.make_node("Mul", ["x", "cb"], ["y"])]
  c = np.array([[1.0, -2.0, 3.0]], np.float32)
  model = _model(nodes, [_float("x", ["batch", 3])], [_float("y", ["batch", 3])], [("c", c)])
  shape_folding.fold_batch_only_values(model)
  assert _ops(model) == {"Mul": 1}
  x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  np.testing.assert_array_equal(_run(model, {"x": x}), x * c)


def test_matmul_of_a_concat_with_a_batch_uniform_part_becomes_a_sum_with_a_constant_row():
  """[x, broadcast(t)] @ W = x @ W[:2] + t @ W[2:] — the second product is computed at export."""
  nodes = [helper.make_node("Shape", ["x"], ["s"]),
           helper.make_node("Slice", ["s", "zero", "one"], ["b"]),
           helper.make_node("Concat", ["b", "two"], ["target"], axis=0),
           helper.make_node("Expand", ["t", "target"], ["tb"]),
           helper.make_node("Tanh", ["tb"], ["tt"]),  # Batch-uniform, but not a constant input.
           helper.make_node("Concat", ["x", "tt"], ["xt"], axis=-1),
           helper.make_node("MatMul", ["xt", "w"], ["y"])]
  w = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
  t = np.array([[0.5, -1.0]], np.float32)
  inits = [("zero", np.array([0])), ("one", np.array([1])), ("two", np.array([2])), ("t", t), ("w", w)]
  model = _model(nodes, [_float("x", ["batch", 2])], [_float("y", ["batch", 5])], inits)
  stats = shape_folding.fold_batch_only_values(model)
  assert stats["concat_matmuls_split"] == 1
  assert _ops(model) == {"MatMul": 1, "Add": 1}
  x = np.random.default_rng(2).normal(size=(3, 2)).astype(np.float32)
  expected = np.concatenate([x, np.broadcast_to(np.tanh(t), (3, 2))], -1) @ w
  np.testing.assert_allclose(_run(model, {"x": x}), expected, rtol=1e-6, atol=1e-6)


def test_values_read_from_inputs_are_never_folded():
  """Probe inputs hold zeros for ints, so n + 1 looks constant there — it must still be computed."""
  nodes = [helper.make_node("Shape", ["n"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.INT32),
           helper.make_node("Add", ["n", "one"], ["n1"]), helper.make_node("Mul", ["n1", "sf"], ["y"])]
  model = _model(nodes, [helper.make_tensor_value_info("n", TensorProto.INT32, [3])],
                 [helper.make_tensor_value_info("y", TensorProto.INT32, [3])], [("one", np.array(1, np.int32))])
  shape_folding.fold_batch_only_values(model)
  assert _ops(model)["Add"] == 1 and "Shape" not in _ops(model)
  np.testing.assert_array_equal(_run(model, {"n": np.array([4, 5, 6], np.int32)}), [15, 18, 21])


def test_exported_policy_loses_its_shape_arithmetic_and_keeps_a_dynamic_batch(tiny_export, tiny_bundle):
  from vla_jax.export import parity
  from vla_jax.inference.onnx_runtime import run_fn

  export_dir, manifest = tiny_export
  folding = manifest["artifacts"]["onnx_optimized"]["fusions"]["folding"]
  assert folding["reshapes_made_static"] > 0 and folding["nodes_removed_as_dead"] > 0
  plain, optimized = (_ops(onnx.load(str(export_dir / f))) for f in (ONNX, ONNX_OPTIMIZED))
  assert optimized["Shape"] <= 1 < plain["Shape"]  # One Shape may remain: the batch size for a broadcast.
  session = convert.ort_session(export_dir / ONNX_OPTIMIZED)
  assert all(i.shape[0] == "batch" for i in session.get_inputs())
  run = run_fn(session)
  inputs = parity.random_inputs(tiny_bundle, 6, seed=8)  # Neither a probe nor a parity batch size.
  together = run(inputs)
  one_by_one = np.concatenate([run({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(6)])
  np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_chain_of_reshapes_becomes_one_static_reshape():
  """Unsqueeze → Reshape → Squeeze (tf2onnx's einsum lowering writes such chains) is one Reshape."""
  nodes = [helper.make_node("Unsqueeze", ["x", "axis1"], ["u"]),
           helper.make_node("Reshape", ["u", "flat"], ["r"]),
           helper.make_node("Squeeze", ["r", "axis1"], ["y"])]
  inits = [("axis1", np.array([1])), ("flat", np.array([0, 1, 6]))]  # 0: copy the batch dim.
  model = _model(nodes, [_float("x", ["batch", 2, 3])], [_float("y", ["batch", 6])], inits)
  stats = shape_folding.fold_batch_only_values(model)
  assert stats["reshape_chains_collapsed"] == 1
  assert _ops(model) == {"Reshape": 1}
  for b in (1, 4):
    x = np.arange(b * 6, dtype=np.float32).reshape(b, 2, 3)
    np.testing.assert_array_equal(_run(model, {"x": x}), x.reshape(b, 6))
