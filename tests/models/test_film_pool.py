"""The FiLM condition must know word order: which named object is acted on and which is the goal."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vla_jax.models.backbone import FilmPool


def _tokens_and_swapped(seed: int = 0) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Task tokens [1, 6, 16] with position embeddings, and the same words with groups 1 and 4
  swapped ("push the A next to the B" vs "push the B next to the A")."""
  rng = np.random.default_rng(seed)
  content = rng.normal(size=(6, 16)).astype(np.float32)
  position = rng.normal(size=(6, 16)).astype(np.float32)
  swapped = content.copy()
  swapped[[1, 4]] = content[[4, 1]]
  mask = jnp.ones((1, 6), bool)
  return jnp.asarray(content + position)[None], jnp.asarray(swapped + position)[None], mask


def _pool(depth: int, tokens, mask):
  module = FilmPool(context_depth=depth, num_heads=2, mlp_dim=32)
  params = module.init(jax.random.key(0), tokens, mask)
  return lambda x: module.apply(params, x, mask)


def test_mean_pool_cannot_tell_which_object_is_named_first():
  tokens, swapped, mask = _tokens_and_swapped()
  pool = _pool(0, tokens, mask)
  np.testing.assert_allclose(pool(tokens), pool(swapped), atol=1e-6)


def test_contextualised_pool_tells_which_object_is_named_first():
  tokens, swapped, mask = _tokens_and_swapped()
  pool = _pool(1, tokens, mask)
  assert float(jnp.abs(pool(tokens) - pool(swapped)).max()) > 1e-3


def test_padding_tokens_do_not_change_the_condition():
  tokens, _, _ = _tokens_and_swapped()
  mask = jnp.asarray([[True] * 4 + [False] * 2])
  pool = _pool(1, tokens, mask)
  changed = tokens.at[:, 4:].set(100.0)
  np.testing.assert_allclose(pool(tokens), pool(changed), atol=1e-5)


def test_negative_depth_is_rejected_by_name():
  tokens, _, mask = _tokens_and_swapped()
  with pytest.raises(ValueError, match="film_context_depth"):
    FilmPool(context_depth=-1).init(jax.random.key(0), tokens, mask)
