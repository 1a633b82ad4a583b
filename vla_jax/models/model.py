"""VLAModel: the backbone and one action head as a single flax module.

Its methods are the three things anything above `models/` needs: the training loss, the readout
embedding (backbone, run once per control step) and sampling from readouts (only the head
iterates). `policy.Policy` wraps them as pure functions over explicit params.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vla_jax.models import referents
from vla_jax.models.backbone import Backbone
from vla_jax.models.heads import make_head

Array = jnp.ndarray


class VLAModel(nn.Module):
  config: ml_collections.ConfigDict

  def setup(self):
    self.backbone = Backbone(self.config, name="backbone")
    self.head = make_head(self.config, name="head")

  def __call__(self, observation: dict, task: dict, actions: Array, action_pad_mask: Array,
               rng: Array, train: bool = False,
               aux: dict | None = None) -> tuple[Array, dict[str, Array]]:
    """Training loss (also what `init` traces, so every parameter is created).

    aux: optional labels {"referent_xy" [B, K, 2], "referent_valid" [B, K]}; with
    `referent_loss.weight` > 0 they add the referent loss (see `referents.py`).
    """
    ref_cfg = self.config.get("referent_loss")
    use_referents = aux is not None and ref_cfg is not None and ref_cfg.weight > 0
    out = self.backbone(observation, task, train, readouts_only=True, token_maps=use_referents)
    loss, metrics = self.head(out["readout"], actions, action_pad_mask, rng, train)
    if use_referents:
      if ref_cfg.camera not in out["token_maps"]:
        raise ValueError(f"referent_loss.camera={ref_cfg.camera!r} is not one of the model's cameras "
                         f"{list(self.config.cameras)}")
      logits = out["token_maps"][ref_cfg.camera][:, -1]  # Labels describe the window's last frame.
      ref_loss, ref_metrics = referents.referent_loss(
          logits, aux["referent_xy"], aux["referent_valid"], ref_cfg.sigma)
      metrics = {**metrics, "head_loss": loss, **ref_metrics}
      loss = loss + ref_cfg.weight * ref_loss
    return loss, metrics

  def embed(self, observation: dict, task: dict, train: bool = False) -> Array:
    """→ readout embeddings float32 [B, R, D]."""
    return self.backbone(observation, task, train, readouts_only=True)["readout"]

  def backbone_outputs(self, observation: dict, task: dict) -> dict[str, Array]:
    """All backbone token outputs (task / observation / readout), for inspection and tests."""
    return self.backbone(observation, task, False)

  def sample_from_readouts(self, readouts: Array, noise: dict[str, Array]) -> Array:
    """readouts [B, R, D] + noise dict → actions float32 [B, H, A]."""
    return self.head.sample(readouts, noise)

  def head_predict(self, readouts: Array, *args) -> Array:
    """One call of the head's network (one denoising / integration step for iterative heads)."""
    return self.head.predict(readouts, *args)

  def sample(self, observation: dict, task: dict, noise: dict[str, Array]) -> Array:
    """Backbone once, then the head's fixed-count sampling loop → actions float32 [B, H, A]."""
    return self.sample_from_readouts(self.embed(observation, task, False), noise)
