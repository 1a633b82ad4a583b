"""Policies as the closed-loop evaluator sees them: observations in, action chunks out (env units).

A `ChunkPolicy` gets the stacked observations of N envs each control step and returns an action
chunk float32 [N, H, 3] in the simulator's units; `reset` starts new episodes with their
instructions. Trained policies implement it in `vla_jax.inference` (`JaxPolicy` — the exported
function, jitted — and the JAX-free `OnnxPolicy`); the scripted expert and a random policy here go
through the same harness, which is how the harness itself is tested.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from vla_jax.envs import ScriptedExpert, SceneState


class ChunkPolicy(Protocol):
  action_horizon: int

  def reset(self, instructions: Sequence[str], scenes: Sequence[SceneState]) -> None:
    ...

  def observe(self, obs: dict[str, Any]) -> None:
    """Adds a frame to the policy's observation window without sampling (steps executed from an
    earlier chunk); policies without a window do nothing."""

  def __call__(self, obs: dict[str, Any], scenes: Sequence[SceneState]) -> np.ndarray:
    """obs: image uint8 [N, S, S, 3], state float32 [N, D] -> actions float32 [N, H, A]."""


class ExpertPolicy:
  """The scripted expert through the evaluation harness (it reads the privileged scenes)."""

  action_horizon = 1

  def __init__(self, noise_std: float = 0.1, seed: int = 0):
    self.noise_std, self.seed = noise_std, seed
    self.experts: list[ScriptedExpert] = []

  def reset(self, instructions, scenes):
    self.experts = [ScriptedExpert(noise_std=self.noise_std) for _ in scenes]
    for i, (expert, scene) in enumerate(zip(self.experts, scenes)):
      expert.reset(scene, seed=self.seed + i)

  def observe(self, obs):
    pass  # Acts on the privileged scene, not on a window of frames.

  def __call__(self, obs, scenes):
    return np.stack([e.act(s) for e, s in zip(self.experts, scenes)])[:, None, :]


class RandomPolicy:
  """Uniform random actions: the floor every task family should sit near."""

  action_horizon = 1

  def __init__(self, seed: int = 0):
    self.rng = np.random.default_rng(seed)

  def reset(self, instructions, scenes):
    pass

  def observe(self, obs):
    pass

  def __call__(self, obs, scenes):
    n = len(obs["state"])
    actions = self.rng.uniform(-1, 1, size=(n, 1, 3)).astype(np.float32)
    actions[..., 2] = self.rng.uniform(size=(n, 1)) > 0.5
    return actions
