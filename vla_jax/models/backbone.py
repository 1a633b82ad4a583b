"""The backbone: tokenize task and observations, run one transformer, return readout embeddings.

Sequence layout (S = Lt + T·N + R tokens):
    [ task tokens (Lt) | obs tokens t=0 (N) | … | obs tokens t=T-1 (N) | readout tokens (R) ]
with N = cameras × patches + proprio modalities. The block-wise attention mask:
  * task tokens attend to task tokens only (the instruction does not depend on the observations);
  * an observation token at time t attends to the task and to observations at times ≤ t
    (causal across time, full within a timestep);
  * readout tokens attend to the task and all observations (and to themselves);
  * nothing else attends to readouts, so adding/changing readouts never changes other outputs;
  * padded keys (language padding, timesteps before the episode start) are masked out.
Every token may always attend to itself, so no row of the mask is empty.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.models import tokenizers
from vla_jax.models.config import embodiment_names
from vla_jax.models.transformer import Transformer

Array = jnp.ndarray

TASK, OBSERVATION, READOUT = 0, 1, 2


def require_key(tree: dict, key: str, where: str) -> Array:
  """tree[key], or a ValueError naming the missing key and the keys that do exist."""
  if key not in tree:
    raise ValueError(f"{where}/{key} is required by the model config but missing; "
                     f"{where} has keys {sorted(tree)}")
  return tree[key]


def block_attention_mask(num_task: int, window: int, tokens_per_step: int,
                         num_readout: int) -> np.ndarray:
  """The static part of the mask: bool [S, S], entry [q, k] = query q may attend to key k."""
  kind = np.concatenate([np.full(num_task, TASK), np.full(window * tokens_per_step, OBSERVATION),
                         np.full(num_readout, READOUT)])
  time = np.concatenate([np.full(num_task, -1), np.repeat(np.arange(window), tokens_per_step),
                         np.full(num_readout, window)])
  q_kind, k_kind = kind[:, None], kind[None, :]
  q_time, k_time = time[:, None], time[None, :]
  is_context = (k_kind == TASK) | (k_kind == OBSERVATION)
  allowed = np.where(q_kind == TASK, k_kind == TASK, False)
  allowed |= (q_kind == OBSERVATION) & (k_kind == TASK)
  allowed |= (q_kind == OBSERVATION) & (k_kind == OBSERVATION) & (k_time <= q_time)
  allowed |= (q_kind == READOUT) & is_context
  allowed |= np.eye(len(kind), dtype=bool)
  return allowed


def language_input_keys(language: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The `task/*` keys a model with this `language` config reads (configs saved before the
  `encoder` key existed are "learned")."""
  encoder, mode = language.get("encoder", "learned"), language.mode
  if mode == "none":
    return ()
  if mode == "embedding":
    return ("language_embedding",)
  return ("language_features", "language_mask") if encoder == "minilm" else ("language_tokens",)


