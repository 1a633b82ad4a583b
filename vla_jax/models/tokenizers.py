"""Tokenizers: turn raw observation and task arrays into [.., N, D] token sequences.

One module per modality: images (conv stem + patchify, optional language FiLM), language (byte ids
with learned embeddings, or a precomputed sentence embedding) and proprio/tactile (one linear
projection per named slice). All use only ops that jax2tf's TF-op lowering and tf2onnx convert
(vla_jax/export/convert.py checks every export): e.g. the byte embedding is a one-hot matmul
rather than a gather.
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.models.transformer import Attention, gelu

Array = jnp.ndarray

# Activations of the image stem's per-pixel layers. The stem works on the model's largest tensors
# (batch × 32 × 32 × 32 after the first conv); on XLA:CPU the tanh-GELU backward over them is ~20 ms
# of a ~55 ms stem forward+backward at batch 32, and relu makes the whole quickstart step ~10 %
# faster — but the quickstart trained with it lost 13 points on held-out phrasings, so gelu stays
# the default (benchmarks/results/quickstart_speed.md).
STEM_ACTIVATIONS = {"gelu": gelu, "relu": nn.relu}

# Token embeddings start small so the initial sum of (content + position) is well scaled.
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


def _pixel_grid(height: int, width: int) -> np.ndarray:
  """float32 [height, width, 2]: each pixel's (x, y), both spanning [-1, 1] over the image."""
  ys, xs = np.meshgrid(np.linspace(-1, 1, height, dtype=np.float32),
                       np.linspace(-1, 1, width, dtype=np.float32), indexing="ij")
  return np.stack([xs, ys], -1)


