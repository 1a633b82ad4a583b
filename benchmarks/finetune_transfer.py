"""What pretraining buys: push success from N demos, fine-tuned from a place + pick policy vs from scratch.

  python benchmarks/finetune_transfer.py                      # the table (resumes finished runs)
  python benchmarks/finetune_transfer.py --demos 100 --seeds 0  # one cell

Stages (each an ordinary `experiments.train` run, see experiments/configs/tabletop_transfer.py):
  1. data: place + pick episodes, and 1 000 push demos (`experiments.generate_data`, if missing);
  2. pretrain `small` on place + pick (runs/transfer/pretrain);
  3. for every N in --demos and seed in --seeds: push from the first N demos, from scratch and
     fine-tuned from stage 2 (`--config.init_from`), the same steps, learning-rate schedule and batch;
  4. each run's closed-loop push success at its last step (50 episodes, Wilson 95 % interval),
     read from <run>/eval/step_<n>/summary.json.
Prints the table and writes benchmarks/results/<name>.json. Finished runs are reused, so the
script can be stopped and restarted; delete runs/transfer to start over.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_info, print_table, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = "experiments/configs/tabletop_transfer.py"


def run(cmd: list[str], log: Path) -> float:
  """Runs a command with its output appended to `log`; returns its wall time in seconds."""
  start = time.perf_counter()
  with log.open("a") as f:
    f.write(f"$ {' '.join(cmd)}\n")
    f.flush()
    result = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if result.returncode:
    raise SystemExit(f"error: {' '.join(cmd)} failed (exit {result.returncode}); see {log}")
  return time.perf_counter() - start


def final_eval(workdir: Path) -> dict[str, Any] | None:
  """The run's last closed-loop summary (None if the run has not finished)."""
  config = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").exists() else None
  if config is None:
    return None
  path = workdir / "eval" / f"step_{config['train']['num_steps']}" / "summary.json"
  return json.loads(path.read_text()) if path.exists() else None


def train(workdir: Path, arg: str, log: Path, *extra: str) -> float:
  if final_eval(workdir) is not None:
    return 0.0
  return run([sys.executable, "-m", "experiments.train", "--config", f"{CONFIG}:{arg}", "--workdir", str(workdir),
              *extra], log)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--demos", default="100,300,1000", help="comma-separated push demo counts")
  parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
  parser.add_argument("--runs", default="runs/transfer", help="where the runs go")
  parser.add_argument("--name", default="finetune_transfer", help="results file name")
  args = parser.parse_args()
  runs = REPO / args.runs
  runs.mkdir(parents=True, exist_ok=True)
  log = runs / "benchmark.log"
  demos = [int(n) for n in args.demos.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]

  for variant, name in (("place_pick", "tabletop_place_pick"), ("push", "tabletop_push")):
    if not (REPO / "data" / name / "1.0.0" / "dataset_info.json").exists():
      run([sys.executable, "-m", "experiments.generate_data", "--config",
           f"experiments/configs/tabletop_data.py:{variant}"], log)
  wall = {"pretrain": train(runs / "pretrain", "pretrain", log)}
  pretrain = final_eval(runs / "pretrain")

  rows = []
  for seed in seeds:  # Seed-major: a stopped run leaves whole seeds, not half a table.
    for n in demos:
      for init in ("scratch", "finetune"):
        workdir = runs / f"push{n}_{init}_s{seed}"
        extra = [f"--config.seed={seed}"]
        if init == "finetune":
          extra.append(f"--config.init_from={runs / 'pretrain'}")
        wall[workdir.name] = train(workdir, f"push,{n}", log, *extra)
        push = final_eval(workdir)["conditions"]["seen"]["families"]["push"]
        rows.append({"demos": n, "init": init, "seed": seed, "push_success": push["success_rate"],
                     "ci95": [push["ci95_low"], push["ci95_high"]], "episodes": push["episodes"]})
        print(f"push {n} demos, {init}, seed {seed}: {push['success_rate']:.0%}", flush=True)

  table = []
  for n in demos:
    for init in ("scratch", "finetune"):
      cell = [r for r in rows if r["demos"] == n and r["init"] == init]
      rates = [r["push_success"] for r in cell]
      table.append({"push demos": n, "start": init, "seeds": len(cell),
                    "success per seed": " / ".join(f"{r:.0%}" for r in rates),
                    "mean": f"{sum(rates) / len(rates):.0%}"})
  print()
  print_table(table, ["push demos", "start", "seeds", "success per seed", "mean"])
  from experiments.configs import tabletop_transfer

  payload = {
      "machine": machine_info(),
      "command": "python benchmarks/finetune_transfer.py " + " ".join(sys.argv[1:]),
      "recipe": {"model": "small (quickstart), diffusion head, MiniLM", "batch": 32,
                 "pretrain_steps": tabletop_transfer.PRETRAIN_STEPS, "push_steps": tabletop_transfer.FINETUNE_STEPS,
                 "eval": "50 push episodes per run, seen phrasings, EMA params at the last step"},
      "pretrain_success": {f: s["success_rate"] for f, s in pretrain["conditions"]["seen"]["families"].items()},
      "runs": rows, "table": table, "wall_s": {k: round(v, 1) for k, v in wall.items()},
  }
  print(f"wrote {write_results(args.name, payload)}")


if __name__ == "__main__":
  main()
