"""The conversion chain JAX → jax2tf (TF ops) → TF SavedModel → tf2onnx → ONNX, and the graph checks.

Why every step is checked: jax2tf only emits plain TF ops with
`native_serialization=False, enable_xla=False` (otherwise one `XlaCallModule`, or `XlaDotV2` /
`XlaConvV2` / `XlaGather` ops); tf2onnx 1.17 converts none of those, yet can exit 0 and write a
graph that still holds them. So the TF graph is scanned before conversion, and the ONNX graph
after it (every node, including `Loop`/`If` bodies) must contain only ops the ONNX standard
defines at the target opset, pass `onnx.checker`, and load in ONNX Runtime. Any failure raises
`ExportError` naming the offending ops.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from vla_jax.inference.onnx_runtime import OnnxLoadError, ort_session as _ort_session
from vla_jax.inference.policy_fn import TensorSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF is imported lazily, below.

KNOWN_DOMAINS = ("", "ai.onnx")
BATCH_DIM_NAME = "batch"


class ExportError(ValueError):
  """An export step produced something that cannot be trusted; the message says what and why."""


def _poly_shape(spec: TensorSpec) -> str:
  return "(" + ", ".join("b" if d is None else str(d) for d in spec.shape) + ")"


def tf_module(serve: Callable, params: Any, specs: Sequence[TensorSpec], output_name: str = "actions"):
  """A `tf.Module` holding params as variables and a `serve` tf.function with a dynamic batch.

  `serve(params, inputs_dict)` is the JAX serving function; the TF signature takes the inputs as
  named tensors (names = spec names) and returns {output_name: tensor}.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  # with_gradient=False: saving a SavedModel otherwise traces the VJP too (6x slower save, unused).
  with warnings.catch_warnings():  # enable_xla=False is deprecated upstream — and exactly what we need.
    warnings.simplefilter("ignore", DeprecationWarning)
    converted = jax2tf.convert(
        serve, native_serialization=False, enable_xla=False, with_gradient=False,
        polymorphic_shapes=[None, {s.name: _poly_shape(s) for s in specs}])
  module = tf.Module()
  module.params = tf.nest.map_structure(lambda x: tf.Variable(np.asarray(x), trainable=False), params)
  names = [s.name for s in specs]
  signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]

  @tf.function(autograph=False, input_signature=signature)
  def serve_tf(*args):
    return {output_name: tf.identity(converted(module.params, dict(zip(names, args))), name=output_name)}

  module.serve = serve_tf
  check_tf_graph(serve_tf.get_concrete_function())
  return module


def tf_graph_ops(concrete_function) -> set[str]:
  """Every op type in a concrete function's graph, including nested function bodies."""
  graph = concrete_function.graph
  ops = {op.type for op in graph.get_operations()}
  for fn in graph.as_graph_def().library.function:
    ops |= {node.op for node in fn.node_def}
  return ops


def check_tf_graph(concrete_function) -> None:
  bad = sorted(op for op in tf_graph_ops(concrete_function) if op.startswith("Xla"))
  if bad:
    raise ExportError(f"TF graph contains XLA ops {bad} that tf2onnx cannot convert — jax2tf must lower "
                      "with native_serialization=False, enable_xla=False (and jax ≤ 0.7.1, which still has "
                      "that lowering)")


def save_savedmodel(module, path: Path) -> Path:
  import tensorflow as tf

  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
  return path


def load_savedmodel_fn(path: Path) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
  """Reloads a SavedModel from disk → run(inputs dict) → actions ndarray (what a TF user would do)."""
  import tensorflow as tf

  loaded = tf.saved_model.load(str(path))
  fn = loaded.signatures["serving_default"]

  def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return next(iter(out.values())).numpy()

  run.loaded = loaded  # Keeps the variables alive.
  return run


# ---- ONNX. --------------------------------------------------------------------------------------


