"""The input pipeline with a frozen pretrained encoder: each instruction becomes cached MiniLM features."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vla_jax.data import pipeline
from vla_jax.language.encoder import get_encoder
from tests.data.conftest import TOY_LENGTHS


def _minilm_config(toy_spec, stats_dir, length=16):
  config = pipeline.pipeline_config([toy_spec], statistics_dir=stats_dir, batch_size=8, window=2,
                                    action_horizon=3, language="minilm", max_language_tokens=length)
  config.augmentation.enabled = False
  return config


def test_minilm_batches_carry_encoder_features_equal_to_encoding_each_instruction(toy_spec, stats_dir):
  it = pipeline.make_train_iterator(_minilm_config(toy_spec, stats_dir), process_index=0, process_count=1)
  tokens_config = _minilm_config(toy_spec, stats_dir)
  tokens_config.language = "tokens"
  tokens_config.max_language_tokens = 64
  strings = pipeline.make_train_iterator(tokens_config, process_index=0, process_count=1)
  from vla_jax.data import language

  batch, reference = next(it), next(strings)
  task = batch["task"]
  assert sorted(task) == ["language_embedding", "language_features", "language_mask"]
  assert task["language_features"].shape == (8, 16, 384) and task["language_features"].dtype == np.float32
  assert task["language_mask"].shape == (8, 16) and task["language_mask"].dtype == bool
  # Same stream, same order: the features are the encoder's features of the same instructions.
  texts = language.detokenize(reference["task"]["language_tokens"])
  expected = get_encoder("minilm", 16).encode(texts)
  for key in ("language_features", "language_mask", "language_embedding"):
    np.testing.assert_array_equal(task[key], expected[key], err_msg=key)
  assert {k: v.shape.as_list()[1:] for k, v in it.element_spec["task"].items()} == {
      "language_embedding": [384], "language_features": [16, 384], "language_mask": [16]}


def test_every_distinct_instruction_is_encoded_before_the_first_batch_and_never_again(toy_spec, stats_dir,
                                                                                      monkeypatch):
  encoder = get_encoder("minilm", 12)  # A length no other test uses: a fresh encoder and cache.
  assert encoder.encoded == 0
  it = pipeline.make_train_iterator(_minilm_config(toy_spec, stats_dir, length=12), process_index=0,
                                    process_count=1)
  assert encoder.encoded == len(TOY_LENGTHS["train"])  # One instruction per episode ("task <e>").
  monkeypatch.setattr(encoder, "encode_ids", lambda *a: pytest.fail("the encoder ran during training"))
  seen = set()
  for _ in range(20):  # 160 samples: every one of the 25 training steps several times over.
    seen |= {f.tobytes() for f in next(it)["task"]["language_embedding"]}
  assert len(seen) == len(TOY_LENGTHS["train"])


def test_a_datasets_instructions_are_listed_once_and_cached_beside_it(toy_spec, stats_dir, monkeypatch):
  config = _minilm_config(toy_spec, stats_dir)
  source = pipeline.DatasetSource(toy_spec, config)
  train = source.instructions("train")
  assert train == sorted(f"task {e}" for e in range(len(TOY_LENGTHS["train"])))
  cached = [p for p in os.listdir(stats_dir) if p.startswith("vla_jax_instructions_toy_")]
  assert len(cached) == 1
  monkeypatch.setattr(pipeline.DatasetSource, "raw_episodes", lambda *a, **k: pytest.fail("read the records again"))
  assert pipeline.DatasetSource(toy_spec, config).instructions("train") == train
  monkeypatch.undo()
  val = source.instructions("val")  # Another split: its own list and file.
  assert len(val) == len(TOY_LENGTHS["val"]) and not set(val) & set(train)
  assert len([p for p in os.listdir(stats_dir) if p.startswith("vla_jax_instructions_toy_")]) == 2


def test_model_and_data_must_agree_on_the_encoder(toy_spec, stats_dir):
  from experiments.configs import tabletop

  config = tabletop.get_config("tiny,minilm")
  assert config.data.language == "minilm" and config.model.language.encoder == "minilm"
  assert config.model.language.max_len == config.data.max_language_tokens == 32
  learned = tabletop.get_config("tiny")
  assert learned.data.language == "tokens" and learned.model.language.get("encoder") == "learned"
  with pytest.raises(ValueError, match="unknown language encoder 'bert'"):
    tabletop.get_config("small,bert")


# ---- Word-deletion copies of the training instructions (`config.instruction_variants`). ----------


def test_instruction_copies_are_deterministic_subsequences():
  from vla_jax.data import language

  text = "push the red square next to the blue circle"
  variants = language.instruction_copies(text, 8, 0.2, seed=0)
  assert variants == language.instruction_copies(text, 8, 0.2, seed=0)
  assert variants != language.instruction_copies(text, 8, 0.2, seed=1)
  assert 1 < len(variants) <= 8 and len(set(variants)) == len(variants) and text not in variants
  for v in variants:
    words, it = v.split(), iter(text.split())
    assert all(w in it for w in words), v  # The words of the text, in order, some left out.
    assert 2 <= len(words) < len(text.split())
  assert language.instruction_copies("grab it", 4, 0.5, seed=0) == []  # Too short to delete from.
  names = {"red", "square", "blue", "circle"}
  kept = language.instruction_copies(text, 16, 0.5, seed=0, keep_words=names)
  assert kept and all(names <= set(v.split()) for v in kept)  # Only the other words go.
  assert language.instruction_copies("red square blue circle", 4, 0.5, seed=0, keep_words=names) == []
  assert language.instruction_copies(text, 4, 0.0, seed=0) == []
  with pytest.raises(ValueError, match="word_drop"):
    language.instruction_copies(text, 4, 1.0, seed=0)


def test_copies_with_inserted_words_gain_them_outside_names_and_lose_nothing_else():
  from vla_jax.data import language

  text, names = "push the red square next to the blue circle", {"red", "square", "blue", "circle"}
  verbs = ("grab", "lift", "put")
  plain = language.instruction_copies(text, 16, 0.4, seed=0, keep_words=names)
  assert plain == language.instruction_copies(text, 16, 0.4, 0, names, verbs, inserts=0)  # Off: as before.
  noisy = language.instruction_copies(text, 16, 0.4, 0, names, verbs, inserts=2)
  assert noisy == language.instruction_copies(text, 16, 0.4, 0, names, verbs, inserts=2)
  assert len(noisy) > 8
  for copy in noisy:
    words = copy.split()
    gained = [w for w in words if w in verbs]
    assert len(gained) == 2, copy
    rest, it = [w for w in words if w not in verbs], iter(text.split())
    assert all(w in it for w in rest), copy  # The rest: the text's words, in order, some deleted.
    assert " ".join(rest).count("red square") == 1 and " ".join(rest).count("blue circle") == 1
    assert "red square" in copy and "blue circle" in copy, copy  # Never inserted inside a name.
  assert len({w for copy in noisy for w in copy.split() if w in verbs}) == 3
  with pytest.raises(ValueError, match="insert_words"):
    language.instruction_copies(text, 4, 0.4, 0, names, (), inserts=1)


def test_the_quickstart_trains_on_copies_that_keep_every_name():
  """The `small` default: copies on, never losing a colour, shape or corner word of any template
  (copies without them taught the policy to guess the task from the scene), each gaining one verb
  of the training templates; other variants off."""
  from experiments.configs import tabletop
  from vla_jax.data import language
  from vla_jax.envs import tasks

  data = tabletop.get_config("small").data
  assert data.language == "minilm" and data.instruction_variants > 0 and data.instruction_word_insert == 1
  verbs = set(data.instruction_insert_words)
  gained = 0
  for family in tasks.FAMILIES:
    for template in tasks.TEMPLATES[family].train:
      text = template.format(obj="purple diamond", ref="orange circle", region="bottom right corner")
      names = set(text.split()) & tasks.NAME_WORDS
      copies = language.instruction_copies(text, data.instruction_variants, data.instruction_word_drop, 0,
                                           data.instruction_keep_words, data.instruction_insert_words,
                                           data.instruction_word_insert)
      assert copies, text
      assert all(names <= set(copy.split()) for copy in copies), (text, copies)
      for copy in copies:  # The text with words deleted, plus at most one verb somewhere.
        words = copy.split()
        assert any(w in verbs and _in_order(words[:j] + words[j + 1:], text.split())
                   for j, w in enumerate(words)), copy
        # A copy that is no in-order deletion of its text gained a word (one that re-inserts a
        # deleted verb of its own text cannot be told from a plain deletion).
        gained += not _in_order(words, text.split())
  n_copies = data.instruction_variants * sum(len(tasks.TEMPLATES[f].train) for f in tasks.FAMILIES)
  assert gained >= n_copies // 2, (gained, n_copies)  # Copies without the verb: 0.
  assert verbs == {"put", "move", "place", "carry", "push", "slide", "nudge", "pick", "grab", "grasp", "lift"}
  heldout_words = {w for f in tasks.FAMILIES for kind in ("heldout", "paraphrase")
                   for t in getattr(tasks.TEMPLATES[f], kind) for w in tasks.template_words(t)}
  assert not verbs & heldout_words  # Nothing of a held-out wording is taught by the copies.
  for variant in ("small_h16", "small_h16_rate4", "base"):
    assert tabletop.get_config(variant).data.instruction_variants == 0, variant


def _in_order(words, text_words) -> bool:
  """Whether `words` are some of `text_words`, in order."""
  it = iter(text_words)
  return all(w in it for w in words)


def _copies(text, count, word_drop, seed, keep_words=(), insert_words=(), inserts=0):
  """Stands in for `language.instruction_copies`: the toy instructions ("task <e>") are too short
  to delete from."""
  return [f"{text} copy {i}" for i in range(count)]


def test_training_reads_encoded_copies_at_the_configured_rate_and_resumes_them_exactly(toy_spec, stats_dir,
                                                                                       monkeypatch):
  monkeypatch.setattr(pipeline.language, "instruction_copies", _copies)
  config = _minilm_config(toy_spec, stats_dir, length=10)  # A length no other test uses: a fresh cache.
  config.instruction_variants, config.instruction_variant_rate = 3, 0.5
  encoder = get_encoder("minilm", 10)
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  originals = [f"task {e}" for e in range(len(TOY_LENGTHS["train"]))]
  assert encoder.encoded == 4 * len(originals)  # Originals and copies, all before the first batch.
  assert pipeline.training_instructions(config) == (originals, {t: _copies(t, 3, 0, 0) for t in originals})
  monkeypatch.setattr(encoder, "encode_ids", lambda *a: pytest.fail("the encoder ran during training"))
  rows = {encoder.encode(t)["language_embedding"].tobytes(): t for t in originals}
  rows.update({encoder.encode(c)["language_embedding"].tobytes(): c for t in originals for c in _copies(t, 3, 0, 0)})
  batches = [next(it) for _ in range(30)]
  read = [rows[f.tobytes()] for b in batches for f in b["task"]["language_embedding"]]
  copies = sum(" copy " in t for t in read)
  assert 0.4 < copies / len(read) < 0.6, copies
  assert {t.rsplit(" copy ", 1)[1] for t in read if " copy " in t} == {"0", "1", "2"}

  partial = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  for _ in range(10):
    next(partial)
  resumed = pipeline.make_train_iterator(config, state=partial.state(), process_index=0, process_count=1)
  np.testing.assert_array_equal(next(resumed)["task"]["language_embedding"], batches[10]["task"]["language_embedding"])

  monkeypatch.undo()  # Validation encodes its own (new) instructions.
  val = pipeline.make_val_iterator(config, process_index=0, process_count=1)
  val_texts = pipeline.DatasetSource(toy_spec, config).instructions("val")
  val_rows = {encoder.encode(t)["language_embedding"].tobytes() for t in val_texts}
  assert all(f.tobytes() in val_rows for b in val for f in b["task"]["language_embedding"])


def test_instruction_copies_need_the_frozen_encoder_and_leave_old_resume_states_valid(toy_spec, stats_dir):
  config = _minilm_config(toy_spec, stats_dir)
  off = pipeline._config_fingerprint(config)
  config.instruction_word_drop = 0.3  # Unread while instruction_variants == 0.
  assert pipeline._config_fingerprint(config) == off
  config.instruction_variants = 2
  copies = pipeline._config_fingerprint(config)
  assert copies != off
  config.instruction_insert_words = ("grab", "put")  # Unread while instruction_word_insert == 0.
  assert pipeline._config_fingerprint(config) == copies
  config.instruction_word_insert = 1
  assert pipeline._config_fingerprint(config) != copies
  config.instruction_insert_words = ()
  with pytest.raises(ValueError, match="instruction_word_insert=1 needs config.instruction_insert_words"):
    pipeline.make_train_iterator(config, process_index=0, process_count=1)
  config.instruction_word_insert = 0
  config.language = "tokens"
  with pytest.raises(ValueError, match="instruction_variants=2 needs config.language='minilm'"):
    pipeline.make_train_iterator(config, process_index=0, process_count=1)
