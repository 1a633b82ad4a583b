"""End to end on a really trained checkpoint: train → `python -m experiments.export` → closed loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cli_exports_a_trained_checkpoint_and_onnx_matches_jax_in_closed_loop(tiny_tabletop_dir, tmp_path):
  from experiments.configs import tabletop
  from vla_jax.training import train

  config = tabletop.get_config("tiny")
  config.data.datasets.tabletop.builder_dir = str(tiny_tabletop_dir)
  config.train.num_steps = 20
  config.checkpoint.every = 20
  config.train.eval_every = 0
  train.train_and_evaluate(config, tmp_path / "run")
  checkpoint = tmp_path / "run" / "checkpoints" / "20"
  out = tmp_path / "export"

  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.export", f"--checkpoint={checkpoint}", f"--out={out}",
       "--export.variants=()", "--closed_loop", "--closed_loop_episodes=2"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-2000:]

  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["source"]["kind"] == "checkpoint" and manifest["source"]["step"] == 20
  assert manifest["source"]["params"] == "ema_params"
  assert manifest["run_config"]["model"]["size"] == "tiny"
  assert manifest["normalization"]["method"] == config.data.normalization
  closed = json.loads((out / "closed_loop.json").read_text())
  seen = closed["conditions"]["seen"]
  assert closed["passed"] and seen["same_outcome"] == seen["episodes"]


@pytest.mark.slow
def test_cli_refuses_an_existing_output_without_overwrite(tmp_path):
  (tmp_path / "x").mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.export", "--checkpoint=/nonexistent/1", f"--out={tmp_path / 'x'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode != 0 and last.startswith("error:") and "--overwrite" in last, proc.stderr[-500:]
