"""Generates a scripted-expert RLDS dataset and prints its summary.

  python -m experiments.generate_data --config experiments/configs/tabletop_data.py [--overwrite]
  python -m experiments.generate_data --config experiments/configs/metaworld_data.py   # Meta-World MT10

The config's `builder` ("tabletop" when absent, or "metaworld") picks the builder module.

A finished dataset written with the same generation config is reused; one written with another
config (e.g. an older default) is rebuilt, as is any with --overwrite (built in a temporary
directory and swapped in). Any config key can be overridden: --config.num_train_episodes=50.
"""

import json
import sys
import time

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/tabletop_data.py", "Dataset config.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a finished dataset at the same path.")
_JSON = flags.DEFINE_bool("json", False, "Print the summary as JSON instead of a table.")


def main(argv):
  del argv
  import tensorflow_datasets as tfds  # Heavy imports after flag parsing: --help stays fast.

  from vla_jax.data import rlds_writer, tabletop_builder

  config = _CONFIG.value
  kind = config.get("builder", "tabletop")
  if kind == "metaworld":
    from vla_jax.data import metaworld_builder as builder
  elif kind == "tabletop":
    builder = tabletop_builder
  else:
    sys.exit(f"error: config.builder={kind!r} is not valid; expected 'tabletop' or 'metaworld'")
  path = builder.dataset_dir(config)
  overwrite = _OVERWRITE.value
  if rlds_writer.is_complete(path) and not overwrite:
    stale = tabletop_builder.config_differences(path, config)
    if stale:  # Written with another generation config (e.g. an older default): rebuild it.
      print(f"{path} was written with a different generation config or schema ({', '.join(stale)}); rebuilding it.")
      overwrite = True
    else:
      print(f"{path} already exists; not regenerating (pass --overwrite to rebuild it).")
  if overwrite or not rlds_writer.is_complete(path):
    tfds.disable_progress_bar()  # Our own per-episode bar is more informative.
    start = time.perf_counter()
    try:
      path = builder.write_dataset(config, overwrite=overwrite)
    except (ValueError, ImportError, RuntimeError) as e:
      sys.exit(f"error: {e}")
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
  summary = tabletop_builder.load_summary(path)
  print(json.dumps(summary, indent=2) if _JSON.value else cli.format_summary(summary))


if __name__ == "__main__":
  cli.run(main)
