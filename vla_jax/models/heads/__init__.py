"""Action heads behind one interface, chosen by `config.head.kind`.

Every head is a flax module built from the full model config with
  __call__(readouts [B, R, D], actions [B, H, A], action_pad_mask [B, H], rng, train)
      → (scalar loss, metrics dict)       # used for init and training
  sample(readouts [B, R, D], noise dict) → actions float32 [B, H, A] in [-action_clip, action_clip]
and a module-level `noise_shapes(config, batch_size)` naming the noise arrays `sample` consumes
(empty for the deterministic baselines), so export can take noise as an input.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from vla_jax.models.heads import diffusion, discrete, flow, regression

_HEADS = {
    "diffusion": (diffusion.DiffusionHead, diffusion.noise_shapes),
    "flow": (flow.FlowHead, flow.noise_shapes),
    "l1": (regression.RegressionHead, regression.noise_shapes),
    "mse": (regression.RegressionHead, regression.noise_shapes),
    "discrete": (discrete.DiscreteHead, discrete.noise_shapes),
}


def _lookup(config: ml_collections.ConfigDict):
  kind = config.head.kind
  if kind not in _HEADS:
    raise ValueError(f"head.kind {kind!r} unknown; expected one of {sorted(_HEADS)}")
  return _HEADS[kind]


def make_head(config: ml_collections.ConfigDict, name: str = "head") -> nn.Module:
  """The head module for `config.head.kind`."""
  return _lookup(config)[0](config, name=name)


def noise_shapes(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, tuple]:
  """Shapes of the noise arrays the configured head's `sample` consumes."""
  return _lookup(config)[1](config, batch_size)
