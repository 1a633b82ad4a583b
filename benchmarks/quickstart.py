"""Wall time and closed-loop success of `make quickstart`, the numbers issues 6 and 17 set targets on.

  python benchmarks/quickstart.py --fresh          # deletes data/tabletop and the run dir first
  python benchmarks/quickstart.py --run_dir runs/tabletop_seed1 --train_flags=--config.seed=1 \
      --name quickstart_seed1                      # data kept: another training seed

Runs `make quickstart` itself (the same three commands a user runs, nothing re-implemented here)
and times each of its phases from the moment make echoes the phase's command: setup (venv, only
on a fresh clone), generate_data, train, evaluate. Then reads the evaluation's summary.json and
writes benchmarks/results/<name>.json and .md: phase times, this machine's f32 matmul peak, the
results table, and whether the targets hold (total <= 15 min; seen >= 95 %; held-out phrasings and the harder
paraphrases >= 90 %; held-out colour-shape combos >= 85 %; language-blind <= 10 %). The full
output of make goes to the terminal and to <run_dir>/quickstart.log.

This machine's speed varies from day to day (up to ~1.8x on the same train step), so the JSON
records the train step rate and the CPU next to the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data" / "tabletop"
TARGET_MINUTES = 15.0  # On the machine it runs on; its matmul peak is recorded beside it.
# Issue 17's targets for the quickstart with the frozen MiniLM encoder (conditions: evaluate.CONDITIONS).
TARGET_MIN_SUCCESS = {"seen": 0.95, "heldout_phrasing": 0.90, "heldout_paraphrase": 0.90, "heldout_combo": 0.85}
TARGET_MAX_BLIND = 0.10
PHASE_RE = re.compile(rb"-m experiments\.(\w+)")
ARTIFACTS_RE = re.compile(rb"artifacts: (\S+summary\.json)")


def run_make(run_dir: str, train_flags: str, log_path: Path) -> tuple[list[tuple[str, float]], float, bytes]:
  """Runs make quickstart, teeing output; returns ([(phase, seconds)], total seconds, output)."""
  cmd = ["make", "quickstart", f"QUICKSTART_RUN={run_dir}", f"TRAIN_FLAGS={train_flags}"]
  print("$ " + " ".join(cmd), flush=True)
  start = time.perf_counter()
  marks = [("setup", start)]
  output = bytearray()
  line = bytearray()
  with open(log_path, "wb") as log, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT) as proc:
    while chunk := os.read(proc.stdout.fileno(), 65536):
      now = time.perf_counter()
      sys.stdout.buffer.write(chunk)
      sys.stdout.flush()
      log.write(chunk)
      output += chunk
      line += chunk
      *done, rest = bytes(line).split(b"\n")
      line = bytearray(rest)
      for text in done:
        match = PHASE_RE.search(text)
        if match and text.lstrip().startswith((b".venv", b"python", b"/")):  # make's own echo.
          marks.append((match.group(1).decode(), now))
    code = proc.wait()
  end = time.perf_counter()
  if code:
    raise SystemExit(f"make quickstart failed with exit code {code}; see {log_path}")
  phases = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - t) for i, (name, t) in enumerate(marks)]
  return phases, end - start, bytes(output)


def train_rate(run_dir: Path) -> float | None:
  """Median train/steps_per_s of the run's metrics log (None if it has none)."""
  path = run_dir / "metrics.jsonl"
  if not path.exists():
    return None
  rates = sorted(r["train/steps_per_s"] for r in map(json.loads, path.read_text().splitlines())
                 if "train/steps_per_s" in r)
  return rates[len(rates) // 2] if rates else None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run_dir", default="runs/tabletop", help="QUICKSTART_RUN, relative to the repo")
  parser.add_argument("--train_flags", default="", help="TRAIN_FLAGS: config overrides for training")
  parser.add_argument("--fresh", action="store_true",
                      help="delete data/tabletop and run_dir first: the fresh-clone measurement")
  parser.add_argument("--name", default="quickstart", help="results file name under benchmarks/results/")
  args = parser.parse_args()

  run_dir = ROOT / args.run_dir
  if args.fresh:
    for path in (DATA_DIR, run_dir):
      if path.exists():
        print(f"--fresh: deleting {path}", flush=True)
        shutil.rmtree(path)
  elif (run_dir / "checkpoints").exists():
    raise SystemExit(f"{run_dir} already has checkpoints: make would resume, not measure a run. "
                     f"Pass --fresh or a new --run_dir.")
  run_dir.mkdir(parents=True, exist_ok=True)
  phases, total, output = run_make(args.run_dir, args.train_flags, run_dir / "quickstart.log")

  found = ARTIFACTS_RE.findall(output)
  if not found:
    raise SystemExit(f"the evaluation printed no summary.json path; see {run_dir / 'quickstart.log'}")
  summary_path = ROOT / found[-1].decode()
  conditions = json.loads(summary_path.read_text())["conditions"]
  seen = conditions["seen"]["overall"]
  blind = conditions.get("language_blind", {}).get("overall")

  rows = [{"phase": name, "minutes": round(s / 60, 2)} for name, s in phases]
  rows.append({"phase": "total", "minutes": round(total / 60, 2)})
  print()
  common.print_table(rows, ["phase", "minutes"])
  # The results table itself is the one experiments.evaluate printed above (and wrote as results.md).
  targets = {f"total_minutes<={TARGET_MINUTES:g}": total / 60 <= TARGET_MINUTES}
  for condition, floor in TARGET_MIN_SUCCESS.items():
    rate = conditions.get(condition, {}).get("overall", {}).get("success_rate")
    targets[f"{condition}>={floor:.2f}"] = rate is not None and rate >= floor
  targets[f"language_blind<={TARGET_MAX_BLIND:.2f}"] = blind is not None and blind["success_rate"] <= TARGET_MAX_BLIND
  # "Clearly lower": the blind rate's interval lies wholly below the seen rate's.
  targets["language_blind_clearly_lower"] = blind is not None and blind["ci95_high"] < seen["ci95_low"]
  print("\ntargets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()))

  payload = {
      "machine": common.machine_info(), "command": " ".join(sys.argv), "train_flags": args.train_flags, "fresh": args.fresh,
      "run_dir": args.run_dir, "phases_s": {name: round(s, 1) for name, s in phases}, "total_s": round(total, 1),
      "train_steps_per_s_median": train_rate(run_dir), "summary": os.path.relpath(summary_path, ROOT),
      "success": {c: {"overall": v["overall"], "families": v["families"]} for c, v in conditions.items()},
      "targets": targets,
  }
  path = common.write_results(args.name, payload)
  md = path.with_suffix(".md")
  rate = payload["train_steps_per_s_median"]
  tmp = md.with_suffix(".md.tmp")
  peak = payload["machine"].get("matmul_peak_gflop_s")
  tmp.write_text(f"# `make quickstart` ({payload['machine']['date']}, {payload['machine']['cpu']}, "
                f"f32 matmul peak {'-' if peak is None else f'{peak:.0f}'} GFLOP/s)\n\n"
                + "\n".join(f"- {r['phase']}: {r['minutes']} min" for r in rows)
                + f"\n- train steps/s (median): {'-' if rate is None else f'{rate:.2f}'}\n\n"
                + summary_path.with_name("results.md").read_text()
                + "\ntargets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in targets.items()) + "\n")
  tmp.replace(md)
  print(f"wrote {path} and {md}")


if __name__ == "__main__":
  main()
