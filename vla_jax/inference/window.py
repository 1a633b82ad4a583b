"""The observation window a policy reads: each robot's last T frames, padded like training.

At an episode start the window is padding that repeats the first frame (mask False), exactly like
`vla_jax.data.traj_transforms`, so a policy sees in closed loop what it saw in training. Numpy
only: the JAX policy, the ONNX runtime and the server all keep one per robot.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ObservationWindow:
  """N robots' last `window` images and proprio (env units) with the validity mask."""

  def __init__(self, window: int):
    if int(window) < 1:
      raise ValueError(f"ObservationWindow: window must be >= 1, got {window}")
    self.window = int(window)
    self.images = self.proprio = self.valid = None

  def reset(self) -> None:
    self.images = self.proprio = self.valid = None

  def push(self, obs: dict[str, Any]) -> None:
    """Adds this step's image uint8 [N, S, S, 3] and state float [N, D]."""
    image = np.asarray(obs["image"])
    proprio = np.asarray(obs["state"], np.float32)
    if image.ndim != 4 or proprio.ndim != 2 or len(image) != len(proprio):
      raise ValueError(f"ObservationWindow.push: expected image [N, S, S, 3] and state [N, D], got "
                       f"image {list(image.shape)} and state {list(proprio.shape)}")
    if self.images is not None and len(image) != len(self.images):
      raise ValueError(f"ObservationWindow.push: {len(image)} robots, but this episode started with "
                       f"{len(self.images)}; reset() first")
    if self.images is None:
      n = len(image)
      self.images = np.repeat(image[:, None], self.window, axis=1)
      self.proprio = np.repeat(proprio[:, None], self.window, axis=1)
      self.valid = np.zeros((n, self.window), bool)
    self.images = np.concatenate([self.images[:, 1:], image[:, None]], axis=1)
    self.proprio = np.concatenate([self.proprio[:, 1:], proprio[:, None]], axis=1)
    self.valid = np.concatenate([self.valid[:, 1:], np.ones((len(image), 1), bool)], axis=1)

  def inputs(self, camera: str) -> dict[str, np.ndarray]:
    """The policy function's observation inputs: image_<camera> uint8 [N, T, S, S, 3], proprio
    float32 [N, T, D] (env units), timestep_pad_mask bool [N, T]."""
    if self.images is None:
      raise RuntimeError("ObservationWindow is empty: push() an observation first")
    return {f"image_{camera}": self.images, "proprio": self.proprio, "timestep_pad_mask": self.valid}
