"""VLAModel: the backbone and one action head as a single flax module.

Its methods are the three things anything above `models/` needs: the training loss, the readout
embedding (backbone, run once per control step) and sampling from readouts (only the head
iterates). `policy.Policy` wraps them as pure functions over explicit params.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vla_jax.models.backbone import Backbone
from vla_jax.models.heads import make_head

Array = jnp.ndarray


class VLAModel(nn.Module):
  config: ml_collections.ConfigDict

  def setup(self):
    self.backbone = Backbone(self.config, name="backbone")
    self.head = make_head(self.config, name="head")

  def __call__(self, observation: dict, task: dict, actions: Array, action_pad_mask: Array,
               rng: Array, train: bool = False) -> tuple[Array, dict[str, Array]]:
    """Training loss (also what `init` traces, so every parameter is created)."""
    readouts = self.embed(observation, task, train)
    return self.head(readouts, actions, action_pad_mask, rng, train)

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
