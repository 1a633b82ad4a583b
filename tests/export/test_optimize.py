"""The LayerNorm / GELU fusions: applied to the exported policy, harmless elsewhere."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vla_jax.export import convert, onnx_graph, optimize


def test_optimized_export_fuses_every_layer_norm_and_gelu(tiny_export, tiny_bundle):
  export_dir, manifest = tiny_export
  fusions = manifest["artifacts"]["onnx_optimized"]["fusions"]
  cfg = tiny_bundle.model_config
  steps = cfg.head.diffusion.num_sample_steps
  blocks = cfg.head.denoiser.num_blocks
  # Denoiser: one norm per block + the output norm, every step; the backbone has at least one more.
  assert fusions["layer_norms_fused"] > steps * (blocks + 1)
  assert fusions["gelus_fused"] > steps * blocks
  assert fusions["softmaxes_fused"] >= cfg.transformer.depth  # One per attention block at least.
  assert fusions["nodes_after"] < 0.7 * fusions["nodes_before"]
  ops = manifest["artifacts"]["onnx_optimized"]["op_types"]
  assert "LayerNormalization" in ops and "FastGelu" in ops


def test_graph_without_the_patterns_is_left_unchanged():
  x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
  y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
  nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Sqrt", ["t"], ["s"]),
           helper.make_node("Reciprocal", ["s"], ["y"])]
  model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
  stats = optimize.optimize(model)
  assert stats["layer_norms_fused"] == stats["gelus_fused"] == 0
  assert [n.op_type for n in model.graph.node] == ["Tanh", "Sqrt", "Reciprocal"]


def test_dead_node_elimination_keeps_what_reaches_the_outputs():
  x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
  y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
  unused = numpy_helper.from_array(np.ones(2, np.float32), "unused")
  nodes = [helper.make_node("Abs", ["x"], ["y"]), helper.make_node("Add", ["x", "unused"], ["dead"])]
  model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [unused]),
                            opset_imports=[helper.make_opsetid("", 18)])
  assert onnx_graph.eliminate_dead_nodes(model) == 1
  assert [n.op_type for n in model.graph.node] == ["Abs"] and not model.graph.initializer
  convert.check_onnx_graph(model)
  onnx.checker.check_model(model)


def _jax2tf_softmax(guard: float):
  """softmax over the last axis of x [batch, 3, 4] as jax2tf lowers it (reduce, re-expand by Reshape)."""
  x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])
  y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4])
  inits = [numpy_helper.from_array(np.array([2]), "axis"), numpy_helper.from_array(np.array(guard, np.float32), "guard"),
           numpy_helper.from_array(np.array([-1, 3, 1]), "keep")]
  nodes = [helper.make_node("ReduceMax", ["x", "axis"], ["m"], keepdims=0),
           helper.make_node("Max", ["guard", "m"], ["mg"]), helper.make_node("Reshape", ["mg", "keep"], ["mk"]),
           helper.make_node("Sub", ["x", "mk"], ["d"]), helper.make_node("Exp", ["d"], ["e"]),
           helper.make_node("ReduceSum", ["e", "axis"], ["s"], keepdims=0),
           helper.make_node("Reshape", ["s", "keep"], ["sk"]), helper.make_node("Div", ["e", "sk"], ["y"])]
  return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)])


def test_jax2tf_softmax_becomes_one_softmax_node_with_the_same_values():
  model = _jax2tf_softmax(-np.inf)
  assert optimize.fuse_softmaxes(model) == 1
  assert [n.op_type for n in model.graph.node] == ["Softmax"]
  x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  expected = np.exp(x - x.max(-1, keepdims=True))
  np.testing.assert_allclose(session.run(None, {"x": x})[0], expected / expected.sum(-1, keepdims=True), rtol=1e-6)


def test_softmax_lookalike_with_a_finite_guard_is_left_alone():
  """jax2tf guards the max with −∞; any other constant is not the recognised pattern (even where
  the maths would allow it), and unrecognised graphs are never rewritten."""
  model = _jax2tf_softmax(0.0)
  assert optimize.fuse_softmaxes(model) == 0
  assert len(model.graph.node) == 8


def _flax_group_norm(groups: int, with_affine: bool):
  """flax GroupNorm over x [batch, 4, 4, 8] as jax2tf lowers it (5-D view, reduce [1, 2, 4], fast variance)."""
  h = w = 4
  c, per = 8, 8 // groups
  n = h * w * per
  rng = np.random.default_rng(3)
  consts = {"view": np.array([-1, h, w, groups, per]), "axes": np.array([1, 2, 4]), "inv_n": np.array(1 / n, np.float32),
            "zero": np.array(0.0, np.float32), "eps": np.array(1e-6, np.float32), "g1": np.array([-1, groups, 1]),
            "g2": np.array([1, groups, per]), "g3": np.array([-1, 1, 1, c]),
            "gamma": rng.uniform(0.5, 2, (1, 1, 1, c)).astype(np.float32),
            "beta": rng.normal(size=(1, 1, 1, c)).astype(np.float32)}
  mk = helper.make_node
  nodes = [mk("Reshape", ["x", "view"], ["r"]), mk("ReduceSum", ["r", "axes"], ["s1"], keepdims=0),
           mk("Mul", ["s1", "inv_n"], ["m"]), mk("Mul", ["m", "m"], ["m2"]),
           mk("Mul", ["r", "r"], ["sq"]), mk("ReduceSum", ["sq", "axes"], ["s2"], keepdims=0),
           mk("Mul", ["s2", "inv_n"], ["ms"]), mk("Sub", ["ms", "m2"], ["d"]), mk("Max", ["zero", "d"], ["v"])]
  for src, dst in (("m", "mb"), ("v", "vb")):
    nodes += [mk("Reshape", [src, "g1"], [f"{dst}1"]), mk("Expand", [f"{dst}1", "g2"], [f"{dst}2"]),
              mk("Reshape", [f"{dst}2", "g3"], [dst])]
  nodes += [mk("Sub", ["x", "mb"], ["xc"]), mk("Add", ["vb", "eps"], ["ve"]), mk("Sqrt", ["ve"], ["sd"]),
            mk("Reciprocal", ["sd"], ["inv"])]
  if with_affine:
    nodes += [mk("Mul", ["inv", "gamma"], ["ig"]), mk("Mul", ["xc", "ig"], ["yn"]), mk("Add", ["yn", "beta"], ["y"])]
  else:
    nodes += [mk("Mul", ["xc", "inv"], ["y"])]
  graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", h, w, c])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", h, w, c])],
                            [numpy_helper.from_array(v, k) for k, v in consts.items()])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), consts


def test_flax_group_norm_becomes_instance_normalization_over_the_groups():
  x = np.random.default_rng(4).normal(2.0, 3.0, size=(3, 4, 4, 8)).astype(np.float32)
  for with_affine in (True, False):
    model, consts = _flax_group_norm(groups=2, with_affine=with_affine)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert optimize.fuse_group_norms(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "InstanceNormalization" in ops and "ReduceSum" not in ops
    fused = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(fused, reference, atol=2e-5)
    groups = x.reshape(3, 4, 4, 2, 4)
    normed = (groups - groups.mean((1, 2, 4), keepdims=True)) / np.sqrt(groups.var((1, 2, 4), keepdims=True) + 1e-6)
    expected = normed.reshape(x.shape) * (consts["gamma"] if with_affine else 1) + (consts["beta"] if with_affine else 0)
    np.testing.assert_allclose(fused, expected, atol=2e-5)


def test_group_norm_lookalike_with_mismatched_mean_divisor_is_left_alone():
  model, _ = _flax_group_norm(groups=2, with_affine=True)
  next(i for i in model.graph.initializer if i.name == "inv_n").CopyFrom(numpy_helper.from_array(
      np.array(1 / 33, np.float32), "inv_n"))
  assert optimize.fuse_group_norms(model) == 0


def test_group_norm_with_one_channel_per_group_is_fused_after_shape_folding():
  """groups == channels: the broadcast's Expand is an identity that shape folding removes first."""
  from vla_jax.export import shape_folding

  model, _ = _flax_group_norm(groups=8, with_affine=True)
  x = np.random.default_rng(5).normal(size=(2, 4, 4, 8)).astype(np.float32)
  reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
  shape_folding.fold_batch_only_values(model)
  assert "Expand" not in [n.op_type for n in model.graph.node]
  assert optimize.fuse_group_norms(model) == 1
  fused = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
  np.testing.assert_allclose(fused, reference, atol=2e-5)


def test_one_element_constants_of_any_rank_are_read_as_scalars():
  """A [1, 1] constant (seen in the MiniLM policy's graph) crashed `float()` on numpy >= 2.4."""
  x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
  y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
  half = numpy_helper.from_array(np.full((1, 1), 0.5, np.float32), "half")
  model = helper.make_model(helper.make_graph([helper.make_node("Mul", ["x", "half"], ["y"])], "g", [x], [y],
                                              initializer=[half]), opset_imports=[helper.make_opsetid("", 18)])
  graph = onnx_graph.Graph(model)
  other, value = graph.split_const(model.graph.node[0], 0.5)
  assert other == "x" and value == 0.5
