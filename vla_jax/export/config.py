"""Export settings as a `ConfigDict`, so every knob is a flag: `--export.opset=17`.

Keys (`config.<key>`):
  opset                   ONNX opset for tf2onnx (tf2onnx 1.17 supports ≤ 18).
  parity_batch_sizes      batch sizes the SavedModel and ONNX model are checked at against JAX; a
                          size > 1 is what proves the dynamic batch dimension works.
  parity_tolerance        max abs error allowed, in normalised action units (fp32 artifacts).
  parity_seed             seed of the random parity inputs and noise.
  variants                optional extra ONNX files: "fp16" (weights and compute in half precision,
                          fp32 inputs/outputs) and/or "int8" (dynamic quantisation of MatMul weights).
  variant_tolerance       {variant: max abs error (normalised units)}; above it the variant is
                          reported as failing (the export still succeeds: variants are optional).
  dataset                 whose statistics to bake in (None: the run's `eval_dataset`, else the only one;
                          `vla_jax.inference.bundle.choose_statistics`).
  save_optimized_onnx     also write `policy.opt.onnx`: the graph with jax2tf's decomposed LayerNorms
                          and tanh-GELUs fused (vla_jax/export/optimize.py) — needs ONNX Runtime, and
                          is the file to deploy with it; parity-checked like the others.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

MAX_OPSET = 18
VARIANTS = ("fp16", "int8")
GUIDED_SAMPLERS = ("rtc", "hard", "conditioned")  # vla_jax.models.heads.realtime.MODES


def export_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.opset = MAX_OPSET
  c.parity_batch_sizes = (1, 4)
  c.parity_tolerance = 1e-4
  c.parity_seed = 0
  c.variants = ("fp16", "int8")
  # 0.1 normalised units = 5 % of the [-1, 1] action range: a budget, not a guarantee (report only).
  c.variant_tolerance = ml_collections.ConfigDict({"fp16": 0.1, "int8": 0.1})
  c.dataset = config_dict.placeholder(str)
  c.save_optimized_onnx = True
  # Real-time chunking graphs (policy.<mode>.onnx: + prefix_actions, prefix_weights inputs), each
  # parity-checked like the plain one: "rtc" (guided, one VJP per step), "hard" (inpainting) and/or
  # "conditioned" (heads trained with prefix conditioning). Only for flow heads and deterministic
  # (eta = 0) diffusion heads.
  c.guided_samplers = ()
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key if a setting cannot work."""
  if not 7 <= int(config.opset) <= MAX_OPSET:
    raise ValueError(f"export.opset={config.opset} is not supported: tf2onnx 1.17 converts opsets 7..{MAX_OPSET}")
  sizes = tuple(int(b) for b in config.parity_batch_sizes)
  if not sizes or min(sizes) < 1:
    raise ValueError(f"export.parity_batch_sizes={sizes} must be non-empty positive batch sizes")
  if max(sizes) < 2:
    raise ValueError(f"export.parity_batch_sizes={sizes} must include a batch size > 1: the exported batch "
                     "dimension is dynamic and batch 1 alone does not prove it works")
  unknown = sorted(set(config.variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"export.variants has unknown entries {unknown}; expected some of {list(VARIANTS)}")
  unknown = sorted(set(config.get("guided_samplers", ())) - set(GUIDED_SAMPLERS))
  if unknown:
    raise ValueError(f"export.guided_samplers has unknown entries {unknown}; expected some of {list(GUIDED_SAMPLERS)}")
  if float(config.parity_tolerance) <= 0:
    raise ValueError(f"export.parity_tolerance={config.parity_tolerance} must be > 0")
