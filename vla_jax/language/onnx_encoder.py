"""The exported instruction encoder on ONNX Runtime: text → features with numpy, tokenizers and
onnxruntime only (no JAX, no TensorFlow), as an edge device runs it.

    encoder = OnnxInstructionEncoder("exports/tabletop")
    encoder.encode(["put the red square in the top left corner"])
      -> {"language_features" float32 [B, L, F] (or "language_embedding" [B, F]), "language_mask" bool [B, L]}

Reads the export's manifest.json (`language_encoder` section), tokenizer.json and encoder.onnx;
each distinct instruction is encoded once and cached, like `encoder.InstructionEncoder`.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from vla_jax.language.tokenizer import WordPieceTokenizer


class OnnxInstructionEncoder:
  """Args: export_dir (an export with a `language_encoder`), threads (ONNX Runtime intra-op; 0 = all)."""

  def __init__(self, export_dir: str | Path, threads: int = 0, max_cache_entries: int = 1024):
    import onnxruntime as ort

    export_dir = Path(export_dir)
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.is_file():
      raise FileNotFoundError(f"{export_dir} is not a vla_jax export (no manifest.json)")
    section = json.loads(manifest_path.read_text()).get("language_encoder")
    if not section:
      raise ValueError(f"{manifest_path}: this export has no language_encoder (its policy reads "
                       "byte tokens or no language)")
    self.section = section
    self.output = section["output"]
    self.tokenizer = WordPieceTokenizer(int(section["max_tokens"]), export_dir / section["tokenizer"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    self.session = ort.InferenceSession(str(export_dir / section["file"]), sess_options=options,
                                        providers=["CPUExecutionProvider"])
    self._cache: collections.OrderedDict[str, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
    self._max_cache = int(max_cache_entries)

  def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    batch = list(texts)
    missing = list(dict.fromkeys(t for t in batch if t not in self._cache))
    if missing:
      ids, mask = self.tokenizer(missing)
      out = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})[0]
      for i, text in enumerate(missing):
        self._cache[text] = (out[i], mask[i])
      while len(self._cache) > self._max_cache:
        self._cache.popitem(last=False)
    rows = [self._cache[t] for t in batch]
    return {self.output: np.stack([r[0] for r in rows]).astype(np.float32),
            "language_mask": np.stack([r[1] for r in rows])}
