"""Closed-loop evaluation of trained checkpoints in the built-in simulator.

  python -m experiments.evaluate --checkpoint runs/x/checkpoints/3000 [--out DIR] [--eval.episodes_per_family=100]
  python -m experiments.evaluate --workdir runs/x [--all_checkpoints]   # latest (or every) checkpoint
  python -m experiments.evaluate --workdir runs/tabletop_h16 --eval.execute_steps=8 \
      --eval.strategy=rtc --eval.delay=4              # inference takes 4 control steps; see eval_config

Another simulator's suite: pass the experiment config whose `eval` section describes it, and
override that section through it (the --eval flags then do not apply):

  python -m experiments.evaluate --workdir runs/metaworld --config experiments/configs/metaworld.py \
      [--config.eval.episodes_per_task=10]

Writes summary.json, results.md (the table printed here), GIFs, TensorBoard scalars, and with
several checkpoints a success-vs-step plot.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory (.../checkpoints/<step>).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory: evaluates its latest checkpoint.")
_ALL = flags.DEFINE_bool("all_checkpoints", False, "With --workdir: evaluate every kept checkpoint.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default <workdir>/eval/step_<n>).")


def _eval_config():
  from vla_jax.evaluation.evaluate import eval_config

  return eval_config()


_EVAL = config_flags.DEFINE_config_dict("eval", _eval_config(), "Evaluation settings.")
# Used only when given on the command line; the default is there because every config flag must
# load (experiments.cli checks them all before running).
_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/tabletop.py", "An experiment config whose `eval` section to use instead of "
    "--eval (e.g. experiments/configs/metaworld.py); override it with --config.eval.<key>=...")


def main(argv):
  del argv
  import sys
  from pathlib import Path

  from vla_jax.evaluation import run
  from vla_jax.training.checkpoint import checkpoint_steps

  if bool(_CHECKPOINT.value) == bool(_WORKDIR.value):
    sys.exit("error: pass exactly one of --checkpoint or --workdir")
  try:
    checkpoints = [Path(_CHECKPOINT.value)] if _CHECKPOINT.value else checkpoint_steps(_WORKDIR.value)
    checkpoints = checkpoints if _ALL.value else checkpoints[-1:]
    if not flags.FLAGS["config"].present and any(a.startswith("--config.") for a in sys.argv):
      sys.exit("error: --config.<key> overrides need --config <file> (e.g. experiments/configs/metaworld.py)")
    eval_config = _CONFIG.value.eval if flags.FLAGS["config"].present else _EVAL.value
    run.evaluate_checkpoints(checkpoints, eval_config, out=_OUT.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  cli.run(main)
