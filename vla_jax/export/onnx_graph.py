"""ONNX-graph utilities the export passes share: lookups, dead-node elimination, runtime probes.

`optimize.py` (fusions), `shape_folding.py` (batch-only values) and `variants.py` (fp16 / int8)
all rewrite the same ONNX graphs; the helpers they have in common live here, so none of them
imports another for its plumbing.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

PROBE_BATCH_SIZES = (1, 2, 3, 5, 11)


class Graph:
  """Producer / consumer / initializer lookups over one ONNX graph."""

  def __init__(self, model):
    from onnx import numpy_helper

    self.model = model
    self.graph = model.graph
    self.inits = {i.name: i for i in self.graph.initializer}
    self._np = numpy_helper
    self.producer = {o: n for n in self.graph.node for o in n.output}
    self.consumers: dict[str, list] = collections.defaultdict(list)
    for n in self.graph.node:
      for i in n.input:
        self.consumers[i].append(n)

  def const(self, name: str) -> np.ndarray | None:
    if name in self.inits:
      return self._np.to_array(self.inits[name])
    node = self.producer.get(name)
    if node is not None and node.op_type == "Constant":
      from onnx import helper

      return self._np.to_array(helper.get_attribute_value(node.attribute[0]))
    return None

  def node(self, name: str, op_type: str | tuple[str, ...]):
    n = self.producer.get(name)
    ops = (op_type,) if isinstance(op_type, str) else op_type
    return n if n is not None and n.op_type in ops else None

  def split_const(self, node, value: float | None = None, rtol: float = 1e-5):
    """For a binary node with one scalar-constant input → (other input, constant) or (None, None)."""
    for k in (0, 1):
      c = self.const(node.input[k])
      if c is not None and c.size == 1 and (value is None or np.isclose(float(c.reshape(-1)[0]), value, rtol=rtol)):
        return node.input[1 - k], float(c.reshape(-1)[0])
    return None, None

  def add_initializer(self, name: str, array: np.ndarray) -> str:
    self.graph.initializer.append(self._np.from_array(array, name))
    return name

  def replace_producer(self, output: str, new_node) -> None:
    """Puts new_node where output's producer was (keeps topological order); the old chain goes dead."""
    old = self.producer[output]
    nodes = self.graph.node
    index = list(nodes).index(old)
    old.output[list(old.output).index(output)] = f"{output}__unfused"
    nodes.insert(index + 1, new_node)
    self.producer[output] = new_node


def eliminate_dead_nodes(model) -> int:
  """Removes nodes none of whose outputs reach a graph output (or a subgraph). Returns how many."""
  graph = model.graph
  needed = {o.name for o in graph.output}
  for n in graph.node:  # Names used inside subgraphs (outer-scope references) are needed too.
    for attr in n.attribute:
      if attr.g is not None and attr.g.node:
        needed |= {i for sub in attr.g.node for i in sub.input}
  keep = []
  for n in reversed(list(graph.node)):
    if any(o in needed for o in n.output):
      keep.append(n)
      needed |= set(n.input)
  removed = len(graph.node) - len(keep)
  del graph.node[:]
  graph.node.extend(reversed(keep))
  used = {i for n in graph.node for i in n.input}
  inits = [i for i in graph.initializer if i.name in used]
  del graph.initializer[:]
  graph.initializer.extend(inits)
  return removed


def _probe_inputs(graph, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Inputs of the right dtypes and shapes (every symbolic dim = batch_size); zeros for ints, so
  lookups stay in range. Shape-derived values never depend on them."""
  from onnx import helper

  initializers = {i.name for i in graph.initializer}
  feeds = {}
  for value in graph.input:
    if value.name in initializers:
      continue
    tensor_type = value.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    shape = [d.dim_value if d.HasField("dim_value") else batch_size for d in tensor_type.shape.dim]
    if dtype == np.bool_:
      feeds[value.name] = np.ones(shape, bool)
    elif np.issubdtype(dtype, np.floating):
      feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    else:
      feeds[value.name] = np.zeros(shape, dtype)
  return feeds


def probe(model, names: Sequence[str], batch_sizes: Sequence[int] = PROBE_BATCH_SIZES) -> dict[str, list[np.ndarray]]:
  """Runs the model in ONNX Runtime at each batch size with `names` as extra outputs → {name: values}."""
  import onnx
  import onnxruntime as ort

  probe_model = onnx.ModelProto()
  probe_model.CopyFrom(model)
  existing = {o.name for o in probe_model.graph.output}
  initializers = {i.name: i for i in model.graph.initializer}
  wanted = [n for n in dict.fromkeys(names) if n not in initializers]
  for name in wanted:
    if name not in existing:
      probe_model.graph.output.append(onnx.ValueInfoProto(name=name))  # ORT accepts outputs without a type.
  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Exactly this graph.
  options.log_severity_level = 3
  session = ort.InferenceSession(probe_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
  outputs = [o.name for o in session.get_outputs()]
  rng = np.random.default_rng(0)
  values: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
  for b in batch_sizes:
    got = dict(zip(outputs, session.run(None, _probe_inputs(model.graph, b, rng))))
    for n in wanted:
      values[n].append(np.asarray(got[n]))
  for name in names:
    if name in initializers:
      values[name] = [onnx.numpy_helper.to_array(initializers[name])] * len(batch_sizes)
  return values


def producers_and_reader_counts(graph) -> tuple[dict[str, Any], dict[str, int]]:
  """({value name: the node that writes it}, {value name: how many node inputs read it})."""
  producer = {o: n for n in graph.node for o in n.output}
  readers: dict[str, int] = {}
  for n in graph.node:
    for i in n.input:
      readers[i] = readers.get(i, 0) + 1
  return producer, readers
