"""`JaxPolicy`: a trained policy in closed loop — the exported function, jitted.

Each control step it pushes the robots' frames into their observation windows, draws the noise
from (seed, call count) and runs `policy_fn.make_policy_fn(bundle)` — the very function the
exporter converts — so a closed-loop evaluation measures what gets deployed. Proprio goes in and
actions come out in env units (the function normalises inside).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.data import language
from vla_jax.inference import bundle as bundle_lib
from vla_jax.inference.policy_fn import make_policy_fn
from vla_jax.inference.window import ObservationWindow


class JaxPolicy:
  """A `ChunkPolicy` (see vla_jax.evaluation.policies) over a `PolicyBundle`.

  Args:
    bundle: the policy, params and statistics (`bundle.load_checkpoint`, `bundle.from_statistics`).
    seed: noise of call c of an episode is `make_noise(fold_in(key(seed), c))`; `OnnxPolicy` with
      noise="jax" draws the same, which makes JAX-vs-ONNX comparisons paired.
  """

  def __init__(self, bundle: bundle_lib.PolicyBundle, *, seed: int = 0):
    cfg = bundle.model_config
    self.bundle = bundle
    self.policy = bundle.policy
    self.params = jax.tree.map(jnp.asarray, bundle.params)  # On the device once, not per call.
    self.action_horizon = int(cfg.action_horizon)
    self.observation_keys = bundle.observation_keys  # {policy input → observation key}
    self.seed = int(seed)
    self.rng = jax.random.PRNGKey(seed)
    self._samplers: dict[str | None, Any] = {}  # guidance → jitted sampler, shared by sessions.
    self._fresh_state()

  def _sampler(self, guidance: str | None):
    """The jitted policy function (+ noise from the key) for plain or guided sampling, built once."""
    if guidance not in self._samplers:
      fn = make_policy_fn(self.bundle, guidance=guidance)
      policy = self.bundle.policy

      def sample(params, inputs, rng):
        batch = inputs["timestep_pad_mask"].shape[0]
        noise = {f"noise_{k}": v for k, v in policy.make_noise(rng, batch).items()}
        return fn(params, {**inputs, **noise})

      self._samplers[guidance] = jax.jit(sample)
    return self._samplers[guidance]

  def _fresh_state(self) -> None:
    self.window = ObservationWindow(self.bundle.model_config.window_size, self.observation_keys)
    self.calls = 0
    self._task: dict[str, np.ndarray] | None = None

  def new_session(self) -> "JaxPolicy":
    """A policy sharing this one's device params and compiled function, with its own episode
    state (window, instruction, call counter): one per robot / server connection."""
    session = copy.copy(self)
    session._fresh_state()
    return session

  def reset(self, instructions: Sequence[str], scenes=None) -> None:
    # Encoded once per episode (MiniLM features come from the encoder's per-string cache).
    self._task = language.instruction_inputs(self.bundle.model_config.language, instructions,
                                             encoder=self.bundle.encoder)
    self.window.reset()
    self.calls = 0

  def observe(self, obs: dict[str, Any]) -> None:
    """Adds a frame to the windows without sampling (for steps executed from an earlier chunk)."""
    self.window.push(obs)

  def __call__(self, obs: dict[str, Any], scenes=None, *,
               guidance: str | None = None, prefix: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> np.ndarray:
    """obs: each camera's image uint8 [N, S, S, 3] and the state float32 [N, D], under the keys
    `observation_keys` names (the simulators: image, state) → actions float32 [N, H, A] (env units).

    guidance "rtc" | "hard" | "conditioned" (real-time chunking): continue `prefix` float32 [N, H, A] (env units,
    aligned to this chunk's steps) under the soft mask `weights` float32 [N, H]
    (`models/heads/realtime.prefix_weights`); the noise is the plain call's (same key).
    """
    if self._task is None:
      raise RuntimeError("JaxPolicy: reset(instructions) before the first call")
    self.window.push(obs)
    rng = jax.random.fold_in(self.rng, self.calls)
    self.calls += 1
    inputs = {**self.window.inputs(), **self._task}
    if guidance is not None:
      if prefix is None or weights is None:
        raise ValueError(f"JaxPolicy: guidance={guidance!r} needs prefix [N, H, A] and weights [N, H]")
      inputs.update(prefix_actions=np.asarray(prefix, np.float32), prefix_weights=np.asarray(weights, np.float32))
    return np.asarray(self._sampler(guidance)(self.params, inputs, rng), np.float32)


def load(checkpoint_dir: str | Path, *, dataset: str | None = None, use_ema: bool = True, seed: int = 0,
         encoder: Any = None) -> JaxPolicy:
  """A `JaxPolicy` from one checkpoint directory alone (config + statistics inside)."""
  bundle = bundle_lib.load_checkpoint(checkpoint_dir, dataset=dataset, use_ema=use_ema)
  bundle.encoder = encoder
  return JaxPolicy(bundle, seed=seed)
