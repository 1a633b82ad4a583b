"""Real-time chunking: every execution strategy under inference delays, in closed loop.

  python benchmarks/realtime_chunking.py --workdir runs/tabletop_h16 [--episodes_per_family 100]
      [--delays 0,1,2,4,6] [--strategies sync,naive_async,ensemble,hard,rtc] [--execute_steps 4]

For each delay d (control steps between an observation and the chunk computed from it) and each
strategy of `vla_jax.inference.execution`, the trained policy runs the same scenes (seed scheme of
`eval_config`, "seen" condition) in the simulator and this program reports:

  success          per task family (95 % Wilson interval) and averaged over families;
  boundary_jump    ‖a_t − a_{t−1}‖ (env-unit actions: dx, dy, gripper) at chunk switches — mean and
                   max — next to the same at every other step (`interior_*`); sync and naive async
                   switch once per chunk, the ensemble on every arrival;
  steps_to_success control steps until success, waits included (sync stands still d steps per
                   chunk), mean over the successful episodes; `env_steps_to_success` without waits;
  sample_ms        batch-1 latency of the sampler the strategy uses on this CPU (plain for sync,
                   naive_async and ensemble; guided for hard, rtc and conditioned), head only (readouts → chunk;
                   the backbone runs once either way) and for the whole policy call.

The scenes, the policy's noise (drawn from the call count) and the delays are the same for every
strategy, so the comparisons between strategies at one delay are paired. Writes
benchmarks/results/realtime_chunking.json (machine, command, rows), .md (the table) and .png
(success and boundary jump against delay, one line per strategy).
Targets: at d = 4, RTC success within 3 points of sync at d = 0 and RTC boundary jump
≤ half of naive async's; RTC sampling ≤ 1.6× plain. The same lines are printed for "conditioned"
(real-time chunking trained in: `head.prefix_conditioning`), which runs only on checkpoints trained
with it and is left out of the default strategies otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
import common  # noqa: E402

from vla_jax.envs import tasks  # noqa: E402
from vla_jax.evaluation import evaluate as ev  # noqa: E402
from vla_jax.evaluation import metrics, rollout  # noqa: E402
from vla_jax.inference import execution  # noqa: E402

NAME = "realtime_chunking"
COLUMNS = ("strategy", "delay", "success", "ci95", "boundary_jump", "boundary_jump_max", "interior_jump",
           "interior_jump_max", "steps_to_success", "waits_per_episode", "sample_ms")


def run_condition(policy, strategy: str, delay: int, args: argparse.Namespace, config) -> dict[str, Any]:
  """One (strategy, delay): every family's episodes, summarised into one JSON row."""
  per_family, everything = {}, []
  for family in config.families:
    index = tasks.FAMILIES.index(family)
    seeds = [config.seed + index * 100_000 + i for i in range(args.episodes_per_family)]
    results = rollout.run_episodes(policy, seeds, family=family, split="train", num_envs=args.num_envs,
                                   **ev.sim_kwargs(config, policy), strategy=strategy,
                                   execute_steps=args.execute_steps, delay=delay, delay_seed=config.seed)
    s = metrics.summarise(results)
    wins = [r for r in results if r.success]
    per_family[family] = {"success": s["success_rate"], "ci95": [s["ci95_low"], s["ci95_high"]],
                          "episodes": s["episodes"],
                          "steps_to_success": _mean([r.length + r.wait_steps for r in wins])}
    everything += results
  boundary = [j for r in everything for j in r.boundary_jumps]
  interior_steps = sum(r.interior_steps for r in everything)
  wins = [r for r in everything if r.success]
  pooled = metrics.summarise(everything)
  return {
      "strategy": strategy,
      "delay": delay,
      "success": float(np.mean([f["success"] for f in per_family.values()])),
      "ci95": [pooled["ci95_low"], pooled["ci95_high"]],  # Pooled episodes (families are equal-sized).
      "boundary_jump": _mean(boundary),
      "boundary_jump_max": max(boundary, default=None),
      "boundary_switches": len(boundary),
      "interior_jump": sum(r.interior_jump_sum for r in everything) / interior_steps if interior_steps else None,
      "interior_jump_max": max((r.interior_jump_max for r in everything), default=None),
      "steps_to_success": _mean([r.length + r.wait_steps for r in wins]),
      "env_steps_to_success": _mean([r.length for r in wins]),
      "waits_per_episode": _mean([r.wait_steps for r in everything]),
      "inferences_per_episode": _mean([r.inferences for r in everything]),
      "per_family": per_family,
  }


