"""Tabletop simulator throughput: env steps/s including rendering, on one core.

  python benchmarks/env_speed.py [--seconds 3]

Target: >= 2 000 steps/s at 64x64 on one core. Rows: single env with random actions,
single env driven by the scripted expert (what dataset generation does), and the vectorised env.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from vla_jax.envs import ScriptedExpert, TabletopEnv, VectorTabletopEnv  # noqa: E402


def time_single(image_size: int, policy: str, seconds: float) -> float:
  env = TabletopEnv(image_size=image_size)
  expert = ScriptedExpert()
  rng = np.random.default_rng(0)
  steps, seed, done = 0, 0, True
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    if done:
      env.reset(seed=seed)
      expert.reset(env.scene, seed=seed)
      seed += 1
    if policy == "expert":
      action = expert.act(env.scene)
    else:
      action = np.array([*rng.uniform(-1, 1, 2), rng.uniform() > 0.7], np.float32)
    _, _, terminated, truncated, _ = env.step(action)
    done = terminated or truncated
    steps += 1
  return steps / (time.perf_counter() - start)


def time_vector(num_envs: int, image_size: int, seconds: float) -> float:
  venv = VectorTabletopEnv(num_envs, image_size=image_size, max_episode_steps=100)
  rng = np.random.default_rng(0)
  steps, seed = 0, 0
  venv.reset(seeds=seed)
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    if venv.done.all():
      seed += num_envs
      venv.reset(seeds=seed)
    active = int((~venv.done).sum())
    actions = rng.uniform(-1, 1, (num_envs, 3)).astype(np.float32)
    venv.step(actions)
    steps += active
  return steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=3.0, help="Time per row.")
  args = parser.parse_args()
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # One core, as the target says.
  rows = []
  for size in (64, 128, 224):
    for policy in ("random", "expert"):
      rows.append({"env": "TabletopEnv", "image_px": size, "policy": policy,
                   "steps_per_s": time_single(size, policy, args.seconds)})
  rows.append({"env": "VectorTabletopEnv(32)", "image_px": 64, "policy": "random",
               "steps_per_s": time_vector(32, 64, args.seconds)})
  common.print_table(rows, ["env", "image_px", "policy", "steps_per_s"])
  target = next(r["steps_per_s"] for r in rows if r["image_px"] == 64 and r["policy"] == "random")
  print(f"\n64x64 single env: {target:,.0f} steps/s on one core (target >= 2,000)")
  path = common.write_results("env_speed", {"machine": common.machine_info(), "cores_used": 1, "rows": rows})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
