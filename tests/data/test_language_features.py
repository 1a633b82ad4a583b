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