def _mean(values) -> float | None:
  values = list(values)
  return float(np.mean(values)) if values else None


def sampler_latency(policy, calls: int, modes: list[str]) -> dict[str, dict[str, float]]:
  """Median batch-1 latency (ms) of the plain sampler and the guided `modes` (of hard, rtc,
  conditioned): head only and whole call.

  Calls alternate between the samplers, so a load change on the shared machine hits all."""
  import jax
  import jax.numpy as jnp

  from vla_jax.models.heads import realtime

  bundle, p = policy.bundle, policy.policy
  cfg = bundle.model_config
  h, a = int(cfg.action_horizon), int(cfg.action_dim)
  s = min(h, 8)
  weights = realtime.prefix_weights(h, 4, s, xp=np)[None]
  rng = np.random.default_rng(0)
  prefix = rng.uniform(-0.5, 0.5, size=(1, h, a)).astype(np.float32)

  # Head only: readouts → chunk, as `Policy.sample_actions` / `sample_actions_guided` run it.
  from vla_jax.models import example_batch

  batch = example_batch(cfg, 1, seed=0)
  params = policy.params
  readouts = jax.jit(p.embed)(params, batch["observation"], batch["task"])
  noise = p.make_noise(jax.random.key(1), 1)
  heads = {"plain": jax.jit(p.sample_from_readouts)}
  for mode in modes:
    def guided(params, readouts, noise, prefix, weights, mode=mode):
      predict = lambda x, t, *given: p.head_predict(params, readouts, x, t, *given)  # noqa: E731
      return realtime.guided_sample(cfg, predict, noise["initial"], prefix, weights, mode=mode)
    heads[mode] = jax.jit(guided)
  head_args = {"plain": (params, readouts, noise),
               **{m: (params, readouts, noise, jnp.asarray(prefix), jnp.asarray(weights)) for m in modes}}

  # Whole policy call: a JaxPolicy session at batch 1, observations from the simulator.
  from vla_jax.envs import VectorTabletopEnv

  venv = VectorTabletopEnv(1, task_family="push", split="train", image_size=int(cfg.image_size_px))
  obs, infos = venv.reset([0])
  session = policy.new_session()
  session.reset([infos[0]["instruction"]])
  kwargs = {"plain": {}, **{m: dict(guidance=m, prefix=prefix, weights=weights) for m in modes}}

  def whole(mode):
    return session(obs, **kwargs[mode])

  times: dict[str, dict[str, list[float]]] = {k: {"head_ms": [], "call_ms": []} for k in heads}
  for _ in range(3):  # Warm-up: compile everything.
    for mode in heads:
      jax.block_until_ready(heads[mode](*head_args[mode]))
      whole(mode)
  for _ in range(calls):
    for mode in heads:
      start = time.perf_counter()
      jax.block_until_ready(heads[mode](*head_args[mode]))
      times[mode]["head_ms"].append((time.perf_counter() - start) * 1e3)
      start = time.perf_counter()
      whole(mode)
      times[mode]["call_ms"].append((time.perf_counter() - start) * 1e3)
  return {mode: {k: float(np.median(v)) for k, v in t.items()} for mode, t in times.items()}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for strategy in dict.fromkeys(r["strategy"] for r in rows):
    mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["delay"])
    d = [r["delay"] for r in mine]
    axes[0].errorbar(d, [100 * r["success"] for r in mine], marker="o", capsize=2, label=strategy,
                     yerr=np.array([[100 * (r["success"] - r["ci95"][0]), 100 * (r["ci95"][1] - r["success"])]
                                    for r in mine]).T)
    axes[1].plot(d, [r["boundary_jump"] for r in mine], marker="o", label=strategy)
  axes[0].set(xlabel="inference delay d (control steps)", ylabel="success % (mean over families)",
              title="success")
  axes[1].set(xlabel="inference delay d (control steps)", ylabel="mean ‖a_t − a_{t−1}‖ at chunk switches",
              title="boundary jump")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown(payload: dict[str, Any]) -> str:
  rows = payload["rows"]
  families = list(rows[0]["per_family"])
  lines = [f"# Real-time chunking: strategies under inference delay\n",
           f"`{payload['command']}`\n",
           f"Checkpoint `{payload['checkpoint']}` (H = {payload['action_horizon']}, s = {payload['execute_steps']} "
           f"executed per inference, simulator control rate {payload.get('control_rate', 1)}, RTC guidance "
           f"clip β = {payload.get('rtc_max_guidance', 5):g}); "
           f"{payload['episodes_per_family']} episodes per family and condition "
           f"({len(families)} families, same scenes and noise for every row); success % with the 95 % "
           "Wilson interval of the pooled episodes. Jumps: ‖a_t − a_{t−1}‖ of env-unit actions at chunk "
           "switches (boundary) and at other steps (interior). Steps to success include waits.\n",
           "| strategy | d | success % [95 % CI] | " + " | ".join(families)
           + " | boundary jump mean / max | interior mean / max | steps to success | waits / episode | sample ms |",
           "|---|---|---|" + "---|" * len(families) + "---|---|---|---|---|"]
  f = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
  for r in rows:
    fam = [f"{100 * r['per_family'][x]['success']:.0f}" for x in families]
    lines.append(f"| {r['strategy']} | {r['delay']} | {100 * r['success']:.1f} [{100 * r['ci95'][0]:.0f}, "
                 f"{100 * r['ci95'][1]:.0f}] | " + " | ".join(fam)
                 + f" | {f(r['boundary_jump'])} / {f(r['boundary_jump_max'])} | {f(r['interior_jump'])} / "
                 f"{f(r['interior_jump_max'])} | {f(r['steps_to_success'], 1)} | {f(r['waits_per_episode'], 1)} | "
                 f"{f(r['sample_ms'], 1)} |")
  lat = payload["latency_ms"]
  lines.append("\nBatch-1 latency on this CPU (median ms; head = readouts → chunk, call = the whole policy):\n")
  lines.append("| sampler | head ms | call ms | head × plain | call × plain |\n|---|---|---|---|---|")
  for mode, t in lat.items():
    lines.append(f"| {mode} | {t['head_ms']:.2f} | {t['call_ms']:.2f} | {t['head_ms'] / lat['plain']['head_ms']:.2f} "
                 f"| {t['call_ms'] / lat['plain']['call_ms']:.2f} |")
  lines.append("")
  for line in payload.get("targets", []):
    lines.append(f"- {line}")
  return "\n".join(lines) + "\n"