class ImageTokenizer(nn.Module):
  """One camera's frames → image tokens (patches, or K learned tokens).

  A few convs (stride 2 unless `stem_strides` says otherwise; each followed by GroupNorm,
  optional FiLM on the language, GELU) give local features cheaply; stride-1 layers add receptive
  field (shape, not just colour) without shrinking the map. Then either non-overlapping patches are flattened and projected
  (patchify is a reshape + Dense, not a strided conv, to keep the exported graph simple), or
  `num_learned_tokens` spatial-attention tokens summarise the feature map.
  """

  width: int
  stem_features: Sequence[int]
  stem_kernel_size: int
  patch_size: int
  film: bool = False
  coord_channels: bool = False
  num_learned_tokens: int = 0
  stem_strides: Sequence[int] = ()  # One per stem conv; () = all 2.
  stem_activation: str = "gelu"  # A key of STEM_ACTIVATIONS.
  film_from_layer: int = 0  # FiLM the stem convs from this index on (film=True); earlier ones are unconditioned.
  attribute_maps: bool = False  # Learned token 0's map = a colour map + a shape map (see _learned_tokens).

  @nn.compact
  def __call__(self, images: Array, film_condition: Array | None = None,
               return_maps: bool = False) -> Array | tuple[Array, Array]:
    """images: uint8 [B, T, Hpx, Wpx, 3]; film_condition: float32 [B, C] (required iff `film`).

    Returns: float32 [B, T, P, D]: P = num_learned_tokens if set, else
    (Hpx / (prod(stem strides) * patch))^2 patch tokens per frame. With return_maps (learned tokens
    only), also the tokens' attention logits float32 [B, T, h, w, P] over the stem's feature map
    (with `attribute_maps`, P + 2: the colour and shape maps follow the tokens' own).
    """
    chex.assert_rank(images, 5)
    b, t, h, w, c = images.shape
    strides = tuple(self.stem_strides) or (2,) * len(self.stem_features)
    if len(strides) != len(self.stem_features):
      raise ValueError(f"image.stem_strides={tuple(self.stem_strides)} needs one stride per stem conv "
                       f"(stem_features={tuple(self.stem_features)})")
    stride = int(np.prod(strides)) * self.patch_size
    if not self.num_learned_tokens and (h % stride or w % stride):
      raise ValueError(f"image {h}x{w} px is not divisible by stem stride × patch = {stride}")
    if self.film and not 0 <= self.film_from_layer < len(self.stem_features):
      raise ValueError(f"image.film_from_layer={self.film_from_layer} is not valid; expected 0 ... "
                       f"{len(self.stem_features) - 1} (stem_features={tuple(self.stem_features)})")
    if self.film and film_condition is None:
      raise ValueError("image.film=True needs a language condition, but language.mode is 'none'")
    if self.stem_activation not in STEM_ACTIVATIONS:
      raise ValueError(f"image.stem_activation={self.stem_activation!r} is not one of {sorted(STEM_ACTIVATIONS)}")
    act = STEM_ACTIVATIONS[self.stem_activation]
    x = images.astype(jnp.float32) * (2.0 / 255.0) - 1.0  # uint8 → [-1, 1].
    x = x.reshape(b * t, h, w, c)
    if self.coord_channels:
      # CoordConv: x, y ∈ [-1, 1] as two extra channels, so features can say *where* as well as
      # *what* from the first layer on (a fixed camera makes pixel position a workspace position).
      coords = jnp.broadcast_to(jnp.asarray(_pixel_grid(h, w)), (b * t, h, w, 2))
      x = jnp.concatenate([x, coords], axis=-1)
    for i, (features, s) in enumerate(zip(self.stem_features, strides)):
      x = nn.Conv(features, (self.stem_kernel_size,) * 2, strides=(s, s), padding="SAME",
                  name=f"stem_conv_{i}")(x)
      x = nn.GroupNorm(num_groups=min(8, features), name=f"stem_norm_{i}")(x)
      if self.film and i >= self.film_from_layer:
        chex.assert_rank(film_condition, 2)
        # Zero-init: FiLM starts as the identity and the language learns to modulate features.
        scale_shift = nn.Dense(2 * features, kernel_init=nn.initializers.zeros,
                               name=f"film_{i}")(film_condition)
        scale_shift = jnp.repeat(scale_shift, t, axis=0)[:, None, None, :]  # [B*T, 1, 1, 2F].
        scale, shift = jnp.split(scale_shift, 2, axis=-1)
        x = x * (1.0 + scale) + shift
      x = act(x)
    if self.attribute_maps and not self.num_learned_tokens:
      raise ValueError("image.attribute_maps needs learned tokens; set image.num_learned_tokens > 0")
    if return_maps and not self.num_learned_tokens:
      raise ValueError("attention maps exist only for learned tokens; set image.num_learned_tokens > 0")
    if self.num_learned_tokens:
      tokens, logits = self._learned_tokens(x, act)
    else:
      tokens, logits = self._patch_tokens(x), None
    tokens = tokens + self.param("position_embedding", _EMBED_INIT, tokens.shape[1:])
    tokens = tokens.reshape(b, t, *tokens.shape[1:])
    chex.assert_shape(tokens, (b, t, None, self.width))
    if return_maps:
      return tokens, logits.reshape(b, t, *logits.shape[1:])
    return tokens

  def _learned_tokens(self, x: Array, act: Callable[[Array], Array]) -> tuple[Array, Array]:
    """TokenLearner-style (as in RT-1) with spatial-softmax coordinates: [n, h, w, C] → [n, K, D]
    tokens, plus their attention logits [n, h, w, K].

    K attention maps over the (language-FiLMed) stem features, each a softmax over space; token k
    is the map-weighted mean feature plus the map's expected (x, y). A few tokens that say *what*
    and *where* replace dozens of mostly-background patches: attention is not diluted over the
    table, and the transformer is ~4x cheaper per frame.

    With `attribute_maps`, two more maps are computed and token 0's logits are their sum: a colour
    map and a shape map, each trained (`referents.attribute_loss`) to cover every object with the
    target's colour / shape. Adding logits multiplies the maps, an AND: "purple" and "diamond" are
    each learned from every scene that has them, so their intersection can find a purple diamond
    that never appeared in training, where one map learned per named object binds to the colour
    it saw most (measured before: held-out colour-shape pairs mostly land on the same-colour
    distractor). The returned logits then have K + 2 channels: the tokens', colour, shape.
    """
    n, hh, ww, cc = x.shape
    k = self.num_learned_tokens
    hidden = act(nn.Conv(cc, (1, 1), name="token_hidden")(x))
    if self.attribute_maps:  # Conv channels: tokens 1 … K-1, colour, shape.
      logits = nn.Conv(k + 1, (1, 1), name="token_logits")(hidden)
      logits = jnp.concatenate([logits[..., -2:].sum(-1, keepdims=True), logits], axis=-1)
    else:
      logits = nn.Conv(k, (1, 1), name="token_logits")(hidden)
    weights = nn.softmax(logits[..., :k].reshape(n, hh * ww, k), axis=1)  # [n, hh·ww, K], sums to 1 over space.
    grid = jnp.asarray(_pixel_grid(hh, ww).reshape(hh * ww, 2))
    features = jnp.einsum("npk,npc->nkc", weights, x.reshape(n, hh * ww, cc))
    where = jnp.einsum("npk,pc->nkc", weights, grid)
    tokens = nn.Dense(self.width, name="token_projection")(jnp.concatenate([features, where], -1))
    return tokens, logits

  def _patch_tokens(self, x: Array) -> Array:
    """Non-overlapping patches, flattened and projected: [n, h, w, C] → [n, P, D]."""
    n, hh, ww, cc = x.shape
    p = self.patch_size
    x = x.reshape(n, hh // p, p, ww // p, p, cc).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, (hh // p) * (ww // p), p * p * cc)
    return nn.Dense(self.width, name="patch_projection")(x)


class LanguageTokenizer(nn.Module):
  """Task → task tokens plus a validity mask.

  encoder "learned", mode "tokens": byte ids [B, L] (0 = pad) are embedded, grouped
  `bytes_per_token` at a time and projected, so the transformer sees L / bytes_per_token tokens; a
  group that is all padding is masked out. encoder "minilm", mode "tokens": a frozen encoder's
  per-token features [B, L, F] + mask are projected and, with `num_task_tokens` K > 0, resampled
  to K tokens (see `_resample`). mode "embedding": a precomputed sentence embedding [B, E] is
  projected to `embedding_num_tokens` tokens. The transformer contextualises any of them.
  """

  width: int
  mode: str
  vocab_size: int
  byte_embedding_dim: int
  bytes_per_token: int
  embedding_num_tokens: int
  byte_conv_kernel: int = 0
  encoder: str = "learned"
  num_task_tokens: int = 0
  num_heads: int = 1
  feature_position_embedding: bool = False
  token_dropout: float = 0.0
  sentence_token: bool = False

  @nn.compact
  def __call__(self, task: dict[str, Array], train: bool = False) -> tuple[Array, Array]:
    """Returns: tokens float32 [B, Lt, D], mask bool [B, Lt] (True = real token)."""
    if self.mode == "tokens" and self.encoder == "minilm":
      features = task["language_features"].astype(jnp.float32)
      chex.assert_rank(features, 3)
      b, length, _ = features.shape
      mask = task["language_mask"].astype(bool)
      chex.assert_shape(mask, (b, length))
      if train and self.token_dropout > 0:
        # Hide random words (never [CLS] at 0) so no single word — a verb seen in every training
        # phrasing of a family — decides the task; the rest of the sentence must carry it too.
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.token_dropout, mask.shape)
        mask = mask & (keep | (jnp.arange(length) == 0)[None, :])
      # The encoder's states are post-LayerNorm but not unit scale per dim; normalise, project.
      tokens = nn.Dense(self.width, name="feature_projection")(nn.LayerNorm(name="feature_norm")(features))
      if self.feature_position_embedding:
        # Off by default: the states already encode position and context, and an absolute position
        # lets the policy read "first object named = target" — which fails on reordered phrasings.
        tokens = tokens + self.param("position_embedding", _EMBED_INIT, (length, self.width))
      if self.num_task_tokens:
        tokens = self._resample(tokens, mask)
        mask = jnp.ones(tokens.shape[:2], bool)
      if self.sentence_token:
        tokens, mask = self._add_sentence_token(features, task["language_mask"].astype(bool), tokens, mask)
    elif self.mode == "tokens":
      ids = task["language_tokens"]
      chex.assert_rank(ids, 2)
      b, length = ids.shape
      g = self.bytes_per_token
      if length % g:
        raise ValueError(f"task/language_tokens length {length} is not a multiple of "
                         f"language.bytes_per_token={g}")
      table = self.param("byte_embedding", _EMBED_INIT, (self.vocab_size, self.byte_embedding_dim))
      one_hot = (ids[..., None] == jnp.arange(self.vocab_size, dtype=ids.dtype)).astype(jnp.float32)
      x = one_hot @ table  # [B, L, E_byte]; a matmul exports where a gather may not.
      if self.byte_conv_kernel:
        # A character n-gram conv before grouping: a word's features no longer depend on where
        # the fixed byte groups happen to cut it. Written as a [1, k] 2-D conv (exports cleanly).
        valid = (ids != 0)[..., None].astype(jnp.float32)
        y = nn.Conv(self.byte_embedding_dim, (1, self.byte_conv_kernel), padding="SAME",
                    name="byte_conv")(x[:, None])[:, 0]
        x = (x + gelu(y)) * valid
      x = x.reshape(b, length // g, g * self.byte_embedding_dim)
      tokens = nn.Dense(self.width, name="group_projection")(x)
      tokens = tokens + self.param("position_embedding", _EMBED_INIT, tokens.shape[1:])
      mask = (ids.reshape(b, length // g, g) != 0).any(axis=-1)
    elif self.mode == "embedding":
      emb = task["language_embedding"].astype(jnp.float32)
      chex.assert_rank(emb, 2)
      b = emb.shape[0]
      emb = nn.LayerNorm(name="embedding_norm")(emb)  # Encoders differ in scale; normalise first.
      tokens = nn.Dense(self.embedding_num_tokens * self.width, name="embedding_projection")(emb)
      tokens = tokens.reshape(b, self.embedding_num_tokens, self.width)
      mask = jnp.ones((b, self.embedding_num_tokens), bool)
    else:
      raise ValueError(f"LanguageTokenizer called with mode {self.mode!r}")
    chex.assert_shape(tokens, (b, mask.shape[1], self.width))
    return tokens, mask

  def _add_sentence_token(self, features: Array, full_mask: Array, tokens: Array,
                          mask: Array) -> tuple[Array, Array]:
    """Appends one token made from the encoder's sentence embedding (mean over the real tokens,
    L2-normalised: the model card's, which is what MiniLM was trained to make paraphrases agree
    on). Why: the per-token states let the policy key a family on one verb ("lifting" in "bring
    the A beside the B without lifting it" read as pick), while the pooled embedding places every
    held-out phrasing and paraphrase nearest to its own family's training phrasings. Pooled from
    the full mask, before token dropout, so it is the always-present summary; the tokens keep
    which object plays which role.
    """
    weights = full_mask.astype(jnp.float32)[..., None]
    pooled = (features * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
    pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-9)
    token = nn.Dense(self.width, name="sentence_projection")(nn.LayerNorm(name="sentence_norm")(pooled))
    tokens = jnp.concatenate([tokens, token[:, None]], axis=1)
    return tokens, jnp.concatenate([mask, jnp.ones((mask.shape[0], 1), bool)], axis=1)

  def _resample(self, tokens: Array, mask: Array) -> Array:
    """[B, L, D] encoder tokens → [B, K, D]: K learned queries attend over the real tokens.

    Why: the backbone's attention cost grows with the sequence, and L = 32 WordPieces would
    quadruple the task part of it at every control step; K = 4 queries (Perceiver-style) keep the
    sequence as short as the byte baseline's while still reading every word, and each query can
    specialise (the object to move, the place or reference).
    """
    b, length, d = tokens.shape
    queries = jnp.broadcast_to(self.param("task_queries", _EMBED_INIT, (self.num_task_tokens, d)),
                               (b, self.num_task_tokens, d))
    cross_mask = jnp.broadcast_to(mask[:, None, :], (b, self.num_task_tokens, length))
    kv = nn.LayerNorm(name="resample_kv_norm")(tokens)
    x = queries + Attention(self.num_heads, name="resample_attention")(
        nn.LayerNorm(name="resample_query_norm")(queries), kv, cross_mask)
    y = nn.LayerNorm(name="resample_mlp_norm")(x)
    return x + nn.Dense(d, name="resample_mlp_out")(gelu(nn.Dense(4 * d, name="resample_mlp_in")(y)))


class ProprioTokenizer(nn.Module):
  """Proprio [B, T, D] → one token per modality per timestep.

  `modalities` = () projects the whole vector to one token; otherwise each (name, start, stop)
  slice (e.g. pose vs tactile channels) gets its own projection, so the model can attend to touch
  separately from pose.
  """

  width: int
  modalities: Sequence[tuple[str, int, int]] = ()

  @nn.compact
  def __call__(self, proprio: Array) -> Array:
    """proprio: float32 [B, T, D] (already normalised). Returns float32 [B, T, M, D_model]."""
    chex.assert_rank(proprio, 3)
    dim = proprio.shape[-1]
    slices = self.modalities or (("proprio", 0, dim),)
    tokens = []
    for name, start, stop in slices:
      if not 0 <= start < stop <= dim:
        raise ValueError(f"proprio modality {name!r} slice [{start}:{stop}] is outside "
                         f"observation/proprio of dim {dim}")
      tokens.append(nn.Dense(self.width, name=f"project_{name}")(proprio[..., start:stop]))
    out = jnp.stack(tokens, axis=2)
    chex.assert_shape(out, (*proprio.shape[:2], len(slices), self.width))
    return out
