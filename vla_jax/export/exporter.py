"""One call that turns a policy into a checked edge export directory.

    bundle = load_checkpoint("runs/x/checkpoints/3000")   # vla_jax.inference.bundle
    manifest = export_policy(bundle, "exports/x", export_config())

The directory (written under a temporary name and renamed only when every check passed, so a
half-written or failing export never looks finished):

    manifest.json        inputs/outputs (names, shapes with a dynamic "batch", dtypes), the baked
                         normalisation, the source checkpoint and run config, versions, parity figures
    savedmodel/          TF SavedModel, signature "serving_default" (TF-op graph from jax2tf)
    policy.onnx          the whole policy: normalise → backbone → fixed-step sampling → un-normalise
    policy.opt.onnx      the same with batch-only values folded and LayerNorm / GELU fused (optimize.py;
                         ONNX Runtime only) — the fast one
    policy.fp16.onnx, policy.int8.onnx   optional smaller variants, with their accuracy figures
    encoder.onnx, tokenizer.json          models with a frozen pretrained language encoder: the
                         encoder as its own graph, run once per instruction (encoder_export.py)

Parity (always, and it fails the export): the SavedModel reloaded from disk, the ONNX model in
ONNX Runtime, and the numpy statistics functions around the JAX policy must all match the JAX
policy function (`vla_jax.inference.policy_fn`) at every `parity_batch_sizes` to within `parity_tolerance` (normalised units).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import onnx

from vla_jax.export import config as config_lib
from vla_jax.export import convert, encoder_export, optimize, parity, variants
from vla_jax.inference.onnx_runtime import run_fn
from vla_jax.inference import policy_fn as policy_fn_lib
from vla_jax.inference.artifacts import (FORMAT, GUIDED_FILES, MANIFEST, ONNX, ONNX_OPTIMIZED, SAVEDMODEL, VARIANT_FILES,
                                        read_manifest)
from vla_jax.inference.bundle import PolicyBundle
from vla_jax.language.encoder import get_encoder

VERSION_PACKAGES = ("jax", "jaxlib", "flax", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnx", "onnxruntime",
                    "numpy", "ml_collections")


def versions() -> dict[str, Any]:
  out: dict[str, Any] = {"python": platform.python_version()}
  for name in VERSION_PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    repo = Path(__file__).resolve().parents[2]
    out["vla_jax_git"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=5).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    out["vla_jax_git"] = None
  return out


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json())


def _sampling_info(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  kind = cfg.head.kind
  steps = {"diffusion": cfg.head.diffusion.num_sample_steps, "flow": cfg.head.flow.num_integration_steps}.get(kind, 1)
  return {"head": kind, "steps_inside_graph": int(steps)}


def _onnx_file_info(path: Path) -> dict[str, Any]:
  model = onnx.load(str(path))
  return {"path": path.name, "bytes": path.stat().st_size, "sha256": convert.file_digest(path),
          "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
          "num_nodes": sum(1 for _ in convert.iter_nodes(model.graph)),
          "op_types": sorted({n.op_type for n in convert.iter_nodes(model.graph)})}


def export_policy(bundle: PolicyBundle, out: str | Path, config: ml_collections.ConfigDict | None = None, *,
                  overwrite: bool = False, log=print) -> dict[str, Any]:
  """Exports, checks and writes `out/`; returns the manifest. Raises ExportError on any failed check."""
  config = config or config_lib.export_config()
  config_lib.validate(config)
  out = Path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"export directory {out} already exists; pass overwrite=True (--overwrite) to replace it")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  try:
    manifest = _export_into(bundle, tmp, config, log)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
      old = out.parent / f".{out.name}.old-{os.getpid()}"
      out.rename(old)
      tmp.rename(out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      tmp.rename(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  log(f"export written to {out}")
  return manifest


def _export_into(bundle: PolicyBundle, tmp: Path, config: ml_collections.ConfigDict, log) -> dict[str, Any]:
  timings: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(name: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[name] = round(now - clock, 2)
    clock = now

  policy = bundle.policy
  dims = policy_fn_lib.io_dims(bundle)
  specs = policy_fn_lib.input_specs(policy, dims=dims)
  outputs = policy_fn_lib.output_specs(policy, dims)
  serve = policy_fn_lib.make_policy_fn(bundle)
  norm = policy_fn_lib.normalisation(bundle)

  log("jax2tf: lowering the policy to TF ops (native_serialization=False, enable_xla=False)")
  module = convert.tf_module(serve, bundle.params, specs, output_name=outputs[0].name)
  convert.save_savedmodel(module, tmp / SAVEDMODEL)
  lap("savedmodel")
  log(f"tf2onnx: converting at opset {config.opset}")
  model = convert.to_onnx(module, int(config.opset))
  convert.save_onnx(model, tmp / ONNX)
  del model, module
  lap("onnx")

  session = convert.ort_session(tmp / ONNX, optimization="all")
  runners = {"savedmodel": convert.load_savedmodel_fn(tmp / SAVEDMODEL), "onnx": run_fn(session)}
  fusion_stats = None
  if config.save_optimized_onnx:
    fused = onnx.load(str(tmp / ONNX))
    fusion_stats = optimize.optimize(fused)
    convert.check_onnx_graph(fused, allowed_domains=variants.ORT_DOMAINS)
    convert.save_onnx(fused, tmp / ONNX_OPTIMIZED)
    del fused
    runners["onnx_optimized"] = run_fn(convert.ort_session(tmp / ONNX_OPTIMIZED, optimization="all"))
  runners["numpy_normalisation"] = lambda inputs: parity.reference_actions(bundle, inputs)

  params = jax.tree.map(jax.numpy.asarray, bundle.params)
  serve_jit = jax.jit(serve)
  reference = lambda inputs: np.asarray(serve_jit(params, inputs))  # noqa: E731
  make_inputs = lambda b: parity.random_inputs(bundle, b, seed=int(config.parity_seed) + b)  # noqa: E731
  sizes = tuple(int(b) for b in config.parity_batch_sizes)
  log(f"parity: SavedModel, ONNX vs JAX at batch sizes {sizes}")
  results = parity.check_parity(runners, reference, make_inputs, sizes, norm["action"], float(config.parity_tolerance))
  lap("parity")

  artifacts: dict[str, Any] = {
      "savedmodel": {"path": SAVEDMODEL, "bytes": convert.directory_size_bytes(tmp / SAVEDMODEL),
                     "signature": "serving_default"},
      "onnx": _onnx_file_info(tmp / ONNX),
  }
  if config.save_optimized_onnx:
    artifacts["onnx_optimized"] = {**_onnx_file_info(tmp / ONNX_OPTIMIZED), "fusions": fusion_stats,
                                   "note": "batch-only values folded (shape arithmetic, batch-broadcast constants; "
                                           "vla_jax/export/shape_folding.py), LayerNorm → LayerNormalization and "
                                           "tanh-GELU → com.microsoft FastGelu fused (vla_jax/export/optimize.py); "
                                           "needs ONNX Runtime"}
  variant_results: dict[str, Any] = {}
  for name in config.variants:
    path = tmp / VARIANT_FILES[name]
    log(f"variant {name}: building and measuring")
    try:  # Variants are optional: a failure is recorded (and printed), the fp32 export still stands.
      variants.BUILDERS[name](tmp / ONNX, path)
      run = run_fn(convert.ort_session(path, optimization="all"))
    except convert.ExportError as e:
      log(f"warning: variant {name} not written: {e}")
      path.unlink(missing_ok=True)
      variant_results[name] = {"error": str(e), "passed": False}
      continue
    res = parity.check_parity({name: run}, reference, make_inputs, sizes, norm["action"], {name: None})[name]
    budget = config.variant_tolerance.get(name)
    res.update(tolerance=budget, passed=budget is None or res["max_abs_error"] <= budget)
    if not res["passed"]:
      log(f"warning: variant {name} max abs error {res['max_abs_error']:.3g} exceeds its budget {budget}")
    variant_results[name] = res
    artifacts[f"onnx_{name}"] = _onnx_file_info(path)
  lap("variants")

  guided_results: dict[str, Any] = {}
  for mode in config.get("guided_samplers", ()):
    guided_results[mode] = _export_guided(bundle, mode, tmp, config, sizes, norm["action"], log)
    artifacts[f"onnx_{mode}"] = {**_onnx_file_info(tmp / GUIDED_FILES[mode]),
                                 "inputs": [s.to_json() for s in policy_fn_lib.input_specs(policy, mode, policy_fn_lib.io_dims(bundle))]}
  if guided_results:
    lap("guided")

  for name, res in {**results, **variant_results, **guided_results}.items():
    if "error" in res:
      continue
    figures = ", ".join(f"B={k[6:]} {v['max_abs_error']:.2e}" for k, v in res.items() if k.startswith("batch_"))
    log(f"  parity {name:20s} max abs error (normalised) {figures}  {'ok' if res['passed'] else 'OVER BUDGET'}")

  cfg = bundle.model_config
  language_encoder = None
  if cfg.language.get("encoder", "learned") != "learned" and cfg.language.mode != "none":
    language_encoder = encoder_export.export_encoder(
        bundle.encoder or get_encoder(cfg.language.encoder, int(cfg.language.max_len)), cfg.language.mode, tmp,
        opset=int(config.opset), tolerance=float(config.parity_tolerance), log=log)
    lap("encoder")
  return {
      "format": FORMAT,
      "created": datetime.datetime.now().isoformat(timespec="seconds"),
      "model": {"size": cfg.get("size"), "head": cfg.head.kind, "num_params": bundle.num_params(),
                "config": _config_json(cfg), **_sampling_info(cfg)},
      "source": bundle.source,
      "run_config": bundle.run_config,
      "inputs": [s.to_json() for s in specs],
      "outputs": [s.to_json() for s in outputs],
      "language_encoder": language_encoder,
      "normalization": {
          "method": bundle.normalization,
          "dataset": bundle.source.get("dataset"),
          "inside_graph": "proprio normalised on input, actions un-normalised on output",
          **{key: affine.to_json() for key, affine in norm.items()},
          "statistics": {"action": bundle.action_stats, "proprio": bundle.proprio_stats},
      },
      "artifacts": artifacts,
      "parity": {"units": "normalised action units (env-unit error / per-dim scale)",
                 "batch_sizes": list(sizes), "tolerance": float(config.parity_tolerance),
                 "reference": "jax.jit of vla_jax.inference.policy_fn.make_policy_fn", **results},
      "variants": variant_results,
      "guided_samplers": guided_results,
      "export_config": _config_json(config),
      "versions": versions(),
      "timings_s": timings,
  }


def _export_guided(bundle: PolicyBundle, mode: str, tmp: Path, config: ml_collections.ConfigDict,
                   sizes: tuple[int, ...], action_norm, log) -> dict[str, Any]:
  """policy.<mode>.onnx: the real-time chunking sampler (`make_policy_fn(bundle, guidance=mode)`),
  converted like the plain one and parity-checked against its jitted JAX twin; fails the export."""
  specs = policy_fn_lib.input_specs(bundle.policy, mode, policy_fn_lib.io_dims(bundle))
  fn = policy_fn_lib.make_policy_fn(bundle, guidance=mode)
  log(f"guided sampler {mode}: jax2tf + tf2onnx")
  module = convert.tf_module(fn, bundle.params, specs, output_name="actions")
  convert.save_onnx(convert.to_onnx(module, int(config.opset)), tmp / GUIDED_FILES[mode])
  del module
  params = jax.tree.map(jax.numpy.asarray, bundle.params)
  fn_jit = jax.jit(fn)
  make_inputs = lambda b: parity.random_inputs(bundle, b, seed=int(config.parity_seed) + b, guidance=mode)  # noqa: E731
  run = run_fn(convert.ort_session(tmp / GUIDED_FILES[mode], optimization="all"))
  return parity.check_parity({mode: run}, lambda inputs: np.asarray(fn_jit(params, inputs)), make_inputs, sizes,
                             action_norm, float(config.parity_tolerance))[mode]


def load_manifest(export_dir: str | Path) -> dict[str, Any]:
  """The export's manifest (`vla_jax.inference.artifacts.read_manifest`, JAX-free, is the one reader)."""
  return read_manifest(export_dir)
