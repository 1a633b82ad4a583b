"""Fixtures for tests and benchmarks: plausible statistics and untrained bundles.

Not used by any production path; kept in the library (not under tests/) because benchmarks and
the server's `--untrained` mode build untrained policies with the same graph and cost as trained ones.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from vla_jax.inference.bundle import PolicyBundle
from vla_jax.models.policy import Policy, example_batch


def synthetic_statistics(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, Any]:
  """Plausible, non-trivial statistics (offsets, scales ≠ 1, last action dim an unmasked gripper)."""
  rng = np.random.default_rng(seed)

  def entry(dim: int, gripper_last: bool) -> dict[str, Any]:
    mean = rng.normal(size=dim)
    std = rng.uniform(0.2, 2.0, size=dim)
    mask = [True] * dim
    if gripper_last and dim:
      mask[-1] = False
    return {"mean": mean.tolist(), "std": std.tolist(), "min": (mean - 3 * std).tolist(),
            "max": (mean + 3 * std).tolist(), "q01": (mean - 2 * std).tolist(), "q99": (mean + 2 * std).tolist(),
            "mask": mask}

  return {"action": entry(config.action_dim, True), "proprio": entry(config.proprio_dim, False)}


def random_bundle(config: ml_collections.ConfigDict, seed: int = 0, normalization: str = "bounds") -> PolicyBundle:
  """An untrained policy with synthetic statistics: same graph and cost as a trained one."""
  policy = Policy(config)
  params = jax.jit(policy.init)(jax.random.key(seed), example_batch(config, 1))
  stats = synthetic_statistics(config, seed)
  return PolicyBundle(policy=policy, params=jax.tree.map(np.asarray, params), action_stats=stats["action"],
                      proprio_stats=stats["proprio"], normalization=normalization,
                      source={"kind": "random", "seed": seed, "size": config.get("size")})
