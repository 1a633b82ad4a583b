"""Fold what depends only on the batch size into constants, keeping the batch dimension dynamic.

Why this exists: with a polymorphic batch dim, jax2tf computes every reshape / broadcast target at
run time — `Shape(image) → Cast → Slice → Concat(b, 16, 128) → Cast → Reshape` — tf2onnx's einsum
lowering adds `Shape → Gather → Concat` chains, and constants get broadcast to the batch before
use (`jnp.full((b,), level)` → one-hot → time embedding, in every sampling step). In the small
policy ~450 of ~1260 nodes compute nothing but such values, one kernel launch each, and ONNX
Runtime cannot fold them because they depend on the batch size.

Every such value is a function of the input *shapes* alone (never of input values), and the only
input dim that varies is the batch. So the graph is probed: it runs at several batch sizes with
every shape-derived tensor (and the shapes around Reshape / Expand / Slice) exposed as outputs,
and what was seen decides each rewrite:

  same value at every batch size                  → a constant initializer (Slice starts, mean divisors)
  Reshape output constant but one dim = k·batch    → a static target with -1 at that dim
  Expand output shape == its input shape           → removed;  differs only where the input already
                                                     has the batch → static target with 1 there
  Slice end that equals the sliced dim (= k·batch) → "to the end" (the int max)
  batch-uniform value (every row the same row)     → that row as a [1, ...] constant, where the consumer
                                                     is an elementwise op whose output keeps its shape
  MatMul(Concat([.., uniform, ..], -1), W)         → Σ part @ W-rows, the uniform part's product a constant

Candidates are only tensors computed from shapes and constants, so the classification cannot
depend on the probe data. The exporter parity-checks the result against JAX at batch sizes 1 and
4 like every other artifact, and the probe batch sizes include others.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vla_jax.export.onnx_graph import PROBE_BATCH_SIZES, eliminate_dead_nodes, probe, producers_and_reader_counts

_SUBGRAPH_ATTRIBUTES = (5, 10)  # onnx.AttributeProto.GRAPH, GRAPHS.
_RESHAPE_LIKE = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")  # Same data, new shape.
# Elementwise ops with numpy-style broadcasting: a [1, ...] operand gives the same result as its
# batch-broadcast copy whenever another operand already carries the output's full shape.
_BROADCASTING_OPS = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Where", "And", "Or", "Equal", "Less", "Greater",
                     "LessOrEqual", "GreaterOrEqual", "Pow")


def shape_derived_tensors(graph) -> set[str]:
  """Names whose values depend only on constants and on tensor *shapes* (outputs of Shape ops)."""
  derived = {i.name for i in graph.initializer}
  for node in graph.node:  # Topological order: inputs are classified before their consumers.
    if any(a.type in _SUBGRAPH_ATTRIBUTES for a in node.attribute):  # Never fold through Loop / If.
      continue
    if node.op_type in ("Shape", "Constant") or (node.input and all(i in derived for i in node.input if i)):
      derived |= set(node.output)
  return derived


def _constant(values: list[np.ndarray]) -> np.ndarray | None:
  first = values[0]
  if all(v.shape == first.shape and v.dtype == first.dtype and np.array_equal(v, first) for v in values[1:]):
    return first
  return None


def _batch_uniform_row(values: list[np.ndarray], batch_sizes: Sequence[int]) -> np.ndarray | None:
  """Values of shape [k·b, ...] whose rows all equal the batch-1 value → that value, else None."""
  first = values[0]
  if first.ndim == 0 or first.shape[0] != 1 or first.size > 1 << 16:
    return None
  for v, b in zip(values, batch_sizes):
    if v.shape != (b, *first.shape[1:]) or not np.array_equal(v, np.broadcast_to(first, v.shape)):
      return None
  return first


def _batch_linear_shape(shapes: list[tuple[int, ...]], batch_sizes: Sequence[int]) -> np.ndarray | None:
  """Shapes seen at the probe batch sizes that are constant except one dim equal to k·batch →
  that shape with -1 there (a static Reshape target), else None."""
  if any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
    return None
  stacked = np.asarray(shapes, np.int64).reshape(len(shapes), -1)  # [probes, rank]
  varying = np.flatnonzero((stacked != stacked[0]).any(axis=0))
  if len(varying) != 1:
    return None
  column = stacked[:, varying[0]]
  k = column[0] // batch_sizes[0]
  if k < 1 or not np.array_equal(column, k * np.asarray(batch_sizes)) or (np.delete(stacked[0], varying[0]) <= 0).any():
    return None
  out = stacked[0].copy()
  out[varying[0]] = -1
  return out


def _expand_target(values: list[np.ndarray], input_shapes: list[tuple[int, ...]],
                   batch_sizes: Sequence[int]) -> np.ndarray | None:
  """An Expand target that varies only where the input already has that (batch) size → 1 there."""
  if any(v.ndim != 1 or not np.issubdtype(v.dtype, np.integer) for v in values):
    return None
  target = _batch_linear_shape([tuple(v) for v in values], batch_sizes)
  if target is None:
    return None
  axis = int(np.flatnonzero(target == -1)[0])
  offset = len(target) - len(input_shapes[0])  # Expand broadcasts from the right.
  if axis < offset or any(len(s) != len(input_shapes[0]) or s[axis - offset] != v[axis]
                          for s, v in zip(input_shapes, values)):
    return None
  target[axis] = 1
  return target


def _slice_ends(ends: list[np.ndarray], axes: np.ndarray | None, data_shapes: list[tuple[int, ...]]) -> np.ndarray | None:
  """Slice ends that vary with the batch only where they equal the sliced dim → INT64_MAX there."""
  if any(e.ndim != 1 or e.shape != ends[0].shape for e in ends):
    return None
  stacked = np.stack(ends)
  varying = np.flatnonzero((stacked != stacked[0]).any(axis=0))
  if not len(varying):
    return None
  rank = len(data_shapes[0])
  axes = np.arange(len(ends[0])) if axes is None else np.where(axes < 0, axes + rank, axes)
  for e, shape in zip(ends, data_shapes):
    if any(e[i] != shape[axes[i]] for i in varying):
      return None
  out = stacked[0].copy()
  out[varying] = np.iinfo(out.dtype).max  # Clamped to the dim: "to the end" at every batch size.
  return out


def fold_batch_only_values(model, batch_sizes: Sequence[int] = PROBE_BATCH_SIZES, max_rounds: int = 4) -> dict[str, int]:
  """Rewrites in place (see the module docstring) until nothing changes; returns counts of each rewrite.

  More than one round because one rewrite exposes the next (a collapsed reshape chain can end
  where another starts).
  """
  total: dict[str, int] = {}
  for _ in range(max_rounds):
    stats = _fold_once(model, batch_sizes)
    total = {k: total.get(k, 0) + v for k, v in stats.items()}
    if not stats["nodes_removed_as_dead"]:
      break
  return total


def _fold_once(model, batch_sizes: Sequence[int]) -> dict[str, int]:
  from onnx import numpy_helper

  graph = model.graph
  initializers = {i.name: i for i in graph.initializer}
  derived = shape_derived_tensors(graph)
  # Subgraph (Loop / If body) references keep their producers exactly as they are.
  outer_refs = {i for n in graph.node for a in n.attribute if a.type == _SUBGRAPH_ATTRIBUTES[0]
                for sub in a.g.node for i in sub.input}
  keep_as_is = {o.name for o in graph.output} | outer_refs
  candidates = [o for n in graph.node for o in n.output if o in derived and n.op_type != "Constant"]
  # Whole tensors are probed where only their shapes matter: the probe batches are small, and
  # ONNX Runtime has no cheaper way to expose a shape.
  shaped = [t for n in graph.node if n.op_type in ("Expand", "Reshape", "Slice") for t in n.input[:4]]
  shaped += [t for n in graph.node if n.op_type in ("Expand",) + _RESHAPE_LIKE for t in (n.input[0], n.output[0])]
  shaped += [t for n in graph.node if n.op_type in _BROADCASTING_OPS and any(i in derived for i in n.input)
             for t in (*n.input, n.output[0])]
  shaped += [t for n in graph.node if n.op_type == "Concat" and any(i in derived for i in n.input) for t in n.input]
  values = probe(model, [t for t in dict.fromkeys(candidates + shaped) if t], batch_sizes)

  stats = dict.fromkeys(("constants_folded", "reshapes_made_static", "expands_made_static", "expands_removed",
                         "slice_ends_made_static", "uniform_operands_folded", "concat_matmuls_split",
                         "reshape_chains_collapsed"), 0)
  rename: dict[str, str] = {}  # Tensor → the tensor (or new constant) its consumers read instead.
  new_inits: dict[str, np.ndarray] = {}

  def constant(name: str, array: np.ndarray) -> str:
    new_inits.setdefault(name, array)
    return name

  for name in candidates:  # 1. Constants.
    if name in values and name not in keep_as_is:
      const = _constant(values[name])
      if const is not None:
        rename[name] = constant(f"{name}__folded", const)
        stats["constants_folded"] += 1
  for node in graph.node:  # 2. Identity Expands.
    x, y = node.input[0] if node.input else "", node.output[0]
    if node.op_type == "Expand" and y not in keep_as_is and y not in rename and x in values and y in values \
        and all(a.shape == b.shape for a, b in zip(values[x], values[y])):
      rename[y] = x
      stats["expands_removed"] += 1
  new_inputs: dict[tuple[str, int], str] = {}  # (node output, input index) → replacement input.
  for node in graph.node:  # 3. Static Reshape / Expand targets, Slice ends.
    out = node.output[0]
    if out in rename or len(node.input) < 2 or node.input[1] in rename or node.input[1] in initializers:
      pass
    elif node.op_type == "Reshape" and node.input[1] in values:
      shapes = [v.shape for v in values[out]] if out in values else [tuple(v) for v in values[node.input[1]]]
      target = _batch_linear_shape(shapes, batch_sizes)
      if target is not None:
        new_inputs[(out, 1)] = constant(f"{out}__target", target)
        stats["reshapes_made_static"] += 1
    elif node.op_type == "Expand" and all(t in values for t in (node.input[0], node.input[1], out)):
      target = _expand_target(values[node.input[1]], [v.shape for v in values[node.input[0]]], batch_sizes)
      if target is not None:
        new_inputs[(out, 1)] = constant(f"{out}__target", target)
        stats["expands_made_static"] += 1
    if node.op_type == "Slice" and len(node.input) > 2 and node.input[2] in values and node.input[2] not in rename \
        and node.input[0] in values:
      axes = None
      if len(node.input) > 3 and node.input[3]:
        axes_values = values.get(node.input[3]) or [None]
        axes = _constant(axes_values) if axes_values[0] is not None else None
        if axes is None:
          continue
      ends = _slice_ends(values[node.input[2]], axes, [v.shape for v in values[node.input[0]]])
      if ends is not None:
        new_inputs[(out, 2)] = constant(f"{out}__ends", ends)
        stats["slice_ends_made_static"] += 1
  uniform = {}  # 4. Batch-uniform values → their [1, ...] row.
  for name in candidates:
    if name in values and name not in rename:
      row = _batch_uniform_row(values[name], batch_sizes)
      if row is not None:
        uniform[name] = row
  for node in graph.node:
    if node.op_type not in _BROADCASTING_OPS or node.output[0] not in values:
      continue
    out_shapes = [v.shape for v in values[node.output[0]]]
    full = [i for i in node.input if i not in uniform and i in values and [v.shape for v in values[i]] == out_shapes]
    if not full:
      continue
    for k, name in enumerate(node.input):
      if name in uniform and (node.output[0], k) not in new_inputs:
        new_inputs[(node.output[0], k)] = constant(f"{name}__row", uniform[name])
        stats["uniform_operands_folded"] += 1
  split_nodes = _split_concat_matmuls(graph, uniform, values, initializers, constant)
  stats["concat_matmuls_split"] = len(split_nodes)
  collapsed = _collapse_reshape_chains(graph, values, batch_sizes, constant, keep_as_is, rename)
  stats["reshape_chains_collapsed"] = len(collapsed)
  split_nodes.update(collapsed)

  for name, array in new_inits.items():
    graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
  nodes = []
  for node in graph.node:
    if node.output and node.output[0] in split_nodes:
      for new in split_nodes[node.output[0]]:  # Their inputs may name tensors folded away above.
        new.input[:] = [rename.get(name, name) for name in new.input]
        nodes.append(new)
      continue
    for k, name in enumerate(node.input):
      replacement = new_inputs.get((node.output[0], k)) if node.output else None
      node.input[k] = replacement or rename.get(name, name)
    nodes.append(node)
  del graph.node[:]
  graph.node.extend(nodes)
  before = len(graph.node)
  eliminate_dead_nodes(model)
  stats["nodes_removed_as_dead"] = before - len(graph.node)
  return stats


def _split_concat_matmuls(graph, uniform, values, initializers, constant) -> dict[str, list]:
  """MatMul(Concat(parts, last axis), W) with a batch-uniform part → Σ_i part_i @ W[rows_i], the
  uniform parts' products folded into one [1, N] constant. Returns {MatMul output: new nodes}."""
  from onnx import helper, numpy_helper

  producer, consumers = producers_and_reader_counts(graph)
  out: dict[str, list] = {}
  for node in graph.node:
    if node.op_type != "MatMul" or node.input[1] not in initializers:
      continue
    concat = producer.get(node.input[0])
    if concat is None or concat.op_type != "Concat" or consumers.get(concat.output[0], 0) != 1:
      continue
    parts = list(concat.input)
    if not any(p in uniform for p in parts) or not all(p in values for p in parts):
      continue
    w = numpy_helper.to_array(initializers[node.input[1]])
    axis = next(a.i for a in concat.attribute if a.name == "axis")
    if w.ndim != 2 or axis not in (-1, 1) or any(values[p][0].ndim != 2 for p in parts):
      continue  # [B, K] @ [K, N] only: then a uniform part is one row and its product one bias row.
    widths = [values[p][0].shape[-1] for p in parts]
    if sum(widths) != w.shape[0]:
      continue
    const_sum = np.zeros((1, w.shape[1]), np.float32)
    terms, start = [], 0
    for part, width in zip(parts, widths):
      rows = f"{node.input[1]}__rows_{start}_{start + width}"  # Same name for the same slice: CSE-able.
      if part in uniform:
        const_sum = const_sum + uniform[part].astype(np.float32) @ w[start:start + width]
      else:
        constant(rows, w[start:start + width])
        terms.append(helper.make_node("MatMul", [part, rows], [f"{node.output[0]}__part_{start}"],
                                      name=f"{node.name}/part_{start}"))
      start += width
    if not terms:
      continue
    total = terms[0].output[0]
    new_nodes = list(terms)
    for k, term in enumerate(terms[1:] + [None]):
      last = term is None
      rhs = constant(f"{node.output[0]}__uniform_part", const_sum.astype(np.float32)) if last else term.output[0]
      result = node.output[0] if last else f"{node.output[0]}__sum_{k}"
      new_nodes.append(helper.make_node("Add", [total, rhs], [result], name=f"{node.name}/sum_{k}"))
      total = result
    out[node.output[0]] = new_nodes
  return out


