"""Optional smaller ONNX variants of an exported policy, for edge devices that prefer them.

  fp16: weights and arithmetic in half precision, inputs/outputs kept float32/uint8/int32/bool
        (so callers do not change); ops ONNX Runtime's CPU provider lacks in fp16 stay fp32.
  int8: dynamic quantisation (onnxruntime.quantization.quantize_dynamic): MatMul weights stored as
        int8, activations quantised on the fly per call. No calibration data needed.
Both keep the action head in float32: its small network runs once per sampling step and the
sampling loop compounds its rounding errors (measured on a trained tiny policy, int8 everywhere gave
a max error of 0.33 normalised units vs 0.10 with the head kept float32). The head's nodes are
recognised by jax2tf's name scope of the head's `sample` method (`HEAD_SCOPE`).
Both lose accuracy by construction; the exporter measures how much against JAX (parity figures)
and records it in the manifest rather than failing the export.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vla_jax.export.convert import ExportError, check_onnx_graph

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
                                    node_block_list=head_nodes(model))
    wrapped = OnnxModel(half)
    wrapped.topological_sort()  # The converter appends the input casts at the end of the node list.
    half = wrapped.model
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


def head_nodes(model) -> list[str]:
  """Names of the nodes that belong to the action head's sampling loop."""
  return [n.name for n in model.graph.node if HEAD_SCOPE in n.name]


BUILDERS = {"fp16": make_fp16, "int8": make_int8}
