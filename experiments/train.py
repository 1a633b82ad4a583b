"""Train a policy: the entry point researchers use every day.

  python -m experiments.train --config experiments/configs/tabletop.py [--config.key=value ...] \
      [--workdir runs/<name>] [--noresume] [--allow_config_change]

Resumes from the workdir's latest checkpoint by default; refuses a workdir that holds a run with a
different config unless --allow_config_change.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/tabletop.py", "Training config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config name>).")
_RESUME = flags.DEFINE_bool("resume", True, "Continue from the latest checkpoint in the workdir.")
_ALLOW = flags.DEFINE_bool("allow_config_change", False, "Resume even if the saved config differs.")


def main(argv):
  del argv
  import sys
  from pathlib import Path

  from vla_jax.data import pipeline
  from vla_jax.evaluation import run as eval_run
  from vla_jax.training import train

  config = _CONFIG.value
  workdir = _WORKDIR.value or str(Path("runs") / Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem)
  try:
    hook = eval_run.make_training_hook(config, workdir) if config.train.closed_loop_every else None
    result = train.train_and_evaluate(config, workdir, resume=_RESUME.value, allow_config_change=_ALLOW.value,
                                      closed_loop_eval=hook)
  except (ValueError, train.ConfigMismatchError, FileExistsError, FloatingPointError, FileNotFoundError,
          pipeline.DataReadError) as e:
    sys.exit(f"error: {e}")
  metrics = result.metrics
  print(f"done: {workdir} at step {metrics['step']}: " + ", ".join(
      f"{k} {v:.4g}" for k, v in metrics.items() if k != "step"))


if __name__ == "__main__":
  cli.run(main)
