"""Train-step throughput and model FLOP utilisation (MFU) of a training config on this machine.

  python benchmarks/train_step.py [--variant small] [--batch_size 64] [--steps 20]

Measures, in one run: this machine's f32 matmul peak (FLOP/s, a large jnp.dot), the jitted train
step's compile time and steady-state step time (median over --steps after warm-up), samples/s,
the step's FLOPs from XLA's cost analysis, and MFU = achieved FLOP/s / measured peak.
The train step is the real one (`vla_jax.training.step.make_train_step` with the policy loss) on a
synthetic batch shaped like the config's, so the input pipeline is not part of the figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from experiments.configs import tabletop  # noqa: E402
from vla_jax.models.policy import Policy, count_params, example_batch  # noqa: E402
from vla_jax.training import optimizer as optimizer_lib, step as step_lib  # noqa: E402
from vla_jax.training.state import create_state  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="small")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--head", default=None, help="Override config.model.head.kind.")
  args = parser.parse_args()

  config = tabletop.get_config(args.variant)
  if args.head:
    config.model.head.kind = args.head
  policy = Policy(config.model)
  batch = example_batch(config.model, args.batch_size, seed=0)
  tx, schedule = optimizer_lib.make_optimizer(config.optim, 1000)
  state = create_state(lambda rng: policy.init(rng, example_batch(config.model, 1)), tx, jax.random.PRNGKey(0))
  train_step = jax.jit(step_lib.make_train_step(
      lambda p, b, r: policy.loss(p, b, r), tx, schedule, ema_decay=config.train.ema_decay), donate_argnums=(0,))

  t = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))

  state, metrics = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  peak = common.matmul_peak()

  row = {
      "config": f"tabletop:{args.variant}",
      "head": config.model.head.kind,
      "params": count_params(state.params),
      "batch": args.batch_size,
      "compile_s": compile_s,
      "step_ms": 1000 * step_s,
      "samples_per_s": args.batch_size / step_s,
      "gflop_per_step": flops / 1e9,
      "achieved_gflop_s": flops / step_s / 1e9,
      "peak_gflop_s": peak / 1e9,
      "mfu": flops / step_s / peak,
  }
  common.print_table([row], list(row))
  path = common.write_results(f"train_step_{args.variant}", {"machine": common.machine_info(), "rows": [row],
                                                             "step_times_s": times})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
