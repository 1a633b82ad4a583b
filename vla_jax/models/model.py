"""VLAModel: the backbone and one action head as a single flax module.

Its methods are the three things anything above `models/` needs: the training loss, the readout
embedding (backbone, run once per control step) and sampling from readouts (only the head
iterates). `policy.Policy` wraps them as pure functions over explicit params.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vla_jax.models import referents
from vla_jax.models.backbone import Backbone
from vla_jax.models.config import embodiment_names
from vla_jax.models.heads import make_head

Array = jnp.ndarray


def uses_state_loss(config: ml_collections.ConfigDict) -> bool:
  """True when the config trains the auxiliary state head (configs saved before it: False)."""
  state_cfg = config.get("state_loss")
  if state_cfg is None or state_cfg.weight <= 0:
    return False
  if state_cfg.num_targets <= 0:
    raise ValueError(f"state_loss.weight={state_cfg.weight} needs state_loss.num_targets > 0 (the size of "
                     "the batch's aux/state_target, = data.state_targets)")
  return True


def state_loss(prediction: Array, target: Array, valid: Array) -> tuple[Array, dict[str, Array]]:
  """Mean squared error of prediction [B, N] against target [B, N] over valid [B] samples, and
  `state_target_error`: their mean absolute error (in the labels' [-1, 1] units)."""
  chex.assert_equal_shape((prediction, target))
  chex.assert_shape(valid, prediction.shape[:1])
  weight = valid.astype(jnp.float32)
  count = jnp.maximum(weight.sum(), 1.0)
  mse = jnp.sum(jnp.mean((prediction - target) ** 2, -1) * weight) / count
  error = jnp.sum(jnp.mean(jnp.abs(prediction - target), -1) * weight) / count
  return mse, {"state_target_mse": mse, "state_target_error": error}


def separate_heads(config: ml_collections.ConfigDict) -> bool:
  return bool(embodiment_names(config)) and bool(config.embodiment.get("separate_heads", False))


class VLAModel(nn.Module):
  config: ml_collections.ConfigDict

  def setup(self):
    self.backbone = Backbone(self.config, name="backbone")
    if separate_heads(self.config):
      # One head per embodiment ("head_<name>"): each robot's action distribution gets its own
      # denoiser, sharing the backbone. Every head runs on the whole batch and each example keeps
      # its own embodiment's output (heads are small; this keeps shapes static for export).
      self.heads = [make_head(self.config, name=f"head_{n}") for n in embodiment_names(self.config)]
    else:
      self.head = make_head(self.config, name="head")
    if uses_state_loss(self.config):
      state_cfg = self.config.state_loss
      self.state_head = nn.Sequential([nn.Dense(state_cfg.hidden_dim), nn.gelu, nn.Dense(state_cfg.num_targets)],
                                      name="state_head")

  def _per_embodiment(self, embodiment: Array | None, outputs: list[Array]) -> Array:
    """outputs[e] [B, ...] of head e → each example's own embodiment's row."""
    if embodiment is None:
      raise ValueError("a model with embodiment.separate_heads needs task/embodiment to pick its head")
    one_hot = jax.nn.one_hot(embodiment, len(outputs), dtype=outputs[0].dtype)  # [B, E]
    stacked = jnp.stack(outputs, axis=1)  # [B, E, ...]
    return jnp.einsum("be,be...->b...", one_hot, stacked)

  def _head_loss(self, readouts: Array, actions: Array, loss_mask: Array, rng: Array, train: bool,
                 embodiment: Array | None) -> tuple[Array, dict[str, Array]]:
    if not separate_heads(self.config):
      return self.head(readouts, actions, loss_mask, rng, train)
    if embodiment is None:
      raise ValueError("a model with embodiment.separate_heads needs task/embodiment in training batches")
    total, metrics, count = 0.0, {}, 0.0
    for e, head in enumerate(self.heads):  # Each head: the mean over its own embodiment's entries.
      mine = embodiment == e
      mask = loss_mask & mine.reshape(mine.shape + (1,) * (loss_mask.ndim - 1))
      n = mask.astype(jnp.float32).sum()
      loss, m = head(readouts, actions, mask, rng, train)
      total, count = total + loss * n, count + n
      metrics.update({f"{k}/{head.name}": v for k, v in m.items()})
    return total / jnp.maximum(count, 1.0), metrics

  def __call__(self, observation: dict, task: dict, actions: Array, action_pad_mask: Array,
               rng: Array, train: bool = False,
               aux: dict | None = None, action_dim_mask: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Training loss (also what `init` traces, so every parameter is created).

    aux: optional labels {"referent_xy" [B, K, 2], "referent_valid" [B, K]}; with
    `referent_loss.weight` > 0 they add the referent loss (see `referents.py`), and with
    `referent_loss.attribute_weight` > 0 also {"attribute_xy" [B, 2, M, 2], "attribute_valid"
    [B, 2, M]} the attribute loss, and with `state_loss.weight` > 0 {"state_target" [B, N],
    "state_target_valid" [B]} the state loss (the state head runs, and so is initialised, without
    labels too).
    action_dim_mask: optional bool [B, A], False on the action dims an example's dataset does not
    have (mixtures pad every robot's actions to one size): those entries get no loss.
    """
    ref_cfg = self.config.get("referent_loss")
    use_referents = aux is not None and ref_cfg is not None and ref_cfg.weight > 0
    out = self.backbone(observation, task, train, readouts_only=True, token_maps=use_referents)
    loss_mask = action_pad_mask
    if action_dim_mask is not None:
      chex.assert_shape(action_dim_mask, (actions.shape[0], actions.shape[-1]))
      loss_mask = action_pad_mask[:, :, None] & action_dim_mask[:, None, :].astype(bool)
    loss, metrics = self._head_loss(out["readout"], actions, loss_mask, rng, train, task.get("embodiment"))
    head_loss = loss
    if uses_state_loss(self.config):
      prediction = self.state_head(out["readout"].mean(axis=1))
      if aux is not None:
        if "state_target" not in aux:
          raise ValueError("state_loss.weight > 0 needs aux/state_target: set data.state_targets = "
                           f"{self.config.state_loss.num_targets} (datasets with a spec state_target_key)")
        if aux["state_target"].shape[-1] != prediction.shape[-1]:
          raise ValueError(f"aux/state_target has {aux['state_target'].shape[-1]} dims but "
                           f"state_loss.num_targets={prediction.shape[-1]}; they must agree (data.state_targets)")
        st_loss, st_metrics = state_loss(prediction, aux["state_target"], aux["state_target_valid"])
        metrics = {**metrics, "head_loss": head_loss, **st_metrics}
        loss = loss + self.config.state_loss.weight * st_loss
    if use_referents:
      if "referent_xy" not in aux:
        raise ValueError("referent_loss.weight > 0 needs aux/referent_xy: set data.num_referents > 0 "
                         "(datasets with referent labels)")
      ref_loss, ref_metrics, logits = self._referent_loss(out["token_maps"], aux, ref_cfg)
      metrics = {**metrics, "head_loss": head_loss, **ref_metrics}
      loss = loss + ref_cfg.weight * ref_loss
      attr_weight = ref_cfg.get("attribute_weight", 0.0)
      if attr_weight > 0:
        if not self.config.image.get("attribute_maps", False):
          raise ValueError("referent_loss.attribute_weight > 0 trains the colour and shape maps of "
                           "image.attribute_maps=True, which this model does not have")
        if "attribute_xy" not in aux:
          raise ValueError("referent_loss.attribute_weight > 0 needs aux/attribute_xy: set "
                           "data.attribute_objects > 0 (datasets with attribute labels)")
        attr_loss, attr_metrics = referents.attribute_loss(
            logits[..., -2:], aux["attribute_xy"], aux["attribute_valid"], ref_cfg.sigma)
        metrics.update(attr_metrics)
        loss = loss + attr_weight * attr_loss
    return loss, metrics

  def _referent_loss(self, token_maps: dict[str, Array], aux: dict,
                     ref_cfg: ml_collections.ConfigDict) -> tuple[Array, dict[str, Array], Array]:
    """The referent loss over `ref_cfg.cameras` (mean over cameras; each takes its own consecutive
    K = rows / cameras label rows) → (loss, metrics, the first camera's last-frame token logits, which
    the attribute loss trains).
    With several cameras the metrics also hold `referent_error_<camera>`."""
    cameras = tuple(ref_cfg.cameras)
    unknown = [c for c in cameras if c not in token_maps]
    if unknown or not cameras:
      raise ValueError(f"referent_loss.cameras={cameras!r}: {unknown or 'none'} not among the model's "
                       f"cameras {list(self.config.cameras)}")
    xy, valid = aux["referent_xy"], aux["referent_valid"]
    rows = xy.shape[1]
    if rows % len(cameras):
      raise ValueError(f"aux/referent_xy has {rows} referent rows per sample ({xy.shape}), not a multiple of "
                       f"the {len(cameras)} cameras of referent_loss.cameras={cameras!r}: set data.num_referents "
                       "to (referents per view) x (views)")
    k = rows // len(cameras)
    # Labels describe the window's last frame.
    results = [referents.referent_loss(token_maps[c][:, -1], xy[:, i * k:(i + 1) * k], valid[:, i * k:(i + 1) * k],
                                       ref_cfg.sigma) for i, c in enumerate(cameras)]
    metrics = {name: sum(m[name] for _, m in results) / len(results) for name in results[0][1]}
    if len(cameras) > 1:
      metrics.update({f"referent_error_{c}": m["referent_error"] for c, (_, m) in zip(cameras, results)})
    return sum(loss for loss, _ in results) / len(results), metrics, token_maps[cameras[0]][:, -1]

  def embed(self, observation: dict, task: dict, train: bool = False) -> Array:
    """→ readout embeddings float32 [B, R, D]."""
    return self.backbone(observation, task, train, readouts_only=True)["readout"]

  def token_maps(self, observation: dict, task: dict) -> dict[str, Array]:
    """{camera: attention logits of the learned image tokens [B, T, h, w, P]} (inspection)."""
    return self.backbone(observation, task, False, readouts_only=True, token_maps=True)["token_maps"]

  def backbone_outputs(self, observation: dict, task: dict) -> dict[str, Array]:
    """All backbone token outputs (task / observation / readout), for inspection and tests."""
    return self.backbone(observation, task, False)

  def sample_from_readouts(self, readouts: Array, noise: dict[str, Array],
                           embodiment: Array | None = None) -> Array:
    """readouts [B, R, D] + noise dict → actions float32 [B, H, A]."""
    if separate_heads(self.config):
      return self._per_embodiment(embodiment, [h.sample(readouts, noise) for h in self.heads])
    return self.head.sample(readouts, noise)

  def sample_steps(self, observation: dict, task: dict, noise: dict[str, Array]) -> Array:
    """Backbone once, then every step of an iterative head's sampling loop → float32 [S + 1, B, H, A]."""
    readouts = self.embed(observation, task, False)
    if separate_heads(self.config):
      per_head = [jnp.swapaxes(h.sample_steps(readouts, noise), 0, 1) for h in self.heads]  # [B, S + 1, H, A]
      return jnp.swapaxes(self._per_embodiment(task.get("embodiment"), per_head), 0, 1)
    return self.head.sample_steps(readouts, noise)

  def head_predict(self, readouts: Array, *args, embodiment: Array | None = None) -> Array:
    """One call of the head's network (one denoising / integration step for iterative heads)."""
    if separate_heads(self.config):
      return self._per_embodiment(embodiment, [h.predict(readouts, *args) for h in self.heads])
    return self.head.predict(readouts, *args)

  def sample(self, observation: dict, task: dict, noise: dict[str, Array]) -> Array:
    """Backbone once, then the head's fixed-count sampling loop → actions float32 [B, H, A]."""
    return self.sample_from_readouts(self.embed(observation, task, False), noise, task.get("embodiment"))
