"""Shared fixtures. Heavy fixtures are session-scoped so the suite writes each dataset once."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # Bit-stable CPU numerics across runs.
# Compilation dominates the tests of tiny models: XLA:CPU backend (LLVM) optimisation level 1 roughly
# halves compile time with no loss in the step time of those models. Set before JAX is imported, and
# inherited by the subprocesses, notebook kernels and servers the tests start (default suite
# 4:43 -> 4:02 on a fresh clone here). Library code and benchmarks keep XLA's default.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()
# The pretrained encoder must come from the installed wheel alone: any hub lookup fails loudly.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = "/nonexistent/vla_jax_tests_have_no_hub_cache"

import fcntl  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
  """Imports `benchmarks/<name>.py` (a script directory, not a package) as a module for its tests."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
  """`<shared temp>/<name>`, made by `build(path)` once per test session — also across the
  pytest-xdist workers of `make test`, which share the parent of their base temp directories: the
  first worker builds under an exclusive lock, the others wait and reuse. A failed build leaves no
  completion mark, so the next caller builds again (and fails with its own traceback)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  target = root / f"once_{name}"
  with open(root / f"once_{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / f"once_{name}.done").exists():
      shutil.rmtree(target, ignore_errors=True)
      build(target)
      (root / f"once_{name}.done").touch()
  return target


@pytest.fixture(scope="session")
def tiny_tabletop_dir(tmp_path_factory) -> Path:
  """A finished built-in RLDS dataset (12 train + 3 val episodes, 64x64), written once per session."""
  from experiments.configs import tabletop_data
  from vla_jax.data import tabletop_builder

  config = tabletop_data.get_config("tiny")
  config.data_dir = str(tmp_path_factory.mktemp("data"))
  return tabletop_builder.write_dataset(config, progress=False)


def tiny_export_model_config(head: str = "diffusion"):
  """The tiny untrained policy the export and server tests share (one export per session)."""
  from vla_jax.models import model_config

  config = model_config("tiny", head)
  config.image_size_px = 32  # The simulator renders >= 32 px.
  config.language.max_len = 16
  config.head.diffusion.num_sample_steps = 3  # The loop is unrolled: fewer steps, faster compiles.
  # Random weights with the uncapped schedule: the first DDIM step's clean-chunk estimate is then
  # always clipped, so these tests check the export plumbing at 1e-4 independent of how much the
  # sampler amplifies rounding (x60 with the default cap, wherever the estimate is unclipped; see
  # heads/diffusion.cosine_alphas_cumprod). Conditioning on trained weights: test_trained_checkpoint.
  config.head.diffusion.max_beta = 0.999
  return config


@pytest.fixture(scope="session")
def tiny_bundle():
  """A `tiny_export_model_config()` policy bundle: random weights, synthetic "bounds" statistics."""
  from vla_jax.inference.testing import random_bundle

  return random_bundle(tiny_export_model_config(), seed=0, normalization="bounds")


@pytest.fixture(scope="session")
def tiny_export_and_manifest(tiny_bundle, tmp_path_factory):
  """(export_dir, manifest) of `tiny_bundle`, with both quantised variants — exported once for the
  export and the server tests, whichever workers they run on (an export costs ~15-25 s here)."""
  from vla_jax.export import export_config, export_policy
  def export(path: Path) -> None:
    config = export_config()
    config.parity_batch_sizes = (1, 4)
    path.mkdir(parents=True)
    manifest = export_policy(tiny_bundle, path / "tiny", config, log=lambda *_: None)
    # What export_policy returned, kept apart from the files it wrote (a test compares the two).
    (path / "returned_manifest.json").write_text(json.dumps(manifest))

  shared = build_once(tmp_path_factory, "tiny_export", export)
  return shared / "tiny", json.loads((shared / "returned_manifest.json").read_text())


def write_untrained_checkpoint(run: Path, config, dataset_statistics: dict, step: int = 20) -> Path:
  """Writes `<run>/checkpoints/<step>` of an untrained policy of `config` (a full run config) with
  the items a trained run's checkpoint has — state (params, ema_params, step), the run config, the
  dataset statistics — without training. Returns the checkpoint directory."""
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