def _collapse_reshape_chains(graph, values, batch_sizes, constant, keep_as_is, rename) -> dict[str, list]:
  """Reshape / Squeeze / Unsqueeze / Flatten chains (each link read only by the next) → one
  Reshape of the chain's input to the last link's static shape. Returns {last output: [node]}."""
  from onnx import helper

  producer, readers = producers_and_reader_counts(graph)
  reader_of: dict[str, Any] = {}
  for n in graph.node:
    for i in n.input:
      reader_of[i] = n

  def static_target(name: str) -> np.ndarray | None:
    return _batch_linear_shape([v.shape for v in values[name]], batch_sizes) if name in values else None

  out: dict[str, list] = {}
  for node in graph.node:
    y = node.output[0] if node.output else ""
    if node.op_type not in _RESHAPE_LIKE or y not in values or y in rename:
      continue
    reader = reader_of.get(y)
    if readers.get(y, 0) == 1 and y not in keep_as_is and reader.op_type in _RESHAPE_LIKE \
        and static_target(reader.output[0]) is not None:
      continue  # Not a chain's end: the next link's rewrite absorbs this one.
    root, links = node.input[0], 0
    while True:
      link = producer.get(root)
      if link is None or link.op_type not in _RESHAPE_LIKE or readers.get(root, 0) != 1 or root in keep_as_is:
        break
      root, links = link.input[0], links + 1
    if not links:
      continue
    target = static_target(y)
    if target is None:
      continue
    out[y] = [helper.make_node("Reshape", [root, constant(f"{y}__chain_target", target)], [y],
                               name=f"{node.name or y}/collapsed_{links + 1}")]
  return out
