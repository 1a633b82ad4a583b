"""The notebooks researchers start from (`notebooks/`) run top to bottom, and are committed clean.

Each notebook keeps every heavy knob in its first code cell (tagged "parameters"). The test runs
it as a researcher would — a fresh kernel of this interpreter, the working directory
`notebooks/` — with small values written into a cell inserted right after that one (the
papermill convention): a tiny generated dataset, a synthetic RLDS directory, an untrained tiny
checkpoint instead of a training run, a few episodes. Any cell error fails the test with the
cell's traceback.

Compilation dominates the small runs; the kernels inherit the suite's XLA:CPU backend optimisation
level 1 (tests/conftest.py: about half the compile time, same results for these tiny models).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_untrained_checkpoint

NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 600


def notebook_paths() -> list[Path]:
  return sorted(NOTEBOOKS.glob("*.ipynb"))


def run_notebook(path: Path, overrides: dict) -> float:
  """Executes `path` with `overrides` assigned after its parameters cell (in a kernel started with
  this process's environment); returns the wall time in s."""
  import nbformat
  from nbclient import NotebookClient

  nb = nbformat.read(path, as_version=4)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ()))
  lines = ["# Injected by tests/test_notebooks.py: small knobs, and the kernel must be this interpreter.",
           "import sys",
           f"assert sys.executable == {sys.executable!r}, sys.executable"]
  lines += [f"{name} = {value!r}" for name, value in overrides.items()]
  injected = nbformat.v4.new_code_cell("\n".join(lines))
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, injected)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOKS)}})
  start = time.perf_counter()
  client.execute()
  return time.perf_counter() - start


@pytest.fixture(scope="module")
def extra_rlds_dir(tmp_path_factory) -> str:
  """A small synthetic RLDS directory with another layout, for the data notebook's "any RLDS directory"."""
  from vla_jax.data import testing

  return testing.write_synthetic_rlds(str(tmp_path_factory.mktemp("rlds")), name="other_robot",
                                      episode_lengths={"train": [6, 4], "val": [3]}, cameras=("front", "wrist"),
                                      state_dim=4, action_dim=7)


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
  """A run directory holding one checkpoint of an untrained `tabletop:tiny` policy (3 DDIM steps: a
  smaller graph to export), written directly: notebook 03 loads it instead of training, 04 exports it."""
  from experiments.configs import tabletop
  from vla_jax.inference.testing import synthetic_statistics

  config = tabletop.get_config("tiny")
  config.model.head.diffusion.num_sample_steps = 3
  run = tmp_path_factory.mktemp("runs") / "tiny"
  write_untrained_checkpoint(run, config, {config.eval_dataset: synthetic_statistics(config.model, seed=1)})
  return run


def small_knobs(name: str, extra_rlds_dir: str, untrained_run: Path, tmp_path: Path) -> dict:
  """Per notebook: the values that make it run in seconds (the defaults are a researcher's run)."""
  return {
      # A path with no dataset yet: the notebook generates one (the `tiny` variant, ~2 s), as on a fresh clone.
      "01_data": dict(DATASET_DIR=str(tmp_path / "data" / "tabletop" / "1.0.0"), GENERATE_VARIANT="tiny",
                      EXTRA_RLDS_DIRS=[extra_rlds_dir], NUM_EPISODES=2, FRAMES_PER_STRIP=4, BATCH_SIZE=8),
      "02_model": dict(MODEL_VARIANT="tiny", TOY_HEADS=("diffusion",), TOY_STEPS=20, TOY_SAMPLES=32),
      "03_train_and_rollouts": dict(CHECKPOINT=str(untrained_run), EPISODES_PER_FAMILY=1, CONDITIONS=("seen",),
                                    MAX_EPISODE_STEPS=12, ANIMATIONS=1),
      "04_export_and_serve": dict(CHECKPOINT=str(untrained_run), EXPORT_DIR=str(tmp_path / "export"), EXPORT_VARIANTS=(),
                                  LATENCY_CALLS=10, SERVER_STEPS=3),
  }[name]


# The two heaviest (~35-40 s each on 2 cores: compiling every head of the model notebook; jax2tf and
# tf2onnx in the export notebook) run with the slow tests, which CI runs too; the default suite
# keeps the data and training notebooks.
SLOW_NOTEBOOKS = ("02_model", "04_export_and_serve")


@pytest.mark.parametrize("name", [pytest.param(p.stem, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p.stem
                                  for p in notebook_paths()])
def test_notebook_runs_top_to_bottom_with_small_knobs(name, extra_rlds_dir, untrained_run, tmp_path):
  knobs = small_knobs(name, extra_rlds_dir, untrained_run, tmp_path)
  seconds = run_notebook(NOTEBOOKS / f"{name}.ipynb", knobs)
  print(f"{name}: {seconds:.1f} s")


def test_committed_notebooks_have_no_outputs_or_execution_counts():
  import nbformat

  paths = notebook_paths()
  assert len(paths) >= 4, f"expected the four notebooks in {NOTEBOOKS}, found {[p.name for p in paths]}"
  dirty = []
  for path in paths:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
      if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
        dirty.append(f"{path.name} cell {i}: {len(cell.outputs)} outputs, execution_count {cell.execution_count}")
  assert not dirty, "strip outputs before committing (jupyter nbconvert --clear-output --inplace notebooks/*.ipynb):\n" + \
      "\n".join(dirty)


@pytest.mark.slow  # ~1.5 min: 500 training steps and 90 closed-loop episodes of 100 steps.
def test_training_notebook_runs_with_its_default_knobs(tiny_tabletop_dir, tmp_path):
  """03 as a researcher first runs it — CHECKPOINT "" trains the tiny policy, then evaluates it — with
  only where it reads data and writes the run moved out of the repository."""
  seconds = run_notebook(NOTEBOOKS / "03_train_and_rollouts.ipynb",
                         dict(DATASET_DIR=str(tiny_tabletop_dir), RUNS_DIR=str(tmp_path / "runs")))
  print(f"03_train_and_rollouts (defaults): {seconds:.1f} s")
  assert (tmp_path / "runs" / "notebook_tiny_500" / "checkpoints" / "500").is_dir()