class FilmPool(nn.Module):
  """Task tokens [B, Lt, D] + mask bool [B, Lt] → the instruction summary [B, D] that FiLMs the stem.

  A plain mean of the byte-group tokens (context_depth = 0) is a bag of words: the sum of
  (content + position) loses which word sat where, so "push the A next to the B" and "push the B
  next to the A" condition the vision stem identically, and the image tokens cannot tell the
  object to move from its reference (measured on the quickstart policy: 27 % of push frames
  mislocated a referent, against 2 % for place, which names one object; rollouts pushed the
  reference). `context_depth` > 0 self-attention blocks over the task tokens first, so each
  token knows its role before the mean.
  """

  context_depth: int = 0
  num_heads: int = 1
  mlp_dim: int = 0

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> Array:
    chex.assert_rank(tokens, 3)
    b, length, d = tokens.shape
    chex.assert_shape(mask, (b, length))
    if self.context_depth < 0:
      raise ValueError(f"image.film_context_depth={self.context_depth} is not valid; expected >= 0")
    if self.context_depth:
      pair_mask = jnp.broadcast_to(mask[:, None, :], (b, length, length)) | jnp.eye(length, dtype=bool)
      tokens = Transformer(self.context_depth, self.num_heads, self.mlp_dim or 4 * d,
                           name="context")(tokens, pair_mask)
    weights = mask[..., None].astype(jnp.float32)
    return (tokens * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


class Backbone(nn.Module):
  """observation + task → {"task": [B, Lt, D], "observation": [B, T, N, D], "readout": [B, R, D]}."""

  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, observation: dict[str, Array], task: dict[str, Array],
               train: bool = False, readouts_only: bool = False,
               token_maps: bool = False) -> dict[str, Array]:
    """observation: `image_<camera>` uint8 [B, T, Hpx, Wpx, 3], `proprio` float32 [B, T, D],
    `timestep_pad_mask` bool [B, T]; task: `language_tokens` int32 [B, L] or
    `language_embedding` float32 [B, E] (per `language.mode`).

    readouts_only=True returns just {"readout": [B, R, D]} and skips the last block's work for
    all other tokens (what training and sampling need; the outputs are identical).
    token_maps=True adds {"token_maps": {camera: logits [B, T, h, w, K]}}, the learned image
    tokens' attention logits (for the auxiliary referent loss).
    """
    cfg = self.config
    width = cfg.transformer.width
    pad_mask = require_key(observation, "timestep_pad_mask", "observation")
    chex.assert_rank(pad_mask, 2)
    b, t = pad_mask.shape

    # Task tokens.
    lang = cfg.language
    if lang.mode == "none":
      task_tokens, task_mask = jnp.zeros((b, 0, width)), jnp.zeros((b, 0), bool)
      film_condition = None
    else:
      for key in language_input_keys(lang):
        require_key(task, key, "task")
      task_tokens, task_mask = tokenizers.LanguageTokenizer(
          width=width, mode=lang.mode, vocab_size=lang.vocab_size,
          byte_embedding_dim=lang.byte_embedding_dim, bytes_per_token=lang.bytes_per_token,
          embedding_num_tokens=lang.embedding_num_tokens,
          byte_conv_kernel=lang.get("byte_conv_kernel", 0), encoder=lang.get("encoder", "learned"),
          num_task_tokens=lang.get("num_task_tokens", 0), num_heads=cfg.transformer.num_heads,
          # Configs saved before these keys existed had a position embedding and no dropout.
          feature_position_embedding=lang.get("feature_position_embedding", True),
          token_dropout=lang.get("token_dropout", 0.0), sentence_token=lang.get("sentence_token", False),
          name="language_tokenizer")(task, train)
    embodiments = embodiment_names(cfg)
    if embodiments and cfg.embodiment.get("token", True):
      # One learned token per embodiment (robot / dataset), first among the task tokens: every
      # observation token and readout sees which robot's units and cameras it is reading.
      index = require_key(task, "embodiment", "task")
      chex.assert_shape(index, (b,))
      table = self.param("embodiment_embedding", nn.initializers.normal(0.02), (len(embodiments), width))
      task_tokens = jnp.concatenate([table[index][:, None], task_tokens], axis=1)
      task_mask = jnp.concatenate([jnp.ones((b, 1), bool), task_mask.astype(bool)], axis=1)
    if lang.mode != "none":
      film_condition = None
      if cfg.image.film:
        # Layer-normed because FiLM bypasses the transformer's own norms and the tokens start at
        # ~0.02 scale.
        film_condition = nn.LayerNorm(name="film_condition_norm")(FilmPool(
            context_depth=cfg.image.get("film_context_depth", 0), num_heads=cfg.transformer.num_heads,
            mlp_dim=cfg.transformer.mlp_dim, name="film_pool")(task_tokens, task_mask))

    # Observation tokens, per timestep: [cameras' patches | proprio modalities].
    step_tokens, maps = [], {}
    for camera in cfg.cameras:
      images = require_key(observation, f"image_{camera}", "observation")
      chex.assert_shape(images, (b, t, None, None, 3))
      out = tokenizers.ImageTokenizer(
          width=width, stem_features=tuple(cfg.image.stem_features),
          stem_kernel_size=cfg.image.stem_kernel_size, patch_size=cfg.image.patch_size,
          film=cfg.image.film, coord_channels=cfg.image.get("coord_channels", False),
          num_learned_tokens=cfg.image.get("num_learned_tokens", 0),
          stem_strides=tuple(cfg.image.get("stem_strides", ())),
          stem_activation=cfg.image.get("stem_activation", "gelu"),
          film_from_layer=cfg.image.get("film_from_layer", 0),
          attribute_maps=cfg.image.get("attribute_maps", False),
          name=f"image_tokenizer_{camera}")(images, film_condition, return_maps=token_maps)
      if token_maps:
        out, maps[camera] = out
      step_tokens.append(out)
    if cfg.use_proprio:
      proprio = require_key(observation, "proprio", "observation")
      chex.assert_shape(proprio, (b, t, None))
      step_tokens.append(tokenizers.ProprioTokenizer(
          width=width, modalities=tuple(tuple(m) for m in cfg.proprio_modalities),
          name="proprio_tokenizer")(proprio))
    if not step_tokens:
      raise ValueError("model config has no observation inputs (no cameras and use_proprio=False)")
    obs_tokens = jnp.concatenate(step_tokens, axis=2)  # [B, T, N, D]
    n = obs_tokens.shape[2]
    time_embedding = self.param("timestep_embedding", nn.initializers.normal(0.02), (t, 1, width))
    obs_tokens = obs_tokens + time_embedding

    readouts = self.param("readout_embedding", nn.initializers.normal(0.02),
                          (cfg.num_readout_tokens, width))
    r = readouts.shape[0]

    lt = task_tokens.shape[1]
    tokens = jnp.concatenate([task_tokens, obs_tokens.reshape(b, t * n, width),
                              jnp.broadcast_to(readouts, (b, r, width))], axis=1)
    key_valid = jnp.concatenate([task_mask, jnp.repeat(pad_mask.astype(bool), n, axis=1),
                                 jnp.ones((b, r), bool)], axis=1)  # [B, S]
    static = block_attention_mask(lt, t, n, r)
    mask = (static[None] & key_valid[:, None, :]) | np.eye(static.shape[0], dtype=bool)[None]

    tc = cfg.transformer
    out = Transformer(tc.depth, tc.num_heads, tc.mlp_dim, tc.dropout_rate, name="transformer")(
        tokens, mask, train, num_outputs=r if readouts_only else None)
    extra = {"token_maps": maps} if token_maps else {}
    if readouts_only:
      chex.assert_shape(out, (b, r, width))
      return {"readout": out, **extra}
    result = {**extra,
        "task": out[:, :lt],
        "observation": out[:, lt:lt + t * n].reshape(b, t, n, width),
        "readout": out[:, lt + t * n:],
    }
    chex.assert_shape(result["readout"], (b, r, width))
    return result
