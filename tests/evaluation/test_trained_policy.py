"""The trained-policy path of the evaluation, end to end through the two entry points.

`experiments.train` with periodic closed-loop evaluation writes artifacts and scalars at each
evaluated step; `experiments.evaluate --all_checkpoints` restores every kept checkpoint from its
directory alone and writes per-checkpoint artifacts, TensorBoard scalars and the success curve.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Two training runs through the entry points (~40 s on 2 cores): `make test-slow` (and CI).
pytestmark = pytest.mark.slow

EVAL_FLAGS = ["--eval.episodes_per_family=2", "--eval.num_envs=6", "--eval.max_episode_steps=30",
              "--eval.videos_per_family=1"]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO,
                        timeout=900)


@pytest.fixture(scope="module")
def run_with_closed_loop(tiny_tabletop_dir, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("runs") / "closed_loop"
  result = run("experiments.train", "--config", "experiments/configs/tabletop.py:tiny", "--workdir", str(workdir),
               f"--config.data.datasets.tabletop.builder_dir={tiny_tabletop_dir}", "--config.train.num_steps=40",
               "--config.train.closed_loop_every=20", "--config.checkpoint.every=20",
               *(f.replace("--eval.", "--config.eval.") for f in EVAL_FLAGS))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_training_evaluates_in_closed_loop_at_the_configured_steps(run_with_closed_loop):
  workdir = run_with_closed_loop
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  logged = {r["step"]: r for r in records if "eval/seen/overall/success_rate" in r}
  assert sorted(logged) == [20, 40]
  for step in (20, 40):
    summary = json.loads((workdir / "eval" / f"step_{step}" / "summary.json").read_text())
    assert summary["step"] == step
    assert set(summary["conditions"]) == {"seen", "language_blind"}  # The tiny config's training conditions.
    for condition, cond in summary["conditions"].items():  # The logged scalars are this step's results.
      assert cond["overall"]["episodes"] == 2 * 3
      assert logged[step][f"eval/{condition}/overall/success_rate"] == cond["overall"]["success_rate"]
      for family, s in cond["families"].items():
        assert logged[step][f"eval/{condition}/{family}/success_rate"] == s["success_rate"]
  assert (workdir / "eval" / "success_curve.png").stat().st_size > 1000


def test_evaluate_all_checkpoints_writes_artifacts_tensorboard_and_the_curve(run_with_closed_loop, tmp_path):
  out = tmp_path / "eval"
  result = run("experiments.evaluate", "--workdir", str(run_with_closed_loop), "--all_checkpoints", "--out", str(out),
               *EVAL_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  kept = sorted(int(p.name) for p in (run_with_closed_loop / "checkpoints").iterdir() if p.name.isdigit())
  assert len(kept) >= 2
  for step in kept:
    summary = json.loads((out / str(step) / "summary.json").read_text())
    assert summary["step"] == step
    assert set(summary["conditions"]) == {"seen", "heldout_phrasing", "heldout_combo", "heldout_paraphrase",
                                          "language_blind"}
    table = (out / str(step) / "results.md").read_text()
    assert "| heldout_combo |" in table
    assert len(list((out / str(step) / "videos").glob("*.gif"))) == 2 * 3  # seen + language_blind.
    assert f"(step {step}):" in result.stdout
  history = json.loads((out / "history.json").read_text())
  assert [h["step"] for h in history] == kept
  assert (out / "success_curve.png").stat().st_size > 1000
  assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_refuses_a_run_without_checkpoints_by_name(tmp_path):
  (tmp_path / "empty").mkdir()
  result = run("experiments.evaluate", "--workdir", str(tmp_path / "empty"))
  assert result.returncode != 0
  assert f"no checkpoints in {tmp_path / 'empty' / 'checkpoints'}" in result.stderr
