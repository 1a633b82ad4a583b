"""A batched tabletop for fast closed-loop evaluation of many episodes at once.

Semantics chosen for evaluation rather than for on-policy RL: there is no auto-reset. An env whose
episode has ended is frozen — it keeps returning its final observation with reward 0 and
`done=True` — until the next `reset`, so a batch of N episodes is simply run until `all(done)`.
Outputs are stacked numpy arrays with a leading batch dimension N.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vla_jax.envs.tabletop import ACTION_DIM, SceneState, TabletopEnv


class VectorTabletopEnv:
  """N independent `TabletopEnv`s stepped together.

  Observations: `image` uint8 [N, S, S, 3], `state` float32 [N, 5], `instruction` list of N str.
  """

  def __init__(self, num_envs: int, **env_kwargs: Any):
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
      raise ValueError(f"num_envs={num_envs!r} is not valid; expected a positive int")
    self.envs = [TabletopEnv(**env_kwargs) for _ in range(num_envs)]
    self.num_envs = int(num_envs)
    self.single_observation_space = self.envs[0].observation_space
    self.single_action_space = self.envs[0].action_space
    self.done = np.ones(num_envs, bool)
    self.success = np.zeros(num_envs, bool)
    self.lengths = np.zeros(num_envs, np.int32)
    self._last: list[dict[str, Any]] = []

  @property
  def scenes(self) -> list[SceneState]:
    return [e.scene for e in self.envs]

  def reset(self, seeds: int | Sequence[int], options: dict[str, Any] | Sequence[dict] | None = None):
    """Resets all envs. `seeds`: one int (env i gets seed + i) or N ints; `options` one dict or N."""
    seed_list = [int(seeds) + i for i in range(self.num_envs)] if np.isscalar(seeds) else list(seeds)
    if len(seed_list) != self.num_envs:
      raise ValueError(f"reset got {len(seed_list)} seeds for {self.num_envs} envs")
    opts = options if isinstance(options, (list, tuple)) else [options] * self.num_envs
    if len(opts) != self.num_envs:
      raise ValueError(f"reset got {len(opts)} option dicts for {self.num_envs} envs")
    results = [e.reset(seed=s, options=o) for e, s, o in zip(self.envs, seed_list, opts)]
    self._last = [obs for obs, _ in results]
    self.done[:] = False
    self.success[:] = False
    self.lengths[:] = 0
    return self._stack(self._last), [info for _, info in results]

  def step(self, actions: np.ndarray):
    """actions float32 [N, 3] -> (obs, reward [N], terminated [N], truncated [N], infos)."""
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs, ACTION_DIM):
      raise ValueError(f"actions have shape {actions.shape}; expected ({self.num_envs}, {ACTION_DIM})")
    reward = np.zeros(self.num_envs, np.float32)
    terminated = self.success.copy()
    truncated = self.done & ~self.success
    infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
    for i, env in enumerate(self.envs):
      if self.done[i]:
        continue
      obs, r, term, trunc, infos[i] = env.step(actions[i])
      self._last[i] = obs
      reward[i], terminated[i], truncated[i] = r, term, trunc
      self.lengths[i] += 1
      self.success[i] = term
      self.done[i] = term or trunc
    return self._stack(self._last), reward, terminated, truncated, infos

  @staticmethod
  def _stack(obs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": np.stack([o["image"] for o in obs]),
        "state": np.stack([o["state"] for o in obs]),
        "instruction": [o["instruction"] for o in obs],
    }
