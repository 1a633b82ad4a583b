"""Train-step throughput and model FLOP utilisation (MFU) of a training config on this machine.

  python benchmarks/train_step.py [--variant small] [--batch_size 32] [--steps 20] [--compute_dtype float32]
  python benchmarks/train_step.py --set "model.image.stem_features=(32, 64, 64)" --name train_step_wide_stem

Measures, in one run: this machine's f32 matmul peak (FLOP/s, a large jnp.dot), the jitted train
step's compile time and steady-state step time (median over --steps after warm-up), samples/s,
the step's FLOPs from XLA's cost analysis, and MFU = achieved FLOP/s / measured peak.
The train step is the real one (`vla_jax.training.step.make_train_step` with the policy loss) on a
synthetic batch shaped like the config's (with referent labels when the config trains the auxiliary
referent loss, as the quickstart does), so the input pipeline is not part of the figure.
The batch size defaults to the config's `train.batch_size` (the quickstart's for `small`).

Also prints where the FLOPs are: forward and forward+backward (VJP) FLOPs of every module down to
--depth, from XLA's cost analysis of each module call (Flax's summary machinery), as a share of the
whole model's.
"""

from __future__ import annotations

import argparse
import ast
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


def module_flops(policy: Policy, batch: dict, depth: int) -> list[dict]:
  """Forward and forward+backward GFLOPs of each module call of the loss, down to `depth`."""
  from flax.linen import summary  # The per-call FLOP table behind `Module.tabulate(compute_flops=True)`.

  rng = jax.random.key(0)
  table = summary._get_module_table(policy.model, depth=depth, show_repeated=False, compute_flops=True,
                                    compute_vjp_flops=True)(
      {"params": rng, "dropout": rng}, batch["observation"], batch["task"], batch["action"],
      batch["action_pad_mask"], rng, True, batch.get("aux"), batch.get("action_dim_mask"))
  total = next(r for r in table if not r.path)
  return [{"module": "/".join(r.path) or "(whole model)", "fwd_gflop": r.flops / 1e9,
           "fwd_bwd_gflop": r.vjp_flops / 1e9, "share_of_fwd_bwd": r.vjp_flops / total.vjp_flops}
          for r in table]


def override(item: str) -> tuple[str, object]:
  """"model.image.stem_features=(16, 32, 64)" -> ("model.image.stem_features", (16, 32, 64))."""
  key, sep, value = item.partition("=")
  if not sep:
    raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. model.image.stem_features=(16, 32, 64)")
  try:
    return key.strip(), ast.literal_eval(value.strip())
  except (ValueError, SyntaxError):
    return key.strip(), value.strip()  # A bare string: --set model.head.kind=flow.


def set_key(config, key: str, value) -> None:
  """Sets a dotted config key that must already exist (a typo is an error, not a new field)."""
  *parents, leaf = key.split(".")
  parent = config
  for name in parents:
    if name not in parent:
      raise SystemExit(f"--set {key}: the config has no {name!r} under this path")
    parent = parent[name]
  if leaf not in parent:
    raise SystemExit(f"--set {key}: the config has no key {leaf!r}; existing: {sorted(parent.keys())}")
  parent[leaf] = value


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="small")
  parser.add_argument("--batch_size", type=int, default=0, help="0: the config's train.batch_size.")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--head", default=None, help="Override config.model.head.kind.")
  parser.add_argument("--compute_dtype", default=None, help="Override config.train.compute_dtype.")
  parser.add_argument("--stem_activation", default=None, help="Override config.model.image.stem_activation.")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="Override any config key (a Python literal), e.g. model.image.stem_features=(16, 32, 64).")
  parser.add_argument("--depth", type=int, default=2, help="Module depth of the FLOP breakdown (0: none).")
  parser.add_argument("--name", default=None, help="Results name (default train_step_<variant>).")
  args = parser.parse_args()

  config = tabletop.get_config(args.variant)
  if args.head:
    config.model.head.kind = args.head
  if args.compute_dtype:
    config.train.compute_dtype = args.compute_dtype
  if args.stem_activation:
    config.model.image.stem_activation = args.stem_activation
  overrides = dict(map(override, args.set))
  for key, value in overrides.items():
    set_key(config, key, value)
  args.batch_size = args.batch_size or config.train.batch_size
  policy = Policy(config.model)
  batch = example_batch(config.model, args.batch_size, seed=0)
  if config.model.get("referent_loss") and config.model.referent_loss.weight > 0:
    # The quickstart trains with the auxiliary referent loss: labels shaped as the pipeline's.
    k = config.data.num_referents
    rng = np.random.default_rng(0)
    batch["aux"] = {"referent_xy": rng.uniform(-1, 1, (args.batch_size, k, 2)).astype(np.float32),
                    "referent_valid": np.ones((args.batch_size, k), bool)}
    m = config.data.get("attribute_objects", 0)
    if m and config.model.referent_loss.get("attribute_weight", 0) > 0:
      batch["aux"].update(attribute_xy=rng.uniform(0, 1, (args.batch_size, 2, m, 2)).astype(np.float32),
                          attribute_valid=np.ones((args.batch_size, 2, m), bool))
  tx, schedule = optimizer_lib.make_optimizer(config.optim, 1000)
  state = create_state(lambda rng: policy.init(rng, example_batch(config.model, 1)), tx, jax.random.PRNGKey(0))
  train_step = jax.jit(step_lib.make_train_step(
      lambda p, b, r: policy.loss(p, b, r), tx, schedule, ema_decay=config.train.ema_decay,
      compute_dtype=config.train.compute_dtype), donate_argnums=(0,))

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
      "compute_dtype": config.train.compute_dtype,
      "stem_activation": config.model.image.stem_activation,
      "stem_features": list(config.model.image.stem_features),
      "overrides": {k: repr(v) for k, v in overrides.items()},
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
  modules = module_flops(policy, batch, args.depth) if args.depth else []
  if modules:
    print(f"\nFLOPs per module (batch {args.batch_size}; the train step adds the optimizer and EMA):")
    common.print_table(modules, list(modules[0]))
  path = common.write_results(args.name or f"train_step_{args.variant}",
                              {"machine": common.machine_info(), "rows": [row], "modules": modules,
                               "step_times_s": times})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
