"""Graph rewrites that make the tf2onnx output fast in ONNX Runtime: fuse what jax2tf decomposed.

Why this exists: jax2tf's TF-op lowering writes every flax LayerNorm as ~13 elementwise ops
(sum, square, mean², max(0, ·), rsqrt, broadcasts — flax's "fast variance" form) and every tanh-GELU
as 9, and the diffusion head repeats them for every unrolled sampling step. ONNX Runtime's own
LayerNorm/GELU fusions look for PyTorch's patterns and miss these, so thousands of tiny ops run one
kernel launch each. XLA fuses them; to compete, the exported graph must too. Before the fusions,
shape_folding.py folds the values that depend only on the batch size (runtime shape arithmetic,
batch-broadcast constants). Then four rewrites:

  LayerNorm  mean = Σx/n, var = max(Σx²/n − mean², 0), (x − mean)·rsqrt(var + ε)·γ [+ β]
             → LayerNormalization(x, γ, β, axis=-1, epsilon=ε)          (standard ONNX, opset ≥ 17)
  GELU(tanh) 0.5·h·(1 + tanh(√(2/π)·(h + 0.044715·h³)))
             → com.microsoft FastGelu(h)                                (ONNX Runtime contrib op)
  softmax    e / Σe, e = exp(x − max(−∞, max x)), reductions re-expanded by Reshapes
             → Softmax(x, axis)                                         (standard ONNX)
  GroupNorm  the LayerNorm form over a [N, H, W, G, C/G] view, reduced over axes [1, 2, 4]
             → InstanceNormalization over [N, G, C/G·H·W] in NCHW order [· γ + β]  (standard ONNX)

Each match is checked structurally and by its constants (1/n against γ's size or the group size,
the GELU coefficients, the softmax's −∞ guard and that its Reshapes only restore the reduced axis,
the group layout against the GroupNorm's broadcast targets); anything else is left alone. The
result (policy.opt.onnx) needs ONNX Runtime (FastGelu); the exporter parity-checks it against JAX
like every other artifact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_jax.export import onnx_graph, shape_folding

ORT_DOMAIN = "com.microsoft"


def _skip_broadcasts(g: onnx_graph.Graph, name: str) -> str:
  """Walks back through Reshape/Expand/Unsqueeze that only re-broadcast a value."""
  while True:
    n = g.node(name, ("Reshape", "Expand", "Unsqueeze"))
    if n is None:
      return name
    name = n.input[0]


def _mean_of(g: onnx_graph.Graph, name: str, n_features: int):
  """name = Mul(ReduceSum(X, last axis), 1/n) → X, else None."""
  mul = g.node(name, "Mul")
  if mul is None:
    return None
  other, c = g.split_const(mul, 1.0 / n_features)
  red = g.node(other, "ReduceSum") if other else None
  if red is None or len(red.input) < 2:
    return None
  axes = g.const(red.input[1])
  if axes is None or axes.size != 1:
    return None
  return red.input[0], int(axes.ravel()[0])


def fuse_layer_norms(model) -> int:
  """Rewrites flax LayerNorms (fast-variance form, as jax2tf lowers them); returns how many."""
  from onnx import helper, shape_inference

  ranks = {}
  try:
    inferred = shape_inference.infer_shapes(model)
    for v in list(inferred.graph.value_info) + list(inferred.graph.input):
      if v.type.tensor_type.HasField("shape"):
        ranks[v.name] = len(v.type.tensor_type.shape.dim)
  except Exception:  # Shape inference is only used to confirm the reduced axis is the last one.
    pass
  g = onnx_graph.Graph(model)
  count = 0
  for sqrt in [n for n in g.graph.node if n.op_type == "Sqrt"]:
    recips = g.consumers[sqrt.output[0]]
    if len(recips) != 1 or recips[0].op_type != "Reciprocal":
      continue
    add_eps = g.node(sqrt.input[0], "Add")
    if add_eps is None:
      continue
    var_name, eps = g.split_const(add_eps)
    if var_name is None:
      continue
    mx = g.node(_skip_broadcasts(g, var_name), "Max")
    if mx is None:
      continue
    sub_name, zero = g.split_const(mx, 0.0)
    sub = g.node(sub_name, "Sub") if sub_name else None
    if sub is None or abs(zero) > 0:
      continue
    # γ: Reciprocal → Mul(·, γ) ; output: Mul(x − mean, that) [→ Add(β)].
    gamma_mul = g.consumers[recips[0].output[0]]
    if len(gamma_mul) != 1 or gamma_mul[0].op_type != "Mul":
      continue
    gamma_mul = gamma_mul[0]
    gamma_in = [i for i in gamma_mul.input if i != recips[0].output[0]]
    gamma = g.const(gamma_in[0]) if gamma_in else None
    if gamma is None or gamma.size < 2:
      continue
    d = int(gamma.size)
    mean2 = g.node(sub.input[1], "Mul")
    m2 = _mean_of(g, sub.input[0], d)
    if mean2 is None or mean2.input[0] != mean2.input[1] or m2 is None:
      continue
    m1 = _mean_of(g, mean2.input[0], d)
    square = g.node(m2[0], "Mul")
    if m1 is None or square is None or square.input[0] != square.input[1] or square.input[0] != m1[0]:
      continue
    x, axis = m1
    if axis != -1 and ranks.get(x, None) not in (None, axis + 1):
      continue
    if axis != -1 and x not in ranks:
      continue
    outs = g.consumers[gamma_mul.output[0]]
    if len(outs) != 1 or outs[0].op_type != "Mul":
      continue
    y_mul = outs[0]
    centred = [i for i in y_mul.input if i != gamma_mul.output[0]][0]
    sub_x = g.node(centred, "Sub")
    if sub_x is None or sub_x.input[0] != x or _skip_broadcasts(g, sub_x.input[1]) != mean2.input[0]:
      continue
    out_name = y_mul.output[0]
    beta = np.zeros(d, np.float32)
    after = g.consumers[out_name]
    if len(after) == 1 and after[0].op_type == "Add":
      other = [i for i in after[0].input if i != out_name][0]
      b = g.const(other)
      if b is not None and b.size == d:
        beta, out_name = b.reshape(d).astype(np.float32), after[0].output[0]
    prefix = f"fused_layer_norm_{count}"
    scale = g.add_initializer(f"{prefix}/scale", gamma.reshape(d).astype(np.float32))
    bias = g.add_initializer(f"{prefix}/bias", beta)
    fused = helper.make_node("LayerNormalization", [x, scale, bias], [out_name], name=prefix, axis=-1,
                             epsilon=float(eps))
    g.replace_producer(out_name, fused)
    count += 1
  onnx_graph.eliminate_dead_nodes(model)
  return count


def fuse_tanh_gelus(model) -> int:
  """Rewrites 0.5·h·(1 + tanh(√(2/π)(h + 0.044715 h³))) into FastGelu(h); returns how many."""
  from onnx import helper

  g = onnx_graph.Graph(model)
  count = 0
  for tanh in [n for n in g.graph.node if n.op_type == "Tanh"]:
    scaled = g.node(tanh.input[0], "Mul")
    inner_name, _ = g.split_const(scaled, 0.7978845608, rtol=1e-4) if scaled else (None, None)
    inner = g.node(inner_name, "Add") if inner_name else None
    if inner is None:
      continue
    h = _cubic_input(g, inner)
    if h is None:
      continue
    plus_one = g.consumers[tanh.output[0]]
    if len(plus_one) != 1 or plus_one[0].op_type != "Add" or g.split_const(plus_one[0], 1.0)[0] != tanh.output[0]:
      continue
    half = g.consumers[plus_one[0].output[0]]
    if len(half) != 1 or half[0].op_type != "Mul" or g.split_const(half[0], 0.5)[0] != plus_one[0].output[0]:
      continue
    final = g.consumers[half[0].output[0]]
    if len(final) != 1 or final[0].op_type != "Mul" or h not in final[0].input:
      continue
    fused = helper.make_node("FastGelu", [h], [final[0].output[0]], name=f"fused_gelu_{count}", domain=ORT_DOMAIN)
    g.replace_producer(final[0].output[0], fused)
    count += 1
  if count and not any(o.domain == ORT_DOMAIN for o in model.opset_import):
    model.opset_import.append(helper.make_opsetid(ORT_DOMAIN, 1))
  onnx_graph.eliminate_dead_nodes(model)
  return count


def _group_stat(g: onnx_graph.Graph, name: str, n: int) -> str | None:
  """name = Mul(ReduceSum(R, axes [1, 2, 4], keepdims=0), 1/n) → R, else None."""
  mul = g.node(name, "Mul")
  other, _ = g.split_const(mul, 1.0 / n) if mul is not None else (None, None)
  red = g.node(other, "ReduceSum") if other else None
  if red is None or len(red.input) < 2 or next((a.i for a in red.attribute if a.name == "keepdims"), 1) != 0:
    return None
  axes = g.const(red.input[1])
  return red.input[0] if axes is not None and sorted(axes.ravel().tolist()) == [1, 2, 4] else None


def _group_broadcast(g: onnx_graph.Graph, name: str, groups: int, per_group: int) -> str | None:
  """name = Reshape(Expand(Reshape(v, [-1, G, 1]), [1, G, C/G]), [-1, 1, 1, C]) → v, else None.

  With one channel per group the Expand is an identity that shape folding removes, and the two
  Reshapes may have been collapsed into the last one; both forms mean the same broadcast.
  """
  def step(name: str, op: str, shape: list[int]) -> str | None:
    node = g.node(name, op)
    target = g.const(node.input[1]) if node is not None else None
    return node.input[0] if target is not None and target.ravel().tolist() == shape else None

  inner = step(name, "Reshape", [-1, 1, 1, groups * per_group])
  if inner is None:
    return None
  expanded = step(inner, "Expand", [1, groups, per_group])
  if expanded is not None:
    return step(expanded, "Reshape", [-1, groups, 1])
  if per_group == 1:
    return step(inner, "Reshape", [-1, groups, 1]) or inner
  return None


def fuse_group_norms(model) -> int:
  """Rewrites flax GroupNorm over NHWC feature maps (fast-variance form, as jax2tf lowers it) into
  InstanceNormalization over [N, G, C/G·H·W] in NCHW order; returns how many.

  ONNX Runtime runs jax2tf's form as ~20 kernels, two of them ReduceSums over non-adjacent axes
  [1, 2, 4] of a 5-D view, which are slow; InstanceNormalization on the group-major view reads
  contiguous memory. The transposes to and from NCHW meet the stem conv's own and cancel in ORT.
  """
  from onnx import helper

  g = onnx_graph.Graph(model)
  count = 0
  for sqrt in [n for n in g.graph.node if n.op_type == "Sqrt"]:
    recips = g.consumers[sqrt.output[0]]
    add_eps = g.node(sqrt.input[0], "Add")
    if len(recips) != 1 or recips[0].op_type != "Reciprocal" or add_eps is None:
      continue
    var_b, eps = g.split_const(add_eps)
    maximum = g.node(_skip_broadcasts(g, var_b), "Max") if var_b else None  # Verified below.
    sub_var, zero = g.split_const(maximum, 0.0) if maximum is not None else (None, None)
    sub_var = g.node(sub_var, "Sub") if sub_var else None
    if sub_var is None or zero != 0.0:
      continue
    square_mean = g.node(sub_var.input[0], "Mul")
    red = g.node(square_mean.input[0] if square_mean else "", "ReduceSum") or \
        g.node(square_mean.input[1] if square_mean else "", "ReduceSum")
    square = g.node(red.input[0], "Mul") if red is not None else None
    view = g.node(square.input[0], "Reshape") if square is not None and square.input[0] == square.input[1] else None
    shape = g.const(view.input[1]) if view is not None else None
    if shape is None or shape.ndim != 1 or len(shape) != 5 or shape[0] != -1 or (shape[1:] <= 0).any():
      continue
    height, width, groups, per_group = (int(v) for v in shape[1:])
    n, x = height * width * per_group, view.input[0]
    if _group_stat(g, sub_var.input[0], n) != square.output[0] or _group_broadcast(g, var_b, groups, per_group) \
        != maximum.output[0]:
      continue
    mean_sq = g.node(sub_var.input[1], "Mul")
    mean = mean_sq.input[0] if mean_sq is not None and mean_sq.input[0] == mean_sq.input[1] else ""
    if _group_stat(g, mean, n) != view.output[0]:
      continue
    # Output side: inv [· γ] → Mul(x − mean_b, ·) [+ β].
    scale, inv = None, recips[0].output[0]
    after = g.consumers[inv]
    if len(after) == 1 and after[0].op_type == "Mul":
      other = [i for i in after[0].input if i != inv][0]
      gamma = g.const(other)
      if gamma is not None and gamma.size == groups * per_group:
        scale, inv, after = gamma.reshape(-1), after[0].output[0], g.consumers[after[0].output[0]]
    if len(after) != 1 or after[0].op_type != "Mul":
      continue
    centred = g.node([i for i in after[0].input if i != inv][0], "Sub")
    if centred is None or centred.input[0] != x or _group_broadcast(g, centred.input[1], groups, per_group) != mean:
      continue
    out, bias = after[0].output[0], None
    tail = g.consumers[out]
    if len(tail) == 1 and tail[0].op_type == "Add":
      b = g.const([i for i in tail[0].input if i != out][0])
      if b is not None and b.size == groups * per_group:
        bias, out = b.reshape(-1), tail[0].output[0]
    p = f"fused_group_norm_{count}"
    channels = groups * per_group
    nodes = [helper.make_node("Transpose", [x], [f"{p}/nchw"], perm=[0, 3, 1, 2], name=f"{p}/to_nchw"),
             helper.make_node("Reshape", [f"{p}/nchw", g.add_initializer(f"{p}/groups_shape", np.array(
                 [-1, groups, per_group * height * width]))], [f"{p}/grouped"], name=f"{p}/group"),
             helper.make_node("InstanceNormalization", [f"{p}/grouped", g.add_initializer(
                 f"{p}/ones", np.ones(groups, np.float32)), g.add_initializer(f"{p}/zeros", np.zeros(groups, np.float32))],
                              [f"{p}/normed"], epsilon=float(eps), name=f"{p}/norm"),
             helper.make_node("Reshape", [f"{p}/normed", g.add_initializer(f"{p}/nchw_shape", np.array(
                 [-1, channels, height, width]))], [f"{p}/normed_nchw"], name=f"{p}/ungroup"),
             helper.make_node("Transpose", [f"{p}/normed_nchw"], [f"{p}/nhwc"], perm=[0, 2, 3, 1], name=f"{p}/to_nhwc")]
    last = f"{p}/nhwc"
    for op, value in (("Mul", scale), ("Add", bias)):
      if value is not None:
        name = out if (op == "Add" or bias is None) else f"{p}/scaled"
        nodes.append(helper.make_node(op, [last, g.add_initializer(f"{p}/{op.lower()}", value.astype(np.float32))],
                                      [name], name=f"{p}/{op.lower()}"))
        last = name
    nodes[-1].output[0] = out
    for node in nodes[:-1]:  # Each goes just before the old producer, so they stay in order.
      g.graph.node.insert(list(g.graph.node).index(g.producer[out]), node)
    g.replace_producer(out, nodes[-1])
    count += 1
  onnx_graph.eliminate_dead_nodes(model)
  return count


def _keepdims_reshape(g: onnx_graph.Graph, name: str, axis: int, x_shape: list | None) -> str | None:
  """name = Reshape(r, target) putting back the reduced `axis` of x as size 1 → r, else None."""
  reshape = g.node(name, "Reshape")
  target = g.const(reshape.input[1]) if reshape is not None else None
  if target is None or x_shape is None or target.ndim != 1 or len(target) != len(x_shape) or target[axis] != 1:
    return None
  for t, d in zip(np.delete(target, axis), np.delete(np.asarray(x_shape, object), axis)):
    if not (t == d or (t == -1 and not isinstance(d, int))):  # -1 only where x's dim is symbolic (batch).
      return None
  return reshape.input[0]


def fuse_softmaxes(model) -> int:
  """Rewrites jax.nn.softmax as jax2tf lowers it — e / keepdims(Σe), e = exp(x − keepdims(max(−∞, max x)))
  — into Softmax(x, axis); returns how many."""
  from onnx import helper

  g = onnx_graph.Graph(model)
  shapes = _probed_shapes(model, [g.node(n.input[0], "Sub").input[0] for n in g.graph.node if n.op_type == "Exp"
                                  and g.node(n.input[0], "Sub") is not None])
  count = 0
  for div in [n for n in g.graph.node if n.op_type == "Div"]:
    exp = g.node(div.input[0], "Exp")
    sub = g.node(exp.input[0], "Sub") if exp is not None else None
    if sub is None:
      continue
    x = sub.input[0]
    axes = _reduce_axes(g, g.node(_producer_input(g, div.input[1], "Reshape"), "ReduceSum"), exp.output[0])
    if axes is None or x not in shapes:
      continue
    axis = axes % len(shapes[x])
    total = _keepdims_reshape(g, div.input[1], axis, shapes[x])
    peak = _keepdims_reshape(g, sub.input[1], axis, shapes[x])
    guard = g.node(peak, "Max") if peak else None
    rest, floor = g.split_const(guard) if guard is not None else (None, None)
    if total is None or rest is None or floor != -np.inf or _reduce_axes(g, g.node(rest, "ReduceMax"), x) != axes:
      continue
    if len(g.consumers[exp.output[0]]) != 2:  # The ReduceSum and the Div: e is not used elsewhere.
      continue
    fused = helper.make_node("Softmax", [x], [div.output[0]], name=f"fused_softmax_{count}", axis=axis)
    g.replace_producer(div.output[0], fused)
    count += 1
  onnx_graph.eliminate_dead_nodes(model)
  return count


def _probed_shapes(model, names: list[str]) -> dict[str, list]:
  """Shapes of `names` from running the model at two batch sizes; dims that differ → "batch"."""
  if not names:
    return {}
  values = onnx_graph.probe(model, names, batch_sizes=(1, 2))
  return {n: [a if a == b else "batch" for a, b in zip(v[0].shape, v[1].shape)]
          for n, v in values.items() if v[0].ndim == v[1].ndim}


def _producer_input(g: onnx_graph.Graph, name: str, op_type: str) -> str:
  node = g.node(name, op_type)
  return node.input[0] if node is not None else ""


def _reduce_axes(g: onnx_graph.Graph, reduce, data: str) -> int | None:
  """The single axis a ReduceSum / ReduceMax (keepdims=0) of `data` reduces, else None."""
  if reduce is None or reduce.input[0] != data or len(reduce.input) < 2:
    return None
  keepdims = next((a.i for a in reduce.attribute if a.name == "keepdims"), 1)
  axes = g.const(reduce.input[1])
  if keepdims != 0 or axes is None or axes.size != 1:
    return None
  return int(axes.ravel()[0])


def _cubic_input(g: onnx_graph.Graph, add) -> str | None:
  """add = h + 0.044715·h³ (as jax2tf writes it: Mul(h, Mul(h, Mul(0.044715, h)))) → h."""
  for k in (0, 1):
    h, cubic = add.input[k], add.input[1 - k]
    m1 = g.node(cubic, "Mul")
    if m1 is None or h not in m1.input:
      continue
    m2 = g.node([i for i in m1.input if i != h][0] if list(m1.input).count(h) == 1 else "", "Mul")
    if m2 is None or h not in m2.input:
      continue
    rest = [i for i in m2.input if i != h]
    if len(rest) != 1:
      continue
    m3 = g.node(rest[0], "Mul")
    if m3 is None:
      continue
    other, _ = g.split_const(m3, 0.044715, rtol=1e-4)
    if other == h:
      return h
  return None


def optimize(model) -> dict[str, Any]:
  """Applies every rewrite in place; returns counts for the manifest.

  Batch-only values are folded first (shape_folding.py): that also removes the broadcasts that
  would otherwise sit between the ops the fusions below look for.
  """
  before = len(model.graph.node)
  stats: dict[str, Any] = {"folding": shape_folding.fold_batch_only_values(model)}
  stats.update(group_norms_fused=fuse_group_norms(model), layer_norms_fused=fuse_layer_norms(model),
               gelus_fused=fuse_tanh_gelus(model),
               softmaxes_fused=fuse_softmaxes(model))
  stats.update(nodes_before=before, nodes_after=len(model.graph.node))
  return stats
