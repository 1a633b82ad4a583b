"""A policy that reads frozen MiniLM features: trains without touching the encoder, and runs a typed
instruction end to end through `experiments.rollout`."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import tabletop
from tests.conftest import REPO
from vla_jax.language.encoder import get_encoder
from vla_jax.training.checkpoint import latest_checkpoint, restore_for_inference
from vla_jax.training.train import train_and_evaluate

# A training run and two CLI subprocesses (~1 min): the default suite keeps its 5-minute budget.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_run(tiny_tabletop_dir, tmp_path_factory):
  config = tabletop.get_config("tiny,minilm")
  config.data.datasets.tabletop.builder_dir = str(tiny_tabletop_dir)
  config.train.num_steps = 12
  config.train.eval_every = 0
  config.checkpoint.every = 12
  workdir = tmp_path_factory.mktemp("runs") / "minilm"
  encoder = get_encoder("minilm", 32)
  before = jax.tree.map(np.array, encoder.params)
  result = train_and_evaluate(config, workdir)
  result.state  # noqa: B018
  return workdir, before, encoder


def test_encoder_gets_no_update_and_no_optimizer_state(minilm_run):
  workdir, before, encoder = minilm_run
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, encoder.params))
  state = restore_for_inference(latest_checkpoint(workdir))["state"]
  encoder_size = sum(x.size for x in jax.tree.leaves(encoder.params))
  for part in ("params", "opt_state", "ema_params"):
    leaves = jax.tree.leaves(state[part])
    total = sum(np.size(x) for x in leaves)
    assert total < encoder_size / 10, f"{part} holds {total:,} numbers; the encoder alone has {encoder_size:,}"
    assert not any(np.shape(x) == (30522, 384) for x in leaves), f"{part} holds MiniLM's word embeddings"
  assert "language_tokenizer" in state["params"]["backbone"]  # The trainable projection is there.
  assert "feature_projection" in state["params"]["backbone"]["language_tokenizer"]


def test_rollout_cli_runs_a_typed_instruction_and_writes_a_gif(minilm_run, tmp_path):
  workdir, _, _ = minilm_run
  gif = tmp_path / "typed.gif"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.rollout", "--workdir", str(workdir), "--instruction",
       "Could you please put the RED square in the top left corner?", "--seed", "3", "--gif", str(gif),
       "--max_steps", "12"], capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  from PIL import Image

  with Image.open(gif) as image:
    assert image.n_frames >= 13  # The first frame, one per step, and the held last frame.
  if "not in the scene" in out or "cannot be judged" in out:
    assert "result:      ran 12 steps" in out
  else:
    assert "understood as: put the red square in the top left corner" in out
    assert "result:      not achieved after 12 steps" in out or "SUCCESS" in out


def test_rollout_cli_says_when_an_instruction_names_nothing_in_the_scene(minilm_run):
  workdir, _, _ = minilm_run
  result = subprocess.run(
      [sys.executable, "-m", "experiments.rollout", "--workdir", str(workdir), "--instruction",
       "make me a sandwich", "--seed", "3", "--max_steps", "5"], capture_output=True, text=True, cwd=REPO,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "success cannot be judged" in result.stdout and "ran 5 steps" in result.stdout
  assert "scene has:" in result.stdout
