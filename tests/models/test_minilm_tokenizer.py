"""The task tokens a policy makes from frozen MiniLM features (LanguageTokenizer, encoder "minilm")."""

import flax.linen as nn
import jax
import numpy as np

from vla_jax.models import tokenizers


def _tokenizer(**kwargs):
  defaults = dict(width=16, mode="tokens", vocab_size=257, byte_embedding_dim=8, bytes_per_token=4,
                  embedding_num_tokens=1, encoder="minilm", num_task_tokens=3, num_heads=2)
  return tokenizers.LanguageTokenizer(**{**defaults, **kwargs})


def _task(seed=0, b=2, length=10, dim=24):
  rng = np.random.default_rng(seed)
  mask = np.zeros((b, length), bool)
  mask[0, :4], mask[1, :7] = True, True
  features = rng.normal(size=(b, length, dim)).astype(np.float32) * mask[..., None]
  return {"language_features": features, "language_mask": mask}


def test_features_are_resampled_to_k_valid_task_tokens():
  module, task = _tokenizer(), _task()
  params = module.init(jax.random.key(0), task)
  tokens, mask = module.apply(params, task)
  assert tokens.shape == (2, 3, 16) and mask.shape == (2, 3) and bool(mask.all())
  all_tokens, all_mask = _tokenizer(num_task_tokens=0).apply(
      _tokenizer(num_task_tokens=0).init(jax.random.key(0), task), task)
  assert all_tokens.shape == (2, 10, 16)
  np.testing.assert_array_equal(all_mask, task["language_mask"])


def test_padding_positions_cannot_change_the_task_tokens():
  module, task = _tokenizer(), _task()
  params = module.init(jax.random.key(0), task)
  noisy = dict(task, language_features=task["language_features"] + 5.0 * ~task["language_mask"][..., None])
  np.testing.assert_allclose(module.apply(params, noisy)[0], module.apply(params, task)[0], atol=1e-5)


def test_token_dropout_acts_only_in_training_and_never_hides_cls():
  module, task = _tokenizer(token_dropout=0.5, num_task_tokens=0), _task(length=10)
  params = module.init(jax.random.key(0), task)
  _, eval_mask = module.apply(params, task, train=False)
  np.testing.assert_array_equal(eval_mask, task["language_mask"])
  hidden = 0
  for seed in range(8):
    _, mask = module.apply(params, task, train=True, rngs={"dropout": jax.random.key(seed)})
    mask = np.asarray(mask)
    assert mask[:, 0].all(), "[CLS] (position 0) must stay visible"
    assert not (mask & ~task["language_mask"]).any(), "dropout must never reveal padding"
    hidden += int((task["language_mask"] & ~mask).sum())
  real = int(task["language_mask"][:, 1:].sum()) * 8
  assert 0.3 * real < hidden < 0.7 * real  # ~50 % of the real non-[CLS] tokens.


def test_no_absolute_position_embedding_unless_asked():
  task = _task()
  assert "position_embedding" not in _tokenizer().init(jax.random.key(0), task)["params"]
  assert "position_embedding" in _tokenizer(feature_position_embedding=True).init(jax.random.key(0), task)["params"]


def _encoder_outputs(seed=0, b=3, length=12):
  """Per-token states and sentence embeddings of a small random MiniLM-shaped network."""
  from vla_jax.language import minilm  # The real module's pooling, not a re-statement of it.
  config = minilm.MiniLMConfig(hidden_size=24, num_layers=1, num_heads=2, intermediate_size=48, max_positions=32)
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, config.vocab_size, (b, length)).astype(np.int32)
  mask = np.arange(length)[None] < np.array([4, 9, 12])[:b, None]
  module = minilm.MiniLM(config)
  out = module.apply(module.init(jax.random.key(seed), ids, mask), ids, mask)
  return {"language_features": np.asarray(out["token_embeddings"]), "language_mask": mask}, out["sentence_embedding"]


def test_sentence_token_projects_the_encoders_sentence_embedding_and_ignores_dropout():
  module, (task, sentence) = _tokenizer(sentence_token=True, token_dropout=0.5), _encoder_outputs()
  params = module.init(jax.random.key(0), task)
  tokens, mask = module.apply(params, task)
  assert tokens.shape == (3, 4, 16) and bool(np.asarray(mask).all())  # K = 3 resampled + 1.
  p = params["params"]
  expected = nn.Dense(16).apply({"params": p["sentence_projection"]},
                                nn.LayerNorm().apply({"params": p["sentence_norm"]}, sentence))
  np.testing.assert_allclose(tokens[:, -1], expected, atol=1e-5)
  # Token dropout hides words from the resampled tokens, never from the sentence summary.
  trained, _ = module.apply(params, task, train=True, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_allclose(trained[:, -1], expected, atol=1e-5)
  assert not np.allclose(trained[:, :-1], tokens[:, :-1], atol=1e-3)
  assert "sentence_projection" not in _tokenizer().init(jax.random.key(0), task)["params"]
