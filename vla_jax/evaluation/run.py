"""Evaluate checkpoints end to end: restore → closed loop → artifacts, TensorBoard, success curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import ml_collections

from vla_jax.evaluation import evaluate as ev, grounding, metaworld
from vla_jax.inference import bundle as bundle_lib, jax_policy
from vla_jax.io import write_json_atomic


def evaluate_checkpoints(checkpoints: Sequence[Path], config: ml_collections.ConfigDict, out: str | None = None,
                         print_fn=print) -> list[dict[str, Any]]:
  """Evaluates each checkpoint; with several, also plots success vs step. Returns the summaries."""
  import tensorflow as tf

  summaries = []
  history = []
  for ckpt in checkpoints:
    ckpt = Path(ckpt)
    step = int(ckpt.name) if ckpt.name.isdigit() else None
    workdir = ckpt.parent.parent
    outdir = Path(out) / ckpt.name if out and len(checkpoints) > 1 else Path(out or workdir / "eval" / f"step_{step}")
    if config.get("env") == "metaworld":
      metaworld.check_view_matches_data(config, workdir / "config.json")
    policy = jax_policy.load(ckpt, seed=config.seed)
    summary = ev.evaluate(policy, config, progress=True)
    if (config.get("env", "tabletop") == "tabletop" and config.get("grounding_scenes", 0)
        and grounding.applies(policy.bundle.model_config)):
      summary["grounding"] = grounding.grounding_report(policy.bundle, ev.grounding_splits(config.conditions),
                                                        config.families, int(config.grounding_scenes))
    paths = ev.write_artifacts(summary, outdir, step=step)
    scalars = ev.scalars(summary)
    with tf.summary.create_file_writer(str(outdir.parent / "tensorboard")).as_default(step=step or 0):
      for k, v in scalars.items():
        tf.summary.scalar(f"eval/{k}", v)
    history.append({"step": step or 0, **scalars})
    print_fn(f"\n{ckpt} (step {step}):\n{ev.markdown_table(summary)}")
    print_fn(f"artifacts: {paths['json']}, {paths['markdown']}, GIFs in {paths['videos']}/")
    summaries.append(summary)
  if len(checkpoints) > 1:
    plot = ev.plot_success_curve(history, Path(out or Path(checkpoints[0]).parent.parent / "eval") / "success_curve.png")
    write_json_atomic(plot.parent / "history.json", history)
    print_fn(f"success curve: {plot}")
  return summaries


def make_training_hook(config: ml_collections.ConfigDict, workdir: str | Path):
  """Periodic closed-loop evaluation for `train_and_evaluate(..., closed_loop_eval=hook)`.

  The hook evaluates the EMA params on `config.eval` (usually fewer episodes than a final
  evaluation), writes artifacts under <workdir>/eval/step_<n>/ and returns flat scalars.
  """
  dataset = config.eval_dataset
  history: list[dict[str, Any]] = []

  def hook(step: int, policy, params, statistics: dict[str, Any]) -> dict[str, float]:
    bundle = bundle_lib.from_statistics(policy, params, statistics, normalization=config.data.normalization,
                                        eval_dataset=dataset, source={"kind": "training", "step": step},
                                        where=f"the run's statistics at step {step}")
    runner = jax_policy.JaxPolicy(bundle, seed=config.eval.seed)
    summary = ev.evaluate(runner, config.eval)
    ev.write_artifacts(summary, Path(workdir) / "eval" / f"step_{step}", step=step)
    scalars = ev.scalars(summary)
    history.append({"step": step, **scalars})
    ev.plot_success_curve(history, Path(workdir) / "eval" / "success_curve.png")
    return scalars

  return hook
