"""The auxiliary referent loss: teach learned image tokens *where* the instruction's objects are.

Why: in the built-in tabletop the target is named by colour *and* shape among distractors that
share one of them. From the action loss alone the model learns this slowly (measured: the closed
loop stays near 0 % for thousands of steps while the model follows proprio and the instruction's
family). A dense per-pixel target makes it a supervised detection problem: token k's attention
map over the stem features is trained, by cross-entropy, towards a Gaussian heatmap centred on
referent k (k = 0 the object to act on, k = 1 its goal), so token k's spatial-softmax (x, y)
becomes that object's position. Labels come from the simulator and are used in training only;
the policy's inputs are unchanged, and datasets without labels simply contribute nothing.

`attribute_loss` supervises the factorised target map of `image.attribute_maps` (see
`ImageTokenizer._learned_tokens`): a colour map towards every object with the target's colour and
a shape map towards every object with its shape.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


def cell_centres(height: int, width: int) -> np.ndarray:
  """float32 [height, width, 2]: each feature-map cell's centre (x, y) in [0, 1] image units."""
  ys = (np.arange(height, dtype=np.float32) + 0.5) / height
  xs = (np.arange(width, dtype=np.float32) + 0.5) / width
  gy, gx = np.meshgrid(ys, xs, indexing="ij")
  return np.stack([gx, gy], -1)


def _heatmap_ce(logits: Array, xy: Array, valid: Array, sigma: float) -> tuple[Array, Array, Array, Array]:
  """Cross-entropy of R attention maps against heatmaps with one Gaussian per valid object.

  logits [B, h, w, R], xy [B, R, M, 2], valid bool [B, R, M] → (ce [B, R], log_p [B, h·w, R],
  d2 [B, h·w, R, M] squared distances cell-object, centres [h·w, 2]). The target of row r is the
  normalised sum of its valid objects' Gaussians (a row with none gets a uniform target; callers
  mask it out).
  """
  b, h, w, r = logits.shape
  centres = jnp.asarray(cell_centres(h, w).reshape(h * w, 2))
  log_p = jax.nn.log_softmax(logits.reshape(b, h * w, r).astype(jnp.float32), axis=1)
  d2 = jnp.sum((centres[None, :, None, None, :] - xy[:, None]) ** 2, -1)  # [B, h·w, R, M]
  log_heat = jax.nn.logsumexp(jnp.where(valid[:, None], -d2 / (2.0 * sigma**2), -1e30), axis=-1)
  target = jax.nn.softmax(log_heat, axis=1)  # [B, h·w, R]
  return -jnp.sum(target * log_p, axis=1), log_p, d2, centres


def referent_loss(logits: Array, referent_xy: Array, referent_valid: Array,
                  sigma: float) -> tuple[Array, dict[str, Array]]:
  """Cross-entropy of the first K token maps against Gaussian heatmaps at the referents.

  Args:
    logits: float [B, h, w, P] attention logits of one frame's P >= K learned tokens.
    referent_xy: float [B, K, 2] positions in [0, 1] image units (x right, y down).
    referent_valid: bool [B, K]; invalid referents (e.g. no goal object) add no loss.
    sigma: heatmap std in image-width units.

  Returns: (scalar loss = mean CE over valid referents, metrics) with metrics `referent_ce` and
  `referent_error` (mean distance of the map's expected (x, y) from the label, image units).
  """
  b, _, _, p = logits.shape
  k = referent_xy.shape[1]
  chex.assert_shape(referent_xy, (b, k, 2))
  chex.assert_shape(referent_valid, (b, k))
  if k > p:
    raise ValueError(f"aux/referent_xy has {k} referents but the image tokenizer has only {p} learned "
                     "tokens; set image.num_learned_tokens >= the dataset's num_referents")
  ce, log_p, _, centres = _heatmap_ce(logits[..., :k], referent_xy[:, :, None],
                                      jnp.ones((b, k, 1), bool), sigma)
  expected = jnp.einsum("bpk,pc->bkc", jnp.exp(log_p), centres)
  error = jnp.linalg.norm(expected - referent_xy, axis=-1)
  valid = referent_valid.astype(jnp.float32)
  count = jnp.maximum(valid.sum(), 1.0)
  loss = jnp.sum(ce * valid) / count
  return loss, {"referent_ce": loss, "referent_error": jnp.sum(error * valid) / count}


def attribute_loss(logits: Array, attribute_xy: Array, attribute_valid: Array,
                   sigma: float) -> tuple[Array, dict[str, Array]]:
  """Cross-entropy of the colour and shape maps against multi-object heatmaps.

  Args:
    logits: float [B, h, w, 2] attention logits of the colour and shape maps.
    attribute_xy: float [B, 2, M, 2] positions in [0, 1] image units of the objects that share the
      target's colour (row 0) / shape (row 1), the target included.
    attribute_valid: bool [B, 2, M]; padding slots are False. A row with none adds no loss.
    sigma: std of each object's Gaussian, in image-width units.

  The target of a row is the normalised sum of one Gaussian per valid object, so the map must
  spread its mass over all of them (and none elsewhere).

  Returns: (scalar loss = mean CE over rows with an object, metrics) with `attribute_ce` and
  `attribute_miss` (the share of each map's mass farther than 2 sigma from every listed object).
  """
  b, _, _, c = logits.shape
  m = attribute_xy.shape[2]
  chex.assert_equal(c, 2)
  chex.assert_shape(attribute_xy, (b, 2, m, 2))
  chex.assert_shape(attribute_valid, (b, 2, m))
  ce, log_p, d2, _ = _heatmap_ce(logits, attribute_xy, attribute_valid, sigma)
  valid = attribute_valid[:, None].astype(bool)
  near = jnp.any(valid & (d2 < (2.0 * sigma) ** 2), axis=-1)  # [B, h·w, 2]
  miss = jnp.sum(jnp.exp(log_p) * (~near), axis=1)  # [B, 2]
  row_valid = attribute_valid.any(-1).astype(jnp.float32)
  count = jnp.maximum(row_valid.sum(), 1.0)
  loss = jnp.sum(ce * row_valid) / count
  return loss, {"attribute_ce": loss, "attribute_miss": jnp.sum(miss * row_valid) / count}
