"""Model size and CPU latency: param counts per size, batch-1 `sample_actions` latency for `small`
split into backbone and head, train-step time, compile times — plus a model shaped like Octo's
vit_t, measured the same way with our code (a size reference, not Octo's own implementation).

    .venv/bin/python benchmarks/model_latency.py [--calls 100]

Prints a table and writes benchmarks/results/model_latency.json (with machine and versions).
Latencies are medians over `--calls` jitted calls after warm-up. The machine is shared, so compare
ratios within one run; the load average is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vla_jax.models import Policy, count_params, example_batch, model_config  # noqa: E402
from vla_jax.models.config import HEAD_KINDS, SIZES  # noqa: E402
from experiments.configs import tabletop  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "model_latency.json"


def octo_vit_t_like():
  """A model shaped like Octo's vit_t, measured here with our code: 12 × 192 ViT, a 4-conv stride-16
  stem (16 tokens per 64×64 frame), window 2, no language, diffusion head with 20 steps, horizon 4."""
  config = model_config("small", "diffusion", language="none")
  config.transformer.update(width=192, depth=12, num_heads=3, mlp_dim=768)
  config.image.update(stem_features=(32, 96, 192, 384), patch_size=1)
  config.head.diffusion.num_sample_steps = 20
  config.head.diffusion.num_noise_samples = 1
  return config


MIN_MS = {}  # Fastest call per measurement: on a shared machine, the least-disturbed estimate.


def median_ms(fn, *args, calls: int, warmup: int = 5, name: str | None = None) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  if name:
    MIN_MS[name] = float(np.min(times) * 1e3)
  return float(np.median(times) * 1e3)


def compile_seconds(jitted, *args) -> tuple[float, object]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return time.perf_counter() - start, compiled


def measure_latency(config, calls: int) -> dict:
  """Batch-1 sample_actions, backbone alone, head alone (all steps) and one head-network call."""
  policy = Policy(config)
  batch = jax.device_put(example_batch(config, 1, seed=0))
  obs, task = batch["observation"], batch["task"]
  params = jax.jit(policy.init)(jax.random.key(0), batch)
  rng = jax.random.key(1)
  sample_compile_s, sample = compile_seconds(jax.jit(policy.sample_actions), params, obs, task, rng)
  embed = jax.jit(policy.embed)
  readouts = embed(params, obs, task)
  noise = policy.make_noise(rng, 1)
  head = jax.jit(policy.sample_from_readouts)
  out = {
      "params": count_params(params),
      "params_backbone": count_params(params["backbone"]),
      "params_head": count_params(params["head"]),
      "sample_actions_ms": median_ms(sample, params, obs, task, rng, calls=calls, name="sample"),
      "backbone_ms": median_ms(embed, params, obs, task, calls=calls, name="backbone"),
      "head_all_steps_ms": median_ms(head, params, readouts, noise, calls=calls),
      "sample_actions_compile_s": sample_compile_s,
  }
  out["sample_actions_min_ms"], out["backbone_min_ms"] = MIN_MS["sample"], MIN_MS["backbone"]
  kind = config.head.kind
  if kind in ("diffusion", "flow"):
    steps = (config.head.diffusion.num_sample_steps if kind == "diffusion"
             else config.head.flow.num_integration_steps)
    x = noise["initial"]
    t = (np.zeros((1,), np.int32) if kind == "diffusion" else np.zeros((1,), np.float32))
    out["head_steps"] = steps
    out["head_one_step_ms"] = median_ms(jax.jit(policy.head_predict), params, readouts, x, t,
                                        calls=calls)
  return out


def measure_train_step(config, batch_size: int, calls: int) -> dict:
  policy = Policy(config)
  batch = jax.device_put(example_batch(config, batch_size, seed=0))
  params = jax.jit(policy.init)(jax.random.key(0), batch)
  optimizer = optax.adamw(3e-4)
  opt_state = optimizer.init(params)

  def step(params, opt_state, batch, rng):
    (loss, _), grads = jax.value_and_grad(policy.loss, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  compile_s, compiled = compile_seconds(jax.jit(step), params, opt_state, batch, jax.random.key(0))
  ms = median_ms(lambda: compiled(params, opt_state, batch, jax.random.key(0)), calls=calls,
                 warmup=2)
  return {f"train_step_b{batch_size}_ms": ms, f"train_step_b{batch_size}_compile_s": compile_s}


def measure_encoder(calls: int, onnx_dir: str | None) -> dict:
  """Batch-1 instruction encoding (uncached: tokenizer + network), JAX jit and ONNX Runtime.

  A control loop pays this once per new instruction, never per step (the features are cached and
  the policy graph takes them as an input); the number says how long a new instruction takes.
  """
  import tempfile

  from vla_jax.export import encoder_export
  from vla_jax.language.encoder import get_encoder
  from vla_jax.language.onnx_encoder import OnnxInstructionEncoder

  encoder = get_encoder("minilm", 32)
  text = "could you please put the red square in the top left corner"
  ids, mask = encoder.tokenizer([text])
  jitted = jax.jit(lambda p, i, m: encoder.module.apply({"params": p}, i, m))
  out = {"encoder_jax_ms": median_ms(jitted, encoder.params, ids, mask, calls=calls),
         "tokenize_ms": median_ms(lambda: encoder.tokenizer([text]), calls=calls)}
  with tempfile.TemporaryDirectory() as tmp:
    directory = pathlib.Path(onnx_dir or tmp)
    if not (directory / encoder_export.ENCODER_ONNX).is_file():
      print("exporting the encoder to ONNX for the measurement (~1-2 min) …", flush=True)
      section = encoder_export.export_encoder(encoder, "tokens", directory, opset=17, log=lambda *_: None)
      (directory / "manifest.json").write_text(json.dumps({"language_encoder": section}))
    for threads in (1, 2):
      onnx = OnnxInstructionEncoder(directory, threads=threads)
      feeds = {"input_ids": ids, "attention_mask": mask}
      out[f"encoder_onnx_{threads}t_ms"] = median_ms(lambda: onnx.session.run(None, feeds), calls=calls)
  return out


def machine_info() -> dict:
  cpu = platform.processor()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  import flax
  import jaxlib
  return {
      "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
      "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "flax": flax.__version__, "optax": optax.__version__,
      "devices": [str(d) for d in jax.devices()],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--calls", type=int, default=100, help="timed calls per latency (≥ 100)")
  parser.add_argument("--train_calls", type=int, default=10)
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--encoder_onnx_dir", default=None,
                      help="a directory with encoder.onnx + manifest.json (default: export one to a temp dir)")
  args = parser.parse_args()
  load_before = os.getloadavg()

  # Param counts: every size × head (abstract init, no compilation).
  params = {}
  for size in SIZES:
    for head in HEAD_KINDS:
      config = model_config(size, head)
      policy = Policy(config)
      shapes = jax.eval_shape(policy.init, jax.random.key(0), example_batch(config, 1))
      params[f"{size}/{head}"] = {"total": count_params(shapes),
                                  "backbone": count_params(shapes["backbone"]),
                                  "head": count_params(shapes["head"])}

  runs = {
      # The CPU default the quickstart trains: 8 learned image tokens, width 128, window 1.
      "quickstart/diffusion": tabletop.get_config("small").model,  # MiniLM features in.
      # The same policy reading learned byte ids: the per-step cost the encoder switch must not grow.
      "quickstart_learned/diffusion": tabletop.get_config("small,learned").model,
      "small/diffusion": model_config("small", "diffusion"),
      "small/flow": model_config("small", "flow"),
      "small/mse": model_config("small", "mse"),
      "octo_vit_t_like/diffusion20": octo_vit_t_like(),
  }
  latency = {}
  for name, config in runs.items():
    print(f"measuring {name} …", flush=True)
    latency[name] = measure_latency(config, args.calls)
    if name in ("small/diffusion", "octo_vit_t_like/diffusion20"):
      latency[name].update(measure_train_step(config, 8, args.train_calls))
    if name in ("small/diffusion", "quickstart/diffusion"):
      latency[name].update(measure_train_step(config, 64, max(3, args.train_calls // 3)))

  print("\nParameter counts (backbone + head)")
  print(f"{'size/head':22s} {'total':>12s} {'backbone':>12s} {'head':>10s}")
  for name, p in params.items():
    print(f"{name:22s} {p['total']:12,d} {p['backbone']:12,d} {p['head']:10,d}")

  print(f"\nBatch-1 latency on CPU, jit, median (and fastest) of {args.calls} calls, ms; "
        f"load average before {load_before[0]:.1f}, now {os.getloadavg()[0]:.1f}")
  cols = ["params", "sample_actions_ms", "sample_actions_min_ms", "backbone_ms", "backbone_min_ms", "head_all_steps_ms", "head_one_step_ms",
          "head_steps", "sample_actions_compile_s", "train_step_b8_ms", "train_step_b8_compile_s",
          "train_step_b64_ms"]
  short = ["params", "sample", "sample(min)", "backbone", "backbone(min)", "head(all)", "head(1 step)", "steps", "compile s",
           "train b8", "train compile s", "train b64"]
  print(f"{'model':28s} " + " ".join(f"{c:>12s}" for c in short))
  for name, row in latency.items():
    cells = []
    for c in cols:
      v = row.get(c)
      cells.append(f"{'-':>12s}" if v is None else f"{v:12,d}" if isinstance(v, int)
                   else f"{v:12.2f}")
    print(f"{name:28s} " + " ".join(cells))
  ratio = latency["quickstart/diffusion"]["sample_actions_ms"] / latency["quickstart_learned/diffusion"]["sample_actions_ms"]
  ratio_min = (latency["quickstart/diffusion"]["sample_actions_min_ms"]
               / latency["quickstart_learned/diffusion"]["sample_actions_min_ms"])
  print(f"\nPer-step policy latency, MiniLM features vs learned bytes: {ratio:.3f}x median, {ratio_min:.3f}x fastest "
        "(target <= 1.10)")
  encoder = measure_encoder(args.calls, args.encoder_onnx_dir)
  print("Batch-1 instruction encoding (once per new instruction), ms: " +
        ", ".join(f"{k[:-3]} {v:.2f}" for k, v in encoder.items()))

  result = {
      "command": " ".join([pathlib.Path(sys.executable).name, *sys.argv]),
      "machine": machine_info(),
      "load_average_before": load_before,
      "load_average_after": os.getloadavg(),
      "calls": args.calls,
      "param_counts": params,
      "latency": latency,
      "quickstart_minilm_vs_learned_sample_actions": {"median_ratio": ratio, "fastest_ratio": ratio_min},
      "instruction_encoder_b1": encoder,
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
