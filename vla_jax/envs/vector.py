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


class FrozenWhenDoneBatch:
  """The bookkeeping every batched env here shares: episodes frozen once done, stacked outputs.

  A subclass calls `_begin(observations)` when its envs have been reset and `_end_step(results)`
  with one gymnasium step tuple per env (None for an env that was already done, which is not
  stepped); both return what `reset` / `step` return.
  """

  num_envs: int

  def _no_episodes(self, num_envs: int) -> None:
    """Before the first reset every env counts as done."""
    self.num_envs = int(num_envs)
    self.done = np.ones(num_envs, bool)
    self.success = np.zeros(num_envs, bool)
    self.lengths = np.zeros(num_envs, np.int32)
    self._last: list[dict[str, Any]] = []

  def _begin(self, observations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    self._last = list(observations)
    n = self.num_envs = len(self._last)
    self.done = np.zeros(n, bool)
    self.success = np.zeros(n, bool)
    self.lengths = np.zeros(n, np.int32)
    return self._stack(self._last)

  def _check_actions(self, actions: Any, action_dim: int) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs, action_dim):
      raise ValueError(f"actions have shape {actions.shape}; expected ({self.num_envs}, {action_dim})")
    return actions

  def _end_step(self, results: Sequence[tuple | None]):
    reward = np.zeros(self.num_envs, np.float32)
    terminated = self.success.copy()
    truncated = self.done & ~self.success
    infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
    for i, result in enumerate(results):
      if result is None:
        continue
      obs, r, term, trunc, infos[i] = result
      self._last[i] = obs
      reward[i], terminated[i], truncated[i] = r, term, trunc
      self.lengths[i] += 1
      self.success[i] = term
      self.done[i] = term or trunc
    return self._stack(self._last), reward, terminated, truncated, infos

  @staticmethod
  def _stack(obs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every array observation (images, state, ...) stacked to [N, ...]; instructions as a list."""
    return {key: [o[key] for o in obs] if key == "instruction" else np.stack([o[key] for o in obs])
            for key in obs[0]}


def seed_list(seeds: int | Sequence[int], num_envs: int) -> list[int]:
  """One int -> env i gets seed + i (num_envs of them); a sequence -> its ints."""
  return [int(seeds) + i for i in range(num_envs)] if np.isscalar(seeds) else [int(s) for s in seeds]


class VectorTabletopEnv(FrozenWhenDoneBatch):
  """N independent `TabletopEnv`s stepped together.

  Observations: `image` uint8 [N, S, S, 3], `state` float32 [N, 5], `instruction` list of N str.
  """

  def __init__(self, num_envs: int, **env_kwargs: Any):
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
      raise ValueError(f"num_envs={num_envs!r} is not valid; expected a positive int")
    self.envs = [TabletopEnv(**env_kwargs) for _ in range(num_envs)]
    self.single_observation_space = self.envs[0].observation_space
    self.single_action_space = self.envs[0].action_space
    self._no_episodes(num_envs)

  @property
  def scenes(self) -> list[SceneState]:
    return [e.scene for e in self.envs]

  def reset(self, seeds: int | Sequence[int], options: dict[str, Any] | Sequence[dict] | None = None):
    """Resets all envs. `seeds`: one int (env i gets seed + i) or N ints; `options` one dict or N."""
    seeds = seed_list(seeds, len(self.envs))
    if len(seeds) != len(self.envs):
      raise ValueError(f"reset got {len(seeds)} seeds for {len(self.envs)} envs")
    opts = options if isinstance(options, (list, tuple)) else [options] * len(self.envs)
    if len(opts) != len(self.envs):
      raise ValueError(f"reset got {len(opts)} option dicts for {len(self.envs)} envs")
    results = [e.reset(seed=s, options=o) for e, s, o in zip(self.envs, seeds, opts)]
    return self._begin([obs for obs, _ in results]), [info for _, info in results]

  def step(self, actions: np.ndarray):
    """actions float32 [N, 3] -> (obs, reward [N], terminated [N], truncated [N], infos)."""
    actions = self._check_actions(actions, ACTION_DIM)
    return self._end_step([None if self.done[i] else env.step(actions[i]) for i, env in enumerate(self.envs)])
