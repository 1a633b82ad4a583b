"""Policies as the closed-loop evaluator sees them: observations in, action chunks out (env units).

A `ChunkPolicy` gets the stacked observations of N envs each control step and returns an action
chunk float32 [N, H, 3] in the simulator's units; `reset` starts new episodes with their
instructions. `JaxPolicy` wraps a trained policy (the same `Policy.sample_actions` that training
and export use), and the scripted expert and a random policy go through the same harness, which is
how the harness itself is tested.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.data import language, statistics as stats_lib
from vla_jax.envs import ScriptedExpert, SceneState


class ChunkPolicy(Protocol):
  action_horizon: int

  def reset(self, instructions: Sequence[str], scenes: Sequence[SceneState]) -> None:
    ...

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

  def __call__(self, obs, scenes):
    return np.stack([e.act(s) for e, s in zip(self.experts, scenes)])[:, None, :]


class RandomPolicy:
  """Uniform random actions: the floor every task family should sit near."""

  action_horizon = 1

  def __init__(self, seed: int = 0):
    self.rng = np.random.default_rng(seed)

  def reset(self, instructions, scenes):
    pass

  def __call__(self, obs, scenes):
    n = len(obs["state"])
    actions = self.rng.uniform(-1, 1, size=(n, 1, 3)).astype(np.float32)
    actions[..., 2] = self.rng.uniform(size=(n, 1)) > 0.5
    return actions


class ObservationWindow:
  """Each env's last T frames and proprio with the validity mask, as the input pipeline builds them.

  At an episode start the window is padding that repeats the first frame (mask False), exactly
  like `vla_jax.data.traj_transforms`, so a policy sees in closed loop what it saw in training.
  Proprio is normalised on the way in when `proprio_stats` is given (exported graphs normalise
  inside, so they keep env units).
  """

  def __init__(self, window: int, proprio_stats: dict | None = None, normalization: str = "bounds"):
    self.window = int(window)
    self.proprio_stats, self.normalization = proprio_stats, normalization
    self.images = self.proprio = self.valid = None

  def reset(self) -> None:
    self.images = self.proprio = self.valid = None

  def push(self, obs: dict[str, Any]) -> None:
    """Adds this step's image uint8 [N, S, S, 3] and state float32 [N, D]."""
    image = obs["image"]
    proprio = obs["state"].astype(np.float32)
    if self.proprio_stats is not None:
      proprio = stats_lib.normalize(proprio, self.proprio_stats, self.normalization)
    if self.images is None:
      n = len(image)
      self.images = np.repeat(image[:, None], self.window, axis=1)
      self.proprio = np.repeat(proprio[:, None], self.window, axis=1)
      self.valid = np.zeros((n, self.window), bool)
    self.images = np.concatenate([self.images[:, 1:], image[:, None]], axis=1)
    self.proprio = np.concatenate([self.proprio[:, 1:], proprio[:, None]], axis=1)
    self.valid = np.concatenate([self.valid[:, 1:], np.ones((len(image), 1), bool)], axis=1)

  def observation(self, camera: str) -> dict[str, np.ndarray]:
    """The model's `observation` dict: image_<camera> [N, T, S, S, 3], proprio [N, T, D], mask [N, T]."""
    return {f"image_{camera}": self.images, "proprio": self.proprio, "timestep_pad_mask": self.valid}


class JaxPolicy:
  """A trained VLA policy: keeps each env's observation window, normalises, samples, un-normalises.

  Args:
    policy: a `vla_jax.models.policy.Policy`.
    params: the (EMA) parameters.
    action_stats, proprio_stats: this dataset's statistics entries (`statistics[name]["action"]`).
    normalization: "gaussian" | "bounds", as in training.
    camera: the model's camera name fed with the env image.
    encoder: the frozen language encoder for MiniLM models (default: the process's shared one).
  """

  def __init__(self, policy, params, *, action_stats: dict, proprio_stats: dict | None, normalization: str,
               camera: str = "primary", seed: int = 0, encoder=None):
    cfg = policy.config
    self.encoder = encoder  # None: the shared encoder of the config's language.encoder (if any).
    self.policy, self.params = policy, params
    self.action_horizon = int(cfg.action_horizon)
    self.camera = camera
    self.action_stats, self.normalization = action_stats, normalization
    self.window = ObservationWindow(cfg.window_size, proprio_stats, normalization)
    self.rng = jax.random.PRNGKey(seed)
    self.calls = 0
    self._sample = jax.jit(lambda p, obs, task, rng: policy.sample_actions(p, obs, task, rng))
    self._task = None

  def reset(self, instructions, scenes):
    # Encoded once per episode (MiniLM features come from the shared per-string cache).
    self._task = language.instruction_inputs(self.policy.config.language, instructions, encoder=self.encoder)
    self.window.reset()
    self.calls = 0

  def observe(self, obs) -> None:
    """Adds a frame to the windows without sampling (for steps executed from an earlier chunk)."""
    self.window.push(obs)

  def __call__(self, obs, scenes, already_observed: bool = False):
    if not already_observed:
      self.window.push(obs)
    task = self._task
    rng = jax.random.fold_in(self.rng, self.calls)
    self.calls += 1
    actions = np.asarray(self._sample(self.params, self.window.observation(self.camera), task, rng), np.float32)
    return stats_lib.unnormalize(actions, self.action_stats, self.normalization)


def jax_policy_from_checkpoint(checkpoint_dir, *, dataset: str | None = None, use_ema: bool = True, seed: int = 0) -> JaxPolicy:
  """Rebuilds a `JaxPolicy` from one checkpoint directory alone (config + statistics inside)."""
  from vla_jax.models.policy import Policy
  from vla_jax.training.checkpoint import restore_for_inference

  restored = restore_for_inference(checkpoint_dir)
  config = ml_collections.ConfigDict(restored["config"])
  stats = restored["dataset_statistics"]
  name = dataset or next(iter(stats))
  if name not in stats:
    raise ValueError(f"dataset {name!r} has no statistics in {checkpoint_dir}; it has {sorted(stats)}")
  params = restored["state"]["ema_params" if use_ema else "params"]
  params = jax.tree.map(jnp.asarray, params)
  policy = Policy(config.model)
  return JaxPolicy(policy, params, action_stats=stats[name]["action"], proprio_stats=stats[name].get("proprio"),
                   normalization=config.data.normalization, camera=config.model.cameras[0], seed=seed)
