"""Edge latency of an exported policy: does it fit a robot's control loop before the trial?

  python benchmarks/edge.py --size small               # untrained `small` policy, exported to exports/edge_small
  python benchmarks/edge.py --export_dir exports/x     # an existing export (python -m experiments.export ...)

For each runtime — JAX jit (the reference), TF SavedModel, ONNX Runtime (policy.opt.onnx, the graph
rewritten for ORT by vla_jax/export/optimize.py, at intra-op threads 1 and all cores; the plain
policy.onnx with graph optimisation full vs off; the fp16 and int8 variants) — it measures batch-1
latency p50/p90/p99 of the whole exported policy (normalisation, backbone, every sampling step,
un-normalisation) and the achievable query rate (Hz, from p99), plus size on disk, params and peak
RSS. Each runtime runs in its own fresh process, so peak RSS is what that runtime alone needs
(ONNX Runtime rows never import JAX or TensorFlow). Because the machine may be shared, the headline
ratio to JAX comes from a second measurement inside one process that pairs each ONNX session with
JAX, calling them in turn (load then hits both alike). Writes benchmarks/results/edge.json, edge.md
(the table printed here) and edge.png. Target: ONNX Runtime ≤ 0.8× JAX jit
latency for the `small` policy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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

TARGET_RATIO = 0.8
COLUMNS = ("runtime", "file", "threads", "opt", "p50_ms", "p90_ms", "p99_ms", "rate_hz", "vs_jax", "size_mb",
           "peak_rss_mb")


# ---- Workers (one per process). -----------------------------------------------------------------


def _inputs(manifest: dict[str, Any], batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
  """Batch-1 inputs from the manifest alone (no JAX needed)."""
  rng = np.random.default_rng(seed)
  out = {}
  for spec in manifest["inputs"]:
    shape = [batch_size if d == "batch" else d for d in spec["shape"]]
    dtype = np.dtype(spec["dtype"])
    if dtype == np.uint8:
      out[spec["name"]] = rng.integers(0, 256, shape, dtype=np.uint8)
    elif dtype == np.int32:
      out[spec["name"]] = rng.integers(1, 200, shape).astype(np.int32)
    elif dtype == np.bool_:
      out[spec["name"]] = np.ones(shape, bool)
    else:
      out[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
  return out


def _time(fn, inputs, warmup: int, iters: int) -> list[float]:
  for _ in range(warmup):
    fn(inputs)
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    fn(inputs)
    times.append((time.perf_counter() - start) * 1e3)
  return times


def worker(job: dict[str, Any]) -> dict[str, Any]:
  export_dir = Path(job["export_dir"])
  manifest = json.loads((export_dir / "manifest.json").read_text())
  inputs = _inputs(manifest)
  runtime = job["runtime"]
  if runtime == "onnxruntime":
    from vla_jax.inference.onnx_runtime import ort_session  # JAX- and TF-free: the row's RSS is ORT's alone.

    session = ort_session(export_dir / job["file"], threads=int(job["threads"]), optimization=job["opt"])
    names = [i.name for i in session.get_inputs()]
    feeds = {n: inputs[n] for n in names}
    fn = lambda _: session.run(None, feeds)  # noqa: E731
  elif runtime == "tf_savedmodel":
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir / "savedmodel"))
    sig = loaded.signatures["serving_default"]
    feeds = {k: tf.constant(v) for k, v in inputs.items()}
    fn = lambda _: next(iter(sig(**feeds).values())).numpy()  # noqa: E731
  elif runtime == "jax_jit":
    import jax

    from vla_jax.inference.policy_fn import make_policy_fn

    bundle = _bundle_for(manifest)
    serve = jax.jit(make_policy_fn(bundle))
    params = jax.device_put(jax.tree.map(np.asarray, bundle.params))
    feeds = jax.device_put(inputs)
    fn = lambda _: serve(params, feeds).block_until_ready()  # noqa: E731
  else:
    raise ValueError(f"runtime {runtime!r} unknown")
  times = _time(fn, None, job["warmup"], job["iters"])
  p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
  return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(np.mean(times)),
          "rate_hz": 1e3 / p99, "peak_rss_mb": peak_rss_mb(), "iters": job["iters"]}


def peak_rss_mb() -> float:
  """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from the
  parent across fork+exec, so every worker would report the driver's peak."""
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved_worker(job: dict[str, Any]) -> dict[str, Any]:
  """JAX jit and ONNX Runtime in one process, called in turn, so that load from other processes
  hits both alike: the per-call latency ratio to JAX is robust on a busy machine.

  Each ONNX session is paired with JAX alone (JAX, session, JAX, session, ...) rather than all
  sessions in one cycle: with every model resident and called in turn, each call starts with
  caches the others just evicted (the models are ~11 MB each, the L3 is shared), which is not
  how a robot runs one policy. The pairs run in short blocks, sessions taking turns, so slow
  drifts in the machine's load spread over all of them.
  """
  import jax

  from vla_jax.inference.onnx_runtime import ort_session
  from vla_jax.inference.policy_fn import make_policy_fn

  export_dir = Path(job["export_dir"])
  manifest = json.loads((export_dir / "manifest.json").read_text())
  inputs = _inputs(manifest)
  bundle = _bundle_for(manifest)
  serve = jax.jit(make_policy_fn(bundle))
  params = jax.device_put(jax.tree.map(np.asarray, bundle.params))
  feeds_jax = jax.device_put(inputs)
  run_jax = lambda: serve(params, feeds_jax).block_until_ready()  # noqa: E731
  sessions = {}
  for file, threads in job["sessions"]:
    session = ort_session(export_dir / file, threads=threads, optimization="all")
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    sessions[f"onnxruntime {file} threads={threads or os.cpu_count()}"] = (lambda s=session, f=feeds: s.run(None, f))
  for fn in (run_jax, *sessions.values()):
    for _ in range(job["warmup"]):
      fn()
  jax_times: list[float] = []
  times: dict[str, list[float]] = {k: [] for k in sessions}
  ratios: dict[str, list[float]] = {k: [] for k in sessions}
  block = max(1, min(25, job["iters"] // 8))
  for _ in range(max(1, job["iters"] // block)):
    for name, fn in sessions.items():
      for _ in range(block):
        start = time.perf_counter()
        run_jax()
        middle = time.perf_counter()
        fn()
        end = time.perf_counter()
        jax_times.append((middle - start) * 1e3)
        times[name].append((end - middle) * 1e3)
        ratios[name].append((end - middle) / (middle - start))
  out = {"jax_jit": {"p50_ms": float(np.median(jax_times)), "median_ratio_to_jax": 1.0}}
  for name in sessions:
    out[name] = {"p50_ms": float(np.median(times[name])), "median_ratio_to_jax": float(np.median(ratios[name])),
                 "pairs": len(ratios[name])}
  return out


def _bundle_for(manifest: dict[str, Any]):
  """Rebuilds the exported policy's JAX side (params) from the source the manifest records."""
  import ml_collections

  from vla_jax.inference.bundle import load_checkpoint
  from vla_jax.inference.testing import random_bundle

  source = manifest["source"]
  if source["kind"] == "checkpoint":
    return load_checkpoint(source["path"], dataset=source.get("dataset"))
  config = ml_collections.ConfigDict(manifest["model"]["config"])
  return random_bundle(config, seed=source["seed"], normalization=manifest["normalization"]["method"])


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
  proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                        cwd=str(REPO))
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise RuntimeError(f"benchmark worker {job['runtime']} ({job.get('file')}) failed:\n{tail}")
  return json.loads(lines[-1])


# ---- Driver. ------------------------------------------------------------------------------------


def ensure_export(size: str, out: Path, overwrite: bool) -> Path:
  if (out / "manifest.json").is_file() and not overwrite:
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["source"].get("kind") == "random" and manifest["model"]["size"] == size:
      print(f"using existing export {out} (pass --reexport to rebuild it)")
      return out
  from vla_jax.export import export_config, export_policy
  from vla_jax.inference.testing import random_bundle
  from vla_jax.models import model_config

  export_policy(random_bundle(model_config(size)), out, export_config(), overwrite=True)
  return out


def plan(manifest: dict[str, Any], iters: int, warmup: int, cores: int, quick: bool) -> list[dict[str, Any]]:
  files = manifest["artifacts"]
  jobs = [dict(runtime="jax_jit", file="(params)", threads=cores, opt="xla")]
  if not quick:
    jobs.append(dict(runtime="tf_savedmodel", file="savedmodel/", threads=cores, opt="grappler"))
  onnx = files["onnx"]["path"]
  fast = files.get("onnx_optimized", files["onnx"])["path"]
  jobs += [dict(runtime="onnxruntime", file=fast, threads=1, opt="all"),
           dict(runtime="onnxruntime", file=fast, threads=0, opt="all")]
  if not quick:
    jobs += [dict(runtime="onnxruntime", file=onnx, threads=1, opt="all"),
             dict(runtime="onnxruntime", file=onnx, threads=0, opt="disable")]
    for key in ("onnx_fp16", "onnx_int8"):
      if key in files:
        jobs.append(dict(runtime="onnxruntime", file=files[key]["path"], threads=1, opt="all"))
  for job in jobs:
    job.update(iters=iters, warmup=warmup)
  return jobs


def size_mb(export_dir: Path, manifest: dict[str, Any], job: dict[str, Any]) -> float:
  if job["runtime"] == "jax_jit":
    return manifest["model"]["num_params"] * 4 / 2**20  # float32 params in memory.
  if job["runtime"] == "tf_savedmodel":
    return manifest["artifacts"]["savedmodel"]["bytes"] / 2**20
  return (export_dir / job["file"]).stat().st_size / 2**20


def markdown(rows: list[dict[str, Any]], header: str) -> str:
  fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
  lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = [f"{r['runtime']}\n{r['file']} t={r['threads']} {r['opt']}" for r in rows]
  p50 = np.array([r["p50_ms"] for r in rows])
  lo = np.zeros_like(p50)
  hi = np.array([r["p99_ms"] for r in rows]) - p50
  fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.5))
  y = np.arange(len(rows))[::-1]
  ax.barh(y, p50, xerr=[lo, hi], color=["#777" if r["runtime"] != "onnxruntime" else "#3a7" for r in rows],
          capsize=3)
  jax_p50 = next((r["p50_ms"] for r in rows if r["runtime"] == "jax_jit"), None)
  if jax_p50:
    ax.axvline(TARGET_RATIO * jax_p50, color="r", ls="--", lw=1, label=f"target {TARGET_RATIO}× JAX p50")
    ax.legend(loc="lower right")
  ax.set_yticks(y, labels, fontsize=7)
  ax.set_xlabel("batch-1 latency, ms (bar p50, whisker to p99)")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--export_dir", help="An export directory (from experiments.export).")
  parser.add_argument("--size", default="small", help="Without --export_dir: export an untrained policy of this size.")
  parser.add_argument("--reexport", action="store_true", help="With --size: rebuild exports/edge_<size>.")
  parser.add_argument("--iters", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--quick", action="store_true", help="Only JAX and ONNX Runtime fp32 (no TF, no variants).")
  parser.add_argument("--name", default="edge", help="Results name: benchmarks/results/<name>.{json,md,png}.")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    job = json.loads(args.worker)
    print(json.dumps(interleaved_worker(job) if job["runtime"] == "interleaved" else worker(job)))
    return

  export_dir = Path(args.export_dir) if args.export_dir else ensure_export(args.size, REPO / "exports" / f"edge_{args.size}",
                                                                           args.reexport)
  manifest = json.loads((export_dir / "manifest.json").read_text())
  cores = os.cpu_count() or 1
  load_before = os.getloadavg()
  rows = []
  for job in plan(manifest, args.iters, args.warmup, cores, args.quick):
    print(f"timing {job['runtime']} {job['file']} threads={job['threads'] or cores} opt={job['opt']} ...", flush=True)
    result = run_worker({**job, "export_dir": str(export_dir)})
    rows.append({**job, "threads": job["threads"] or cores, **result,
                 "size_mb": size_mb(export_dir, manifest, job)})
  jax_p50 = next(r["p50_ms"] for r in rows if r["runtime"] == "jax_jit")
  for r in rows:
    r["vs_jax"] = r["p50_ms"] / jax_p50
  files = manifest["artifacts"]
  fast = files.get("onnx_optimized", files["onnx"])["path"]
  print("timing JAX jit and ONNX Runtime interleaved (same load for all) ...", flush=True)
  interleaved = run_worker({"runtime": "interleaved", "export_dir": str(export_dir), "iters": args.iters,
                            "warmup": args.warmup,
                            "sessions": [(fast, 1), (fast, 0), (files["onnx"]["path"], 1)]})
  load_after = os.getloadavg()
  best_name, best = min(((k, v) for k, v in interleaved.items() if k != "jax_jit"),
                        key=lambda kv: kv[1]["median_ratio_to_jax"])
  model = manifest["model"]
  header = (f"Edge latency, batch 1: `{model['size']}` {model['head']} policy, {model['num_params']:,} params, "
            f"{model['steps_inside_graph']} sampling steps in the graph; {cores} CPU cores; load average "
            f"{load_before[0]:.1f} before / {load_after[0]:.1f} after (shared machine; each row its own process, "
            f"run one after another). rate_hz = 1000 / p99.\n\nInterleaved in one process, each ONNX session in "
            f"turn with JAX, {args.iters} pairs each (robust to load): "
            + "; ".join(f"{k} {v['p50_ms']:.1f} ms ({v['median_ratio_to_jax']:.2f}× JAX)" for k, v in interleaved.items())
            + f". Best: {best_name} at {best['median_ratio_to_jax']:.2f}× JAX jit (target ≤ {TARGET_RATIO}×).")
  common.print_table(rows, COLUMNS)
  print(header)
  payload = {"machine": common.machine_info(("numpy", "jax", "jaxlib", "tensorflow-cpu", "onnxruntime", "onnx",
                                             "tf2onnx")),
             "export_dir": str(export_dir), "model": {k: v for k, v in model.items() if k != "config"},
             "source": manifest["source"], "load_average": {"before": load_before, "after": load_after},
             "rows": rows, "interleaved": interleaved, "best_onnx": best_name,
             "best_onnx_vs_jax": best["median_ratio_to_jax"], "target_ratio": TARGET_RATIO,
             "meets_target": best["median_ratio_to_jax"] <= TARGET_RATIO,
             "command": "python benchmarks/edge.py " + " ".join(sys.argv[1:])}
  path = common.write_results(args.name, payload)
  md = path.with_suffix(".md")
  md.write_text(markdown(rows, header))
  plot(rows, path.with_suffix(".png"), f"{model['size']} policy, batch 1, {cores} cores")
  print(f"wrote {path}, {md}, {path.with_suffix('.png')}")


if __name__ == "__main__":
  main()
