"""Input pipeline throughput and memory for the default config (batch 64, 64x64, window 2, horizon 4).

  .venv/bin/python benchmarks/input_pipeline.py [--builder-dir DIR] [--variants cached,streaming,restore]

Dataset, first match wins: --builder-dir; `data/tabletop/1.0.0` (made by `make quickstart`); the
built-in tabletop dataset generated once with its default config into /tmp/vla_jax_bench_data
(needs `vla_jax.data.tabletop_builder`); a synthetic stand-in of the same layout (textured 64x64
PNG frames, episodes of 15-100 steps).

Each variant runs in its own subprocess so its peak memory (max RSS) is its own:
  cached     the default: decoded trajectories kept in memory. Reports the first epoch (decoding
             every frame once while filling the cache) and later epochs (from memory) separately.
  streaming  config.cache=False: every epoch re-reads and re-decodes (for datasets too big for RAM).
  restore    time to resume at batch 20 000 (the cost of the exact-resume design) and first batch.
  cached_1thread  the default with a single tf.data thread (when the trainer needs both cores).
"Cores used" is process CPU time / wall time: the share of the 2 cores the trainer loses.
Writes benchmarks/results/input_pipeline.json with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DATA = "/tmp/vla_jax_bench_data"
RESULTS = os.path.join(ROOT, "benchmarks", "results", "input_pipeline.json")


def find_dataset(builder_dir: str | None) -> tuple[str, str]:
  """(builder dir, description) of the dataset to benchmark; generates one if needed."""
  if builder_dir:
    return builder_dir, "given"
  default = os.path.join(ROOT, "data", "tabletop", "1.0.0")
  if os.path.isfile(os.path.join(default, "dataset_info.json")):
    return default, "tabletop (data/tabletop/1.0.0)"
  generated = os.path.join(BENCH_DATA, "tabletop", "1.0.0")
  if os.path.isfile(os.path.join(generated, "dataset_info.json")):
    return generated, "tabletop default config, generated into /tmp"
  try:
    from experiments.configs import tabletop_data
    from vla_jax.data import tabletop_builder
  except ImportError:
    tabletop_builder = None
  if tabletop_builder is not None:
    config = tabletop_data.get_config("default")
    config.data_dir = BENCH_DATA
    print(f"generating the tabletop dataset (default config) into {BENCH_DATA} once ...", flush=True)
    return str(tabletop_builder.write_dataset(config, progress=False)), "tabletop default config, generated into /tmp"
  import numpy as np
  from vla_jax.data import testing
  rng = np.random.default_rng(0)
  lengths = {"train": rng.integers(15, 101, 600).tolist(), "val": rng.integers(15, 101, 60).tolist()}
  path = testing.write_synthetic_rlds(os.path.join(BENCH_DATA, "synthetic"), name="tabletop_standin",
                                      episode_lengths=lengths, textured=True)
  return path, "synthetic stand-in (tabletop layout, textured PNG)"


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def worker(variant: str, builder_dir: str, batches: int, threads: int) -> dict:
  import tensorflow  # noqa: F401  (measured separately: the import alone is most of the memory)
  import tensorflow_datasets  # noqa: F401
  from vla_jax.data import pipeline, spec as spec_lib

  baseline_rss_mb = _rss_mb()
  if variant.endswith("_1thread"):
    threads = 1

  config = pipeline.pipeline_config([spec_lib.tabletop_spec(builder_dir=builder_dir)],
                                    statistics_dir=os.path.join(BENCH_DATA, "statistics"),
                                    num_threads=threads, num_parallel_calls=threads)
  config.cache = variant != "streaming"
  result: dict = {"variant": variant, "num_threads": threads, "rss_after_tf_import_mb": baseline_rss_mb}
  cpu0, wall0 = time.process_time(), time.perf_counter()
  if variant == "restore":
    it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    next(it)
    state = it.state()
    state["batches"], state["samples_per_dataset"] = 20_000, [20_000 * config.batch_size]
    del it
    start = time.perf_counter()
    it = pipeline.make_train_iterator(config, state=state, process_index=0, process_count=1)
    next(it)
    result["restore_at_batch"] = 20_000
    result["restore_to_first_batch_s"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result

  start = time.perf_counter()
  it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
  batch = next(it)
  result["startup_to_first_batch_s"] = time.perf_counter() - start
  samples_per_epoch = it.statistics["tabletop"]["num_transitions"]
  result["samples_per_epoch"] = samples_per_epoch
  result["shapes"] = {k: list(v.shape) for k, v in
                      [("image_primary", batch["observation"]["image_primary"]),
                       ("proprio", batch["observation"]["proprio"]), ("action", batch["action"]),
                       ("language_tokens", batch["task"]["language_tokens"])]}

  def measure(n: int) -> dict:
    cpu, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
      next(it)
    wall = time.perf_counter() - t0
    return {"batches": n, "samples_per_s": n * config.batch_size / wall,
            "cores_used": (time.process_time() - cpu) / wall}

  result["first_epoch"] = measure(min(batches, samples_per_epoch // config.batch_size - 2))
  if variant.startswith("cached"):
    done = 1 + result["first_epoch"]["batches"]
    for _ in range(max(0, -(-samples_per_epoch // config.batch_size) - done + 1)):
      next(it)  # Finish epoch 0 so that the cache is complete.
    result["later_epochs"] = measure(batches)
  result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  result["total_cpu_s"], result["total_wall_s"] = time.process_time() - cpu0, time.perf_counter() - wall0
  return result


def machine() -> dict:
  import jax
  import numpy as np
  import tensorflow as tf
  import tensorflow_datasets as tfds
  cpu = "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  with open("/proc/meminfo") as f:
    mem_gb = int(f.readline().split()[1]) / 2**20
  return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "platform": platform.platform(),
          "python": platform.python_version(), "tensorflow": tf.__version__, "tensorflow_datasets": tfds.__version__,
          "jax": jax.__version__, "numpy": np.__version__}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--builder-dir", default=None)
  parser.add_argument("--variants", default="cached,cached_1thread,streaming,restore")
  parser.add_argument("--batches", type=int, default=150, help="Batches per measurement.")
  parser.add_argument("--threads", type=int, default=2, help="tf.data threads (config.num_threads).")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--json", default=RESULTS)
  args = parser.parse_args()

  if args.worker:
    print(json.dumps(worker(args.worker, args.builder_dir, args.batches, args.threads)))
    return

  builder_dir, description = find_dataset(args.builder_dir)
  results = []
  for variant in args.variants.split(","):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--builder-dir", builder_dir,
           "--batches", str(args.batches), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
      sys.exit(f"variant {variant} failed:\n{out.stderr[-3000:]}")
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))

  print(f"\ndataset: {builder_dir} ({description}); batch 64, 64x64, window 2, horizon 4, "
        f"{args.threads} tf.data threads")
  print(f"{'variant':<15} {'phase':<13} {'samples/s':>10} {'cores used':>10} {'peak RSS MB':>12} "
        f"{'(TF import)':>11} {'startup s':>10}")
  for r in results:
    if r["variant"] == "restore":
      print(f"{'restore':<15} {'at batch 20k':<13} {'':>10} {'':>10} {r['peak_rss_mb']:>12.0f} "
            f"{r['rss_after_tf_import_mb']:>11.0f} {r['restore_to_first_batch_s']:>10.1f}")
      continue
    for phase in ("first_epoch", "later_epochs"):
      if phase in r:
        p = r[phase]
        print(f"{r['variant']:<15} {phase:<13} {p['samples_per_s']:>10.0f} {p['cores_used']:>10.2f} "
              f"{r['peak_rss_mb']:>12.0f} {r['rss_after_tf_import_mb']:>11.0f} {r['startup_to_first_batch_s']:>10.1f}")
  report = {"benchmark": "input_pipeline", "config": {"batch_size": 64, "image_size_px": [64, 64], "window": 2,
                                                      "action_horizon": 4, "num_threads": args.threads},
            "dataset": {"builder_dir": builder_dir, "description": description},
            "results": results, "machine": machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "note": "2 shared cores: other jobs ran concurrently; compare variants within one run."}
  os.makedirs(os.path.dirname(args.json), exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
