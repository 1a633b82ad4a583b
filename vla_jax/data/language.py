"""Byte-level instruction tokenizer shared by the input pipeline, evaluation and export, and the
word-deletion variants that augment training instructions.

Why bytes: no vocabulary file to ship or keep in sync, every string of every dataset (OXE, our
simulator, held-out phrasings with unseen words) has an exact encoding, and the numpy and
TensorFlow versions below are trivially identical, so a policy sees the same ids in training
(tf.data) and in closed-loop evaluation or on the robot (numpy).

Ids: 0 is padding; byte b (0..255) maps to b + 1. Text longer than `max_len` bytes is cut.
"""

from __future__ import annotations

import zlib
from typing import Collection, Sequence

import numpy as np

PAD_ID = 0
VOCAB_SIZE = 257  # 256 byte values + padding.


def tokenize(texts: Sequence[str] | str, max_len: int) -> np.ndarray:
  """Encodes instructions to byte ids.

  Args:
    texts: one string or a sequence of B strings.
    max_len: fixed token length L; longer texts are truncated, shorter ones padded with 0.

  Returns:
    int32 [B, L] (or [L] for a single string).
  """
  if max_len <= 0:
    raise ValueError(f"tokenize: max_len must be positive, got {max_len}")
  single = isinstance(texts, str)
  batch = [texts] if single else list(texts)
  out = np.zeros((len(batch), max_len), np.int32)
  for i, text in enumerate(batch):
    if not isinstance(text, (str, bytes)):
      raise TypeError(f"tokenize: item {i} is {type(text).__name__}, expected str")
    raw = text.encode("utf-8") if isinstance(text, str) else text
    ids = np.frombuffer(raw[:max_len], np.uint8).astype(np.int32) + 1
    out[i, : len(ids)] = ids
  return out[0] if single else out


def detokenize(ids: np.ndarray) -> list[str]:
  """Inverse of `tokenize` for int [B, L] ids (padding dropped)."""
  ids = np.atleast_2d(np.asarray(ids))
  return [bytes((row[row > 0] - 1).astype(np.uint8)).decode("utf-8", errors="replace") for row in ids]


def instruction_copies(text: str, count: int, word_drop: float, seed: int, keep_words: Collection[str] = (),
                       insert_words: Sequence[str] = (), inserts: int = 0) -> list[str]:
  """`count` copies of `text` with words deleted (and optionally some inserted), for training-time
  instruction augmentation.

  Each word not in `keep_words` is deleted with probability `word_drop`; every copy loses at least
  one word and keeps at least two (a text with no deletable word or fewer than three words gets no
  copies). Why: a policy trained on a few templates per task learns to read the one verb that names
  the task; a sentence missing that verb must be read from the rest ("the red square next to the
  blue circle" is a push by its structure), which is what a phrasing it never saw asks of it.
  `keep_words` are the names of objects and places: a copy without them names no single task, and a
  policy trained on such copies learns to guess the task from the scene (language-blind success
  rises). Deterministic in (text, seed), so the copies, like the batches, are the same on every run
  and after a resume. Duplicates are dropped (the list can be shorter than `count`).

  `inserts` > 0: after the deletions, each copy also gets that many words drawn from `insert_words`
  at random places outside the names. With the verbs of every family's training templates as
  `insert_words`, a push copy can say "lift" and still be a push: what the names say (one object,
  an object and a place, two objects) must outweigh a stray verb, as in "bring the red square
  beside the blue circle without lifting it".
  """
  if not 0.0 <= word_drop < 1.0:
    raise ValueError(f"word_drop must be in [0, 1), got {word_drop}")
  if inserts < 0 or (inserts and not insert_words):
    raise ValueError(f"inserts={inserts} needs inserts >= 0 and a non-empty insert_words, got {list(insert_words)}")
  words = text.split()
  deletable = np.asarray([w not in keep_words for w in words], bool)
  if len(words) < 3 or not deletable.any() or count <= 0 or word_drop == 0.0:
    return []
  rng = np.random.default_rng([int(seed), zlib.crc32(text.encode("utf-8"))])
  variants: dict[str, None] = {}
  for _ in range(count):
    keep = (rng.random(len(words)) >= word_drop) | ~deletable
    if keep.all():  # At least one word goes.
      keep[rng.choice(np.flatnonzero(deletable))] = False
    while keep.sum() < 2:  # At least two stay.
      keep[rng.choice(np.flatnonzero(~keep))] = True
    copy = [w for w, k in zip(words, keep) if k]
    for _ in range(inserts):  # No draws when off: the deletion-only copies stay as they were.
      # Never inside a name ("red square", "top left corner"): between two kept words.
      places = [i for i in range(len(copy) + 1)
                if i in (0, len(copy)) or not (copy[i - 1] in keep_words and copy[i] in keep_words)]
      copy.insert(places[int(rng.integers(len(places)))], str(insert_words[int(rng.integers(len(insert_words)))]))
    variants[" ".join(copy)] = None
  return list(variants)


def tokenize_tf(texts, max_len: int):
  """TensorFlow twin of `tokenize` for use inside tf.data: tf.string [...] -> tf.int32 [..., L]."""
  import tensorflow as tf  # Local import: numpy users (evaluation, robots) need not load TF.

  texts = tf.convert_to_tensor(texts, tf.string)
  shape = tf.shape(texts)
  flat = tf.reshape(texts, [-1])
  flat = tf.strings.substr(flat, 0, max_len, unit="BYTE")
  codes = tf.strings.unicode_decode(flat, "ISO-8859-1")  # One code point per byte, 0..255.
  dense = (codes + 1).to_tensor(default_value=PAD_ID, shape=[None, max_len])
  return tf.reshape(tf.cast(dense, tf.int32), tf.concat([shape, [max_len]], 0))


def instruction_inputs(language_config, instructions: Sequence[str], encoder=None) -> dict[str, np.ndarray]:
  """The model's `task` dict for B instruction strings, for any `model.language` config.

  Learned bytes → `language_tokens`; the frozen MiniLM encoder → `language_features` +
  `language_mask` (mode "tokens") or its `language_embedding` (mode "embedding"), from `encoder`
  (anything with `.encode(list[str]) -> dict`, e.g. the ONNX encoder of a JAX-free runtime) or the
  process's shared JAX encoder (cached per string).
  """
  mode, kind = language_config.mode, language_config.get("encoder", "learned")
  instructions = list(instructions)
  if mode == "none":
    return {}
  if kind == "learned":
    if mode == "tokens":
      return {"language_tokens": tokenize(instructions, int(language_config.max_len))}
    raise ValueError("this model reads a dataset's precomputed language_embedding (language.encoder='learned', "
                     "mode='embedding'), which cannot be computed for a new instruction string; use a model "
                     "with language.encoder='minilm' or 'learned' bytes (mode 'tokens')")
  if encoder is None:
    from vla_jax.language.encoder import get_encoder  # Local: byte-tokenizer users need not load JAX.

    encoder = get_encoder(kind, int(language_config.max_len))
  features = encoder.encode(instructions)
  if mode == "tokens":
    return {"language_features": features["language_features"], "language_mask": features["language_mask"]}
  return {"language_embedding": features["language_embedding"]}
