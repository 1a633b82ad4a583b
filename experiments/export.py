"""Export a trained policy for the edge: TF SavedModel + ONNX (+ fp16/int8), parity-checked.

  python -m experiments.export --checkpoint runs/x/checkpoints/3000 [--out exports/x_3000] [--overwrite]
  python -m experiments.export --workdir runs/x ...     # the run's latest checkpoint
      [--export.opset=17] [--export.variants="('fp16',)"] [--export.parity_batch_sizes="(1,8)"]
      [--closed_loop --closed_loop_episodes=20]   # ONNX vs JAX success in the simulator
      [--benchmark]                                # then benchmarks/edge.py on the export

The export fails (exit 1, one line naming the problem, no output directory) if any parity or
graph check fails; see vla_jax/export/exporter.py for what is written.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory (.../checkpoints/<step>).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory: exports its latest checkpoint.")
_OUT = flags.DEFINE_string("out", None, "Export directory (default exports/<run>_<step>).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export directory.")
_CLOSED_LOOP = flags.DEFINE_bool("closed_loop", False, "Compare ONNX vs JAX closed-loop success after exporting.")
_EPISODES = flags.DEFINE_integer("closed_loop_episodes", 20, "Episodes per task family for --closed_loop.")
_CLOSED_LOOP_FILE = flags.DEFINE_string("closed_loop_file", "policy.onnx",
                                        "Which ONNX file of the export --closed_loop drives (e.g. policy.opt.onnx).")
_BENCHMARK = flags.DEFINE_bool("benchmark", False, "Run benchmarks/edge.py on the export afterwards.")


def _export_config():
  from vla_jax.export.config import export_config

  return export_config()


_EXPORT = config_flags.DEFINE_config_dict("export", _export_config(), "Export settings.")


def main(argv):
  del argv
  import subprocess
  import sys
  from pathlib import Path

  from vla_jax.export import ExportError, export_policy
  from vla_jax.inference.bundle import load_checkpoint
  from vla_jax.export.config import validate
  from vla_jax.io import write_json_atomic
  from vla_jax.training.checkpoint import latest_checkpoint

  if bool(_CHECKPOINT.value) == bool(_WORKDIR.value):
    sys.exit("error: pass exactly one of --checkpoint (e.g. runs/x/checkpoints/3000) or --workdir (e.g. runs/x)")
  try:
    ckpt = Path(_CHECKPOINT.value) if _CHECKPOINT.value else latest_checkpoint(_WORKDIR.value)
  except FileNotFoundError as e:
    sys.exit(f"error: {e}")
  out = Path(_OUT.value) if _OUT.value else Path("exports") / f"{ckpt.parent.parent.name}_{ckpt.name}"
  try:
    validate(_EXPORT.value)  # Before restoring anything: a bad --export.* fails fast, ...
    if out.exists() and not _OVERWRITE.value:  # ... and so does an export that would be refused.
      raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    bundle = load_checkpoint(ckpt, dataset=_EXPORT.value.dataset)
    manifest = export_policy(bundle, out, _EXPORT.value, overwrite=_OVERWRITE.value)
  except (ExportError, ValueError, FileNotFoundError, FileExistsError) as e:
    sys.exit(f"error: {e}")
  sizes = {k: v["bytes"] for k, v in manifest["artifacts"].items()}
  print(f"exported {manifest['model']['num_params']:,} params ({manifest['model']['size']}, "
        f"{manifest['model']['head']}) from {ckpt} → {out}; sizes {sizes}")

  if _CLOSED_LOOP.value:
    from vla_jax.evaluation.evaluate import eval_config
    from vla_jax.export import closed_loop

    config = eval_config(_EPISODES.value)
    config.conditions = ("seen",)
    config.videos_per_family = 0
    result = closed_loop.compare_closed_loop(out, config, checkpoint=ckpt, model_file=_CLOSED_LOOP_FILE.value)
    write_json_atomic(out / "closed_loop.json", result)
    print(closed_loop.markdown(result))
    if not result["passed"]:
      sys.exit(f"error: ONNX closed-loop success differs from JAX by {result['max_abs_gap_points']:.1f} points (> 2)")

  if _BENCHMARK.value:
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "edge.py"
    subprocess.run([sys.executable, str(bench), "--export_dir", str(out)], check=True)


if __name__ == "__main__":
  cli.run(main)
