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
    [B, 2, M]} the attribute loss.
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
    if use_referents:
      if ref_cfg.camera not in out["token_maps"]:
        raise ValueError(f"referent_loss.camera={ref_cfg.camera!r} is not one of the model's cameras "
                         f"{list(self.config.cameras)}")
      logits = out["token_maps"][ref_cfg.camera][:, -1]  # Labels describe the window's last frame.
      ref_loss, ref_metrics = referents.referent_loss(
          logits, aux["referent_xy"], aux["referent_valid"], ref_cfg.sigma)
      metrics = {**metrics, "head_loss": loss, **ref_metrics}
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