def targets(rows: list[dict[str, Any]], latency: dict[str, dict[str, float]]) -> list[str]:
  by = {(r["strategy"], r["delay"]): r for r in rows}
  out = []
  for mode, name in (("rtc", "RTC"), ("conditioned", "Conditioned (trained-in RTC)")):
    if ("sync", 0) in by and (mode, 4) in by:
      gap = round(100 * (by[("sync", 0)]["success"] - by[(mode, 4)]["success"]), 1) + 0.0  # Never "-0.0".
      out.append(f"{name} success at d = 4 is {gap:+.1f} points below sync at d = 0 (target ≤ 3): "
                 f"{'met' if gap <= 3 else 'NOT met'}")
    if ("naive_async", 4) in by and (mode, 4) in by and by[("naive_async", 4)]["boundary_jump"]:
      ratio = by[(mode, 4)]["boundary_jump"] / by[("naive_async", 4)]["boundary_jump"]
      out.append(f"{name} boundary jump at d = 4 is {ratio:.2f}× naive async's (target ≤ 0.5): "
                 f"{'met' if ratio <= 0.5 else 'NOT met'}")
    if mode in latency:
      ratio = latency[mode]["head_ms"] / latency["plain"]["head_ms"]
      call = latency[mode]["call_ms"] / latency["plain"]["call_ms"]
      out.append(f"{name} sampling latency {ratio:.2f}× plain (head only; whole call {call:.2f}×) (target ≤ 1.6): "
                 f"{'met' if ratio <= 1.6 else 'NOT met'}")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/tabletop_h16", help="Run directory: its latest checkpoint.")
  parser.add_argument("--checkpoint", default=None, help="A checkpoint directory (overrides --workdir).")
  parser.add_argument("--episodes_per_family", type=int, default=100)
  parser.add_argument("--delays", default="0,1,2,4,6")
  parser.add_argument("--strategies", default=None,
                      help="Comma-separated; default every strategy the checkpoint supports.")
  parser.add_argument("--execute_steps", type=int, default=4,
                      help="s: actions executed per inference (sync), env steps between requests (the others; "
                           "at d > s a request waits for the previous chunk: s = max(d, s)).")
  parser.add_argument("--num_envs", type=int, default=50)
  parser.add_argument("--latency_calls", type=int, default=50)
  parser.add_argument("--max_guidance", type=float, default=None,
                      help="RTC's guidance clip β for this run (default: the checkpoint's head.rtc_max_guidance).")
  parser.add_argument("--name", default=NAME, help="Results file stem under benchmarks/results/.")
  args = parser.parse_args()

  from vla_jax.inference import jax_policy
  from vla_jax.models.heads import common as realtime_common
  from vla_jax.models.heads import realtime
  from vla_jax.training.checkpoint import checkpoint_steps

  checkpoint = Path(args.checkpoint) if args.checkpoint else checkpoint_steps(args.workdir)[-1]
  config = ev.eval_config(episodes_per_family=args.episodes_per_family)
  policy = jax_policy.load(checkpoint, seed=config.seed)
  head = policy.bundle.model_config.head
  if args.max_guidance is not None:  # Before any sampler is traced: they read it from the config.
    with head.unlocked():
      head.rtc_max_guidance = args.max_guidance
  max_guidance = float(head.get("rtc_max_guidance", realtime.DEFAULT_MAX_GUIDANCE))
  conditioned = realtime_common.prefix_max_delay(policy.bundle.model_config) > 0
  default = [s for s in execution.STRATEGIES if conditioned or s != "conditioned"]
  strategies = [execution.check_strategy(s) for s in args.strategies.split(",")] if args.strategies else default
  delays = [int(d) for d in args.delays.split(",")]
  print(f"{checkpoint}: H = {policy.action_horizon}, s = {args.execute_steps}; "
        f"{args.episodes_per_family} episodes per family; delays {delays}; strategies {strategies}; "
        f"RTC β = {max_guidance:g}")
  modes = [m for m in strategies if m in execution.GUIDED]
  latency = sampler_latency(policy, args.latency_calls, modes)
  print("batch-1 latency (median ms):", {m: {k: round(v, 2) for k, v in t.items()} for m, t in latency.items()})
  rows = []
  start = time.perf_counter()
  for delay in delays:
    for strategy in strategies:
      t0 = time.perf_counter()
      row = run_condition(policy, strategy, delay, args, config)
      row["sample_ms"] = latency[strategy if strategy in execution.GUIDED else "plain"]["head_ms"]
      row["call_ms"] = latency[strategy if strategy in execution.GUIDED else "plain"]["call_ms"]
      row["seconds"] = time.perf_counter() - t0
      rows.append(row)
      print(f"  {strategy:12s} d={delay}: success {100 * row['success']:.1f} %, boundary jump "
            f"{row['boundary_jump'] or 0:.3f} (interior {row['interior_jump'] or 0:.3f}), "
            f"{row['seconds']:.0f} s", flush=True)
  rows.sort(key=lambda r: (r["delay"], strategies.index(r["strategy"])))
  payload = {
      "machine": common.machine_info(),
      "load_average": os.getloadavg(),
      "command": "python benchmarks/realtime_chunking.py " + " ".join(sys.argv[1:]),
      "checkpoint": str(checkpoint),
      "action_horizon": policy.action_horizon,
      "execute_steps": args.execute_steps,
      "control_rate": ev.sim_kwargs(config, policy)["control_rate"],
      "rtc_max_guidance": max_guidance,
      "episodes_per_family": args.episodes_per_family,
      "families": list(config.families),
      "condition": "seen",
      "latency_ms": latency,
      "targets": targets(rows, latency),
      "seconds": time.perf_counter() - start,
      "rows": rows,
  }
  common.print_table([r | {"ci95": f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"} for r in rows], COLUMNS)
  for line in payload["targets"]:
    print(line)
  path = common.write_results(args.name, payload)
  (path.with_suffix(".md")).write_text(markdown(payload))
  plot(rows, path.with_suffix(".png"))
  print(f"wrote {path}, {path.with_suffix('.md')}, {path.with_suffix('.png')}")


if __name__ == "__main__":
  main()
