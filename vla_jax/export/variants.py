"""Optional smaller ONNX variants of an exported policy, for edge devices that prefer them.

  fp16: weights and arithmetic in half precision, inputs/outputs kept float32/uint8/int32/bool
        (so callers do not change); ops ONNX Runtime's CPU provider lacks in fp16 stay fp32.
  int8: dynamic quantisation (onnxruntime.quantization.quantize_dynamic): MatMul weights stored as
        int8, activations quantised on the fly per call. No calibration data needed.
Both keep the action head in float32: its small network runs once per sampling step and the
sampling loop compounds its rounding errors (measured on a trained tiny policy, int8 everywhere gave
a max error of 0.33 normalised units vs 0.10 with the head kept float32). The head's nodes are
recognised by jax2tf's name scope of the head's `sample` method (`HEAD_SCOPE`).
"Kept float32" has to include the tensors between those nodes: ONNX Runtime's converter computes a
blocked node in fp32 but rounds its output to fp16 and back for the next one, so every head tensor
was still fp16-ranged. On the quickstart policy after 2000 training steps the denoiser's final
LayerNorm sum of squares reached 1.1e5 > 65504 (fp16 max): inf → rsqrt 0 → the LayerNorm returned
its bias, and the fp16 variant's actions were off by 1.72 normalised units (0.0011 at step 500, when
the sum was 1.5e4). `keep_fp32_between_fp32_nodes` removes those round trips.
Both lose accuracy by construction; the exporter measures how much against JAX (parity figures)
and records it in the manifest rather than failing the export.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vla_jax.export.convert import ExportError, check_onnx_graph
from vla_jax.export.onnx_graph import Graph, eliminate_dead_nodes

# Non-standard domain the ORT quantiser and fp16 converter may emit (DynamicQuantizeMatMul etc.).
ORT_DOMAINS = ("", "ai.onnx", "com.microsoft")
# Ops kept in fp32 in the fp16 variant: ORT's CPU provider has no fp16 kernels for some of these,
# and the sampling loop's schedule arithmetic wants full precision.
HEAD_SCOPE = "/head.sample/"
FP16_KEEP_FP32 = ("Cos", "Sin", "Exp", "Sqrt", "Reciprocal", "ReduceMax", "ReduceSum", "ReduceProd", "Range",
                  "CumSum", "Erf", "Tanh", "Softmax")


def make_fp16(src: Path, dst: Path) -> Path:
  import onnx
  from onnxruntime.transformers.float16 import convert_float_to_float16
  from onnxruntime.transformers.onnx_model import OnnxModel

  model = onnx.load(str(src))
  try:
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP16_KEEP_FP32),
                                    node_block_list=head_nodes(model) + norm_statistic_nodes(model))
    wrapped = OnnxModel(half)
    wrapped.topological_sort()  # The converter appends the input casts at the end of the node list.
    half = wrapped.model
    keep_fp32_between_fp32_nodes(half)
  except Exception as e:
    raise ExportError(f"fp16 conversion of {src} failed: {type(e).__name__}: {e}") from e
  check_onnx_graph(half, allowed_domains=ORT_DOMAINS)
  onnx.save(half, str(dst))
  return dst


def make_int8(src: Path, dst: Path) -> Path:
  import onnx
  from onnxruntime.quantization import QuantType, quantize_dynamic
  from onnxruntime.quantization.shape_inference import quant_pre_process

  with tempfile.TemporaryDirectory() as tmp:
    prepared = Path(tmp) / "prepared.onnx"
    try:  # Shape inference + basic optimisation first, as ORT's quantisation docs recommend.
      quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    except Exception:  # Pre-processing is an optimisation; quantise the original if it fails.
      prepared = src
    model = onnx.load(str(prepared))
    targets = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    head = set(head_nodes(model))
    backbone = [n for n in targets if n not in head] or targets
    try:
      quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                       nodes_to_quantize=backbone)
    except Exception as e:
      raise ExportError(f"int8 dynamic quantisation of {src} failed: {type(e).__name__}: {e}") from e
  check_onnx_graph(onnx.load(str(dst)), allowed_domains=ORT_DOMAINS)
  return dst


def keep_fp32_between_fp32_nodes(model) -> int:
  """Removes Cast(fp32→fp16) → Cast(fp16→fp32) round trips, in place; returns how many.

  convert_float_to_float16 makes every float edge fp16, so between two nodes it kept in fp32 it
  writes producer → Cast(fp16) → Cast(fp32) → consumer. That rounds (and overflows at 65504) what
  both ends compute in fp32; the consumer now reads the producer's fp32 output directly. Top-level
  graph only (the exported sampling loop is unrolled, so there are no Loop bodies); the nodes must
  be in topological order (dead-node elimination walks them backwards).
  """
  from onnx import TensorProto, helper

  graph = model.graph
  fp32 = {v.name for v in list(graph.value_info) + list(graph.input) + list(graph.output)
          if v.type.tensor_type.elem_type == TensorProto.FLOAT}
  fp32 |= {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
  producer = Graph(model).producer
  cast_to = lambda n: helper.get_attribute_value(n.attribute[0]) if n.op_type == "Cast" else None  # noqa: E731
  renamed = {}
  for n in graph.node:
    up = producer.get(n.input[0]) if cast_to(n) == TensorProto.FLOAT else None
    if up is not None and cast_to(up) == TensorProto.FLOAT16 and up.input[0] in fp32:
      renamed[n.output[0]] = up.input[0]
  outputs = {o.name for o in graph.output}
  for n in graph.node:
    if n.op_type == "Cast" and n.output[0] in renamed and n.output[0] in outputs:
      # A graph output keeps its name: the round trip becomes an Identity of the fp32 value.
      n.CopyFrom(helper.make_node("Identity", [renamed.pop(n.output[0])], [n.output[0]], name=n.name))
      continue
    for k, name in enumerate(n.input):
      n.input[k] = renamed.get(name, name)
  eliminate_dead_nodes(model)
  live = {o for n in graph.node for o in n.output}
  kept = [v for v in graph.value_info if v.name in live]
  del graph.value_info[:]
  graph.value_info.extend(kept)
  return len(renamed)


def norm_statistic_nodes(model) -> list[str]:
  """Names of the x·x feeding a ReduceSum and of the constant scalings (·1/n) of any ReduceSum.

  That is the front of every LayerNorm / GroupNorm's mean and mean of squares as jax2tf writes
  them. Kept fp32, only E[x²] itself is rounded to fp16 (fine while the RMS is below 256), not x²
  or Σx², which reach 65504 once |x| > 256 or RMS > 22.6 over 128 features: the quickstart policy's
  backbone LayerNorm sums of squares grew with training (1.7e4, 4.4e4, 5.1e4 at steps 500, 1500, 2500).
  """
  graph = model.graph
  constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
  lookups = Graph(model)
  producer, consumers = lookups.producer, lookups.consumers
  names = []
  for n in graph.node:
    if n.op_type != "ReduceSum":
      continue
    up = producer.get(n.input[0])
    if up is not None and up.op_type == "Mul" and up.input[0] == up.input[1]:
      names.append(up.name)
    names += [c.name for c in consumers[n.output[0]] if c.op_type in ("Mul", "Div")
              and any(i in constants for i in c.input if i != n.output[0])]
  return names


def head_nodes(model) -> list[str]:
  """Names of the nodes that belong to the action head's sampling loop."""
  return [n.name for n in model.graph.node if HEAD_SCOPE in n.name]


BUILDERS = {"fp16": make_fp16, "int8": make_int8}