def to_onnx(module, opset: int):
  """tf2onnx on the module's serve function → a checked onnx.ModelProto with named dynamic batch dims."""
  import tf2onnx

  fn = module.serve
  signature = fn.input_signature
  try:
    model, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=int(opset),
                                             custom_op_handlers={"PreventGradient": (_forward_identity, [])})
  except Exception as e:  # tf2onnx raises assorted types; keep the cause, add what we were doing.
    raise ExportError(f"tf2onnx failed to convert the TF graph at opset {opset}: {type(e).__name__}: {e}") from e
  name_batch_dims(model)
  check_onnx_graph(model)
  return model


def _forward_identity(ctx, node, name, args):
  """tf2onnx handler: `PreventGradient` (from jax2tf with_gradient=False) is Identity in a forward pass."""
  del ctx, name, args
  node.type = "Identity"
  return node


def name_batch_dims(model) -> None:
  """tf2onnx names unknown dims `unk__N`; call the (shared) batch dim `batch` on inputs and outputs."""
  for value in list(model.graph.input) + list(model.graph.output):
    for dim in value.type.tensor_type.shape.dim:
      if dim.dim_param.startswith("unk__") or (not dim.dim_param and not dim.HasField("dim_value")):
        dim.dim_param = BATCH_DIM_NAME


def iter_nodes(graph) -> Iterator[Any]:
  """All nodes of an ONNX graph, recursing into subgraphs (Loop / If / Scan bodies)."""
  import onnx

  for node in graph.node:
    yield node
    for attr in node.attribute:
      if attr.type == onnx.AttributeProto.GRAPH:
        yield from iter_nodes(attr.g)
      elif attr.type == onnx.AttributeProto.GRAPHS:
        for g in attr.graphs:
          yield from iter_nodes(g)


def unsupported_ops(model, allowed_domains: Sequence[str] = KNOWN_DOMAINS) -> list[str]:
  """Op types (as `domain::op` for non-standard domains) that the ONNX standard does not define."""
  import onnx

  bad = set()
  for node in iter_nodes(model.graph):
    domain = node.domain or ""
    if node.op_type.startswith("Xla"):
      bad.add(node.op_type)
    elif domain in KNOWN_DOMAINS:
      if not onnx.defs.has(node.op_type):
        bad.add(node.op_type)
    elif domain not in allowed_domains:
      bad.add(f"{domain}::{node.op_type}")
  return sorted(bad)


def check_onnx_graph(model, allowed_domains: Sequence[str] = KNOWN_DOMAINS) -> None:
  """Raises ExportError unless the graph has only standard ops and passes onnx.checker."""
  import onnx

  bad = unsupported_ops(model, allowed_domains)
  if bad:
    hint = (" — jax2tf must lower with native_serialization=False, enable_xla=False"
            if any("Xla" in op for op in bad) else " — tf2onnx left TF ops it could not convert")
    raise ExportError(f"ONNX graph contains unsupported ops {bad}{hint}; tf2onnx's exit code does not "
                      "reflect this, so the graph is rejected")
  try:
    onnx.checker.check_model(model)
  except onnx.checker.ValidationError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ExportError(f"onnx.checker rejects the converted graph: {first}") from e


def save_onnx(model, path: Path) -> Path:
  import onnx

  onnx.save(model, str(path))
  return path


def ort_session(path: Path | str, *, threads: int = 0, optimization: str = "all",
                optimized_path: Path | str | None = None):
  """`vla_jax.inference.onnx_runtime.ort_session`, with a load failure raised as an ExportError."""
  try:
    return _ort_session(path, threads=threads, optimization=optimization, optimized_path=optimized_path)
  except OnnxLoadError as e:
    raise ExportError(str(e)) from e



def directory_size_bytes(path: Path) -> int:
  path = Path(path)
  if path.is_file():
    return path.stat().st_size
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def file_digest(path: Path) -> str:
  import hashlib

  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()

